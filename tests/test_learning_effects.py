"""The learning effects the notebooks claim, checked on the numbers they wrote to runs/ (held-out data)."""
import json
from pathlib import Path

import pytest
import torch
from notebook_records import record

from helpers import stats
from helpers.profiles import select_profile

pytestmark = pytest.mark.notebooks  # reads the notebooks' run records (runs/*.json)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pretrain():
    return record("01_pretrain")


@pytest.fixture(scope="module")
def sft():
    return record("01_sft")


def test_records_say_what_ran(pretrain, sft, profile):
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


def test_qlora_trains_a_small_adapter_on_a_4bit_model(qlora, profile):
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


def test_peft_methods_ran_on_the_same_budget(peft_methods, profile):
    methods = peft_methods["methods"]
    assert list(methods) == ["LoRA", "DoRA", "IA3", "prompt tuning", "prefix tuning"]
    assert peft_methods["steps"] == profile.peft_steps
    params = {name: m["trainable params"] for name, m in methods.items()}
    # where the parameters sit decides how many there are
    assert params["prompt tuning"] < params["IA3"] < params["prefix tuning"] < params["LoRA"] < params["DoRA"]
    assert all(m["seconds"] > 0 and m["peak memory (MB)"] > 0 for m in methods.values())
    if profile.name == "cpu":  # issue 19: each method's learning rate chosen on the dev split, not set by hand
        sweep = json.loads((ROOT / "benchmarks" / "sweeps" / "03_peft_cpu.json").read_text())
        assert peft_methods["learning_rates_from"] == "dev sweep"
        assert peft_methods["learning_rates"] == sweep["learning_rates"]
        assert {name: m["learning rate"] for name, m in methods.items()} == sweep["learning_rates"]


def test_peft_table_and_claims_come_from_the_per_example_numbers(peft_methods):
    """The table's means and every claim's interval and verdict follow from the per-example values on record."""
    n = peft_methods["eval_prompts"]
    per_example = peft_methods["per_example"]
    for name, row in peft_methods["methods"].items():
        assert len(per_example[name]["loss"]) == len(per_example[name]["exact_match"]) == n
        assert sum(per_example[name]["loss"]) / n == pytest.approx(row["held-out loss"])
        assert sum(per_example[name]["exact_match"]) / n == pytest.approx(row["exact match"])
    assert len(peft_methods["claims"]) == 13
    for claim, result in peft_methods["claims"].items():
        name = claim.split(" learns the skill")[0].split(" is behind LoRA")[0]
        if "learns the skill" in claim:
            diff = torch.tensor(per_example[name]["exact_match"]) - torch.tensor(per_example["base model"]["exact_match"])
        elif "held-out loss" in claim:
            diff = torch.tensor(per_example[name]["loss"]) - torch.tensor(per_example["LoRA"]["loss"])
        else:
            diff = torch.tensor(per_example["LoRA"]["exact_match"]) - torch.tensor(per_example[name]["exact_match"])
        recomputed = stats.interval(diff)
        assert result["value"] == pytest.approx(recomputed["value"], abs=1e-9)
        assert result["ci95"] == pytest.approx(recomputed["ci95"], abs=1e-9)
        assert result["verdict"] == stats.verdict(recomputed["ci95"]) and result["n"] == n


def test_every_peft_method_learns_the_skill_on_held_out_people(peft_methods):
    """Issue 19: learning rates from the dev sweep, 10 steps, 32 test people. On the cpu profile every method's
    exact match rose from 0.00 to 0.72-1.00, the lowest interval bound 0.56: asserted with a margin. The notebook's
    first version of this run evaluated a deepcopy of a model TRL had patched, which ran the untouched base model:
    LoRA, DoRA and IA3 showed 0.00 after training; this test fails on that."""
    before, after, claims = peft_methods["before"], peft_methods["after"], peft_methods["claims"]
    assert before["exact_match"] <= 0.2, "the base model should lack the skill"
    for name in ("LoRA", "DoRA", "IA3"):
        assert after[name]["eval_loss"] < 0.3 * before["eval_loss"], (name, before, after[name])
        assert after[name]["exact_match"] >= 0.75, (name, after[name])
    for name in peft_methods["methods"]:
        result = claims[f"{name} learns the skill (exact match above the base model)"]
        assert result["verdict"] == "holds" and result["ci95"][0] >= 0.3, (name, result)


def test_soft_prompts_stay_behind_lora_in_the_same_budget(peft_methods):
    """With tuned learning rates the soft prompts came close (prefix tuning's held-out loss 0.036 against LoRA's
    0.015) but stayed behind on both measures: loss intervals 0.013 and 0.092 above zero, exact match 0.09 and
    above. Asserted on the loss, whose intervals have the wider margin."""
    claims = peft_methods["claims"]
    for name in ("prompt tuning", "prefix tuning"):
        result = claims[f"{name} is behind LoRA on held-out loss (loss - LoRA's > 0)"]
        assert result["verdict"] == "holds", (name, result)
        assert peft_methods["after"][name]["eval_loss"] > peft_methods["after"]["LoRA"]["eval_loss"]


@pytest.fixture(scope="module")
def approaches():
    return record("03_approaches")


