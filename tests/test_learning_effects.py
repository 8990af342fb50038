"""The learning effects the notebooks claim, checked on the numbers they wrote to runs/ (held-out data)."""
import os

import pytest
from notebook_records import record

from helpers.profiles import PROFILES, select_profile


@pytest.fixture(scope="module")
def pretrain():
    return record("01_pretrain")


@pytest.fixture(scope="module")
def sft():
    return record("01_sft")


def test_records_say_what_ran(pretrain, sft):
    profile = PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
    for run, steps in ((pretrain, profile.pretrain_steps), (sft, profile.sft_steps)):
        assert run["profile"] == profile.name
        assert run["steps"] == steps
        assert run["seconds"] > 0 and run["peak_memory_mb"] > 0
        # the precision the profile chose on this machine (measured, or COURSE_CPU_PRECISION), and its roofline
        assert run["precision"] == select_profile().dtype_name
        assert run["flops"] > 0 and 0 < run["peak_share"] <= 1, run
    assert sft["model"] == profile.chat_model


def test_pretraining_loss_falls_on_held_out_stories(pretrain):
    before, after = pretrain["before"]["eval_loss"], pretrain["after"]["eval_loss"]
    assert before > 5.0, "a random model should start near ln(vocab size)"
    assert after < 1.2, f"held-out loss only reached {after:.2f}"
    assert after < 0.25 * before


def test_pretraining_learns_where_a_story_ends(pretrain):
    """Issue 19: the tiny tokenizer's pad token was <|endoftext|>, so the collator masked every story separator and
    the model never learned to end a story (p(end) near 0). With its own pad token the separators are targets."""
    end = pretrain["story_end_probability"]
    assert end["n"] >= 20 and end["ci95"][0] > 0.5, end


def test_pretraining_training_loss_falls_along_the_run(pretrain):
    losses = [h["loss"] for h in pretrain["log_history"] if "loss" in h]
    assert len(losses) >= 5
    assert losses[-1] < 0.3 * losses[0]


def test_sft_teaches_the_skill_on_held_out_people(sft):
    before, after = sft["before"], sft["after"]
    assert before["exact_match"] <= 0.2, "the base model should lack the skill"
    assert after["exact_match"] >= 0.7, f"exact match after SFT: {after['exact_match']:.2f}"
    assert after["exact_match"] - before["exact_match"] >= 0.5
    assert after["field_accuracy"] >= 0.85
    assert after["valid_json"] >= 0.9
    assert sft["eval_prompts"] >= 32


@pytest.fixture(scope="module")
def qlora():
    return record("02_qlora")


@pytest.fixture(scope="module")
def peft_methods():
    return record("03_peft")


def test_qlora_trains_a_small_adapter_on_a_4bit_model(qlora):
    profile = PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
    assert qlora["profile"] == profile.name and qlora["model"] == profile.qlora_model
    assert qlora["steps"] == profile.qlora_steps
    assert 0 < qlora["trainable_params"] < 0.05 * qlora["all_params"]
    footprint = list(qlora["memory_footprint_mb"].values())  # 32, 16, 8, 4 bits
    assert footprint == sorted(footprint, reverse=True) and footprint[-1] < 0.4 * footprint[0]


def test_qlora_loss_falls(qlora):
    losses = [h["loss"] for h in qlora["log_history"] if "loss" in h]
    assert len(losses) >= 4
    assert losses[-1] < 0.3 * losses[0], f"training loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_qlora_teaches_the_skill_on_held_out_people(qlora):
    before, after = qlora["before"], qlora["after"]
    assert before["exact_match"] <= 0.2, "the 4-bit base model should lack the skill"
    assert after["exact_match"] >= 0.7, f"exact match after QLoRA: {after['exact_match']:.2f}"
    assert after["field_accuracy"] >= 0.85 and after["valid_json"] >= 0.9
    assert qlora["eval_prompts"] >= 32


def test_merging_into_the_4bit_base_rounds_the_skill_away(qlora):
    """Issue 19: notebook 02 inferred this from one layer; it now measures the merged model on the task. The LoRA
    update is smaller than half the NF4 gap of its block almost everywhere, so re-quantizing drops it: on the cpu
    profile 30 of 32 held-out records right with the adapter, 0 of 32 after merging into the 4-bit base (McNemar
    p < 1e-8); asserted with a wide margin, and on larger models (GPU profiles) only that something is lost."""
    merged, after = qlora["merged_into_4bit"], qlora["after"]
    assert merged["exact_match"] < after["exact_match"], (merged, after)
    if qlora["profile"] == "cpu":
        assert merged["exact_match"] <= after["exact_match"] - 0.5, (merged, after)
        assert qlora["merge_into_4bit_kept_share"] < 0.2


def test_peft_methods_ran_on_the_same_budget(peft_methods):
    profile = PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
    methods = peft_methods["methods"]
    assert list(methods) == ["LoRA", "DoRA", "IA3", "prompt tuning", "prefix tuning"]
    assert peft_methods["steps"] == profile.peft_steps
    params = {name: m["trainable params"] for name, m in methods.items()}
    # where the parameters sit decides how many there are
    assert params["prompt tuning"] < params["IA3"] < params["prefix tuning"] < params["LoRA"] < params["DoRA"]
    assert all(m["seconds"] > 0 and m["peak memory (MB)"] > 0 for m in methods.values())


def test_weight_and_activation_methods_learn_on_held_out_people(peft_methods):
    base_loss = peft_methods["before"]["eval_loss"]
    after = peft_methods["after"]
    for name in ("LoRA", "DoRA", "IA3"):
        assert after[name]["eval_loss"] < 0.3 * base_loss, f"{name}: {base_loss:.3f} -> {after[name]['eval_loss']:.3f}"
        assert after[name]["eval_token_accuracy"] >= 0.95
    # the soft-prompt methods learn more slowly: they get the same budget, and the notebook shows the gap
    for name in ("prompt tuning", "prefix tuning"):
        assert after[name]["eval_loss"] > after["LoRA"]["eval_loss"]