def test_early_approaches_ran_on_the_peft_budget(approaches, peft_methods, profile):
    """Issue 19: full fine-tuning, the top blocks and a head on the frozen model get LoRA's task, data and steps,
    each its learning rate from the dev sweep; the LoRA row is notebook 03's LoRA run, not a second one."""
    rows = approaches["approaches"]
    assert list(rows) == ["full fine-tuning", "top 2 blocks", "head only", "LoRA"]
    assert approaches["steps"] == peft_methods["steps"] == profile.peft_steps
    assert rows["LoRA"] == peft_methods["methods"]["LoRA"]
    params = {name: row["trainable params"] for name, row in rows.items()}
    assert max(params["LoRA"], params["top 2 blocks"], params["head only"]) < params["full fine-tuning"]
    if profile.name == "cpu":  # (the toy models of the -sim profiles have other proportions)
        assert params["LoRA"] < params["top 2 blocks"] < params["head only"]
        # a head for generation is the vocabulary projection: about a fifth of SmolLM2-135M, not a small classifier
        assert 0.1 * params["full fine-tuning"] < params["head only"] < 0.3 * params["full fine-tuning"]
    # what was frozen stayed unchanged, and every trained tensor moved (no trap left a block without gradients)
    for name, moved in approaches["weights_moved"].items():
        assert moved["frozen tensors moved"] == 0, (name, moved)
        assert moved["trainable tensors moved"] == moved["trainable tensors"] > 0, (name, moved)
    if profile.name == "cpu":
        sweep = json.loads((ROOT / "benchmarks" / "sweeps" / "03_approaches_cpu.json").read_text())
        assert approaches["learning_rates_from"] == "dev sweep"
        assert approaches["learning_rates"] == sweep["learning_rates"]


def test_early_approaches_claims_come_from_the_per_paragraph_numbers(approaches):
    """Every forgetting and skill claim's interval and verdict follow from the per-example and per-paragraph values
    on record; the table's forgetting is the mean general-text loss after minus before."""
    general, per_example = approaches["general_per_paragraph"], approaches["per_example"]
    n_par, n = approaches["general_paragraphs"], approaches["eval_prompts"]
    assert n_par >= 30 and all(len(losses) == n_par for losses in general.values())
    assert set(general) == {"base model", "full fine-tuning", "top 2 blocks", "head only", "LoRA", "DoRA", "IA3",
                            "prompt tuning", "prefix tuning"}
    base = torch.tensor(general["base model"])
    for name, row in approaches["approaches"].items():
        assert row["forgetting"] == pytest.approx((torch.tensor(general[name]) - base).mean().item(), abs=1e-6)
    assert len(approaches["claims"]) == 17
    for claim, result in approaches["claims"].items():
        name = claim.split(" learns")[0].split(" is behind")[0].split(" forgets")[0]
        if "learns the skill" in claim:
            diff = torch.tensor(per_example[name]["exact_match"]) - torch.tensor(per_example["base model"]["exact_match"])
            size = n
        elif "behind LoRA" in claim:
            diff = torch.tensor(per_example["LoRA"]["exact_match"]) - torch.tensor(per_example[name]["exact_match"])
            size = n
        elif "more than LoRA" in claim:
            diff = torch.tensor(general[name]) - torch.tensor(general["LoRA"])
            size = n_par
        else:
            diff = torch.tensor(general[name]) - base
            size = n_par
        recomputed = stats.interval(diff)
        assert result["value"] == pytest.approx(recomputed["value"], abs=1e-9)
        assert result["ci95"] == pytest.approx(recomputed["ci95"], abs=1e-9)
        assert result["verdict"] == stats.verdict(recomputed["ci95"]) and result["n"] == size


def test_early_approaches_learn_and_what_they_forget(approaches):
    """Issue 19, measured on the cpu profile (10 steps, 32 test people, 32 general paragraphs): full fine-tuning
    and the top 2 blocks reached LoRA's skill (exact match 0.94 vs 0.97, within noise); the head alone learned
    little (0.12). The notes' claim that PEFT avoids forgetting failed: LoRA's general-text loss rose by 0.064
    [0.039, 0.090], full fine-tuning's by -0.002 [-0.010, 0.008]; prefix tuning's by 1.15. Asserted with margins on
    the intervals, on the cpu profile only (the toy -sim runs train 2 steps)."""
    if approaches["profile"] != "cpu":
        pytest.skip("thresholds measured on the cpu profile")
    claims, after = approaches["claims"], approaches["after"]
    for name in ("full fine-tuning", "top 2 blocks"):
        assert after[name]["exact_match"] >= 0.75, (name, after[name])
        assert claims[f"{name} learns the skill (exact match above the base model)"]["ci95"][0] >= 0.5
    head = claims["head only is behind LoRA on exact match (LoRA's - its > 0)"]
    assert head["verdict"] == "holds" and head["ci95"][0] >= 0.4, head
    # forgetting is real and positive for every adapter
    for name in ("LoRA", "DoRA", "IA3", "prompt tuning", "prefix tuning"):
        result = claims[f"{name} forgets (general-text loss after - before > 0)"]
        assert result["verdict"] == "holds", (name, result)
    # and full fine-tuning at its dev-chosen learning rate forgot less than LoRA: "PEFT avoids forgetting" fails here
    full = claims["full fine-tuning forgets more than LoRA (its forgetting - LoRA's > 0)"]
    assert full["verdict"] == "fails" and full["ci95"][1] <= -0.02, full
    assert abs(claims["full fine-tuning forgets (general-text loss after - before > 0)"]["value"]) < 0.03
    # the soft prompts sit in front of every input: they forget most
    prefix = claims["prefix tuning forgets (general-text loss after - before > 0)"]
    lora = claims["LoRA forgets (general-text loss after - before > 0)"]
    assert prefix["ci95"][0] > lora["ci95"][1], (prefix, lora)
