"""The preference-tuning effects notebooks 05-08 claim, checked on the numbers they wrote to runs/ (held-out data)."""
import os

import pytest
from notebook_records import record

from helpers.profiles import PROFILES


@pytest.fixture(scope="module")
def reward_model():
    return record("05_reward_model")


@pytest.fixture(scope="module")
def ppo():
    return record("05_ppo")


def test_reward_model_and_ppo_records_say_what_ran(reward_model, ppo):
    profile = PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
    assert reward_model["profile"] == ppo["profile"] == profile.name
    assert reward_model["model"] == ppo["model"] == profile.pref_model
    assert reward_model["steps"] == profile.rm_steps
    assert reward_model["pairs"] == profile.rm_steps * profile.rm_batch_size
    assert reward_model["eval_pairs"] == profile.pref_eval_pairs
    assert ppo["steps"] == profile.ppo_steps == len(ppo["reward_curve"]) == len(ppo["value_loss_curve"])
    assert ppo["eval_prompts"] == profile.ppo_eval_prompts and ppo["kl_coef"] == profile.ppo_kl_coef
    assert ppo["models_in_memory"] == ["policy (LoRA; adapter off = the reference)", "reward model",
                                      "value head (one linear layer)"] and ppo["weight_copies"] == 2


def test_reward_model_learns_the_held_out_preferences(reward_model):
    before, after = reward_model["before"], reward_model["after"]
    assert 0.2 <= before["accuracy"] <= 0.8, f"a random head should start near chance, not at {before['accuracy']}"
    assert after["accuracy"] >= 0.8, f"held-out reward model accuracy {after['accuracy']:.2f} < 0.8"
    assert after["margin"] > 1.0, f"held-out margin only {after['margin']:.2f}"


def test_reward_model_cannot_tell_a_wrong_fact(reward_model):
    # every training pair states the right fact twice, so the model never learned to check it (notebook 05, sec. 4)
    assert reward_model["fact_swap_pairs"] >= 10
    assert 0.2 <= reward_model["fact_swap_accuracy"] <= 0.8, reward_model["fact_swap_accuracy"]


def test_ppo_raises_the_held_out_reward(ppo):
    # Judged with room to finish (05's JUDGE_TOKENS) the starting model scores 0.72, not 0.18 as when 16 tokens cut
    # its sentences, so the rise measured on these 20 prompts is +0.41 (notebook 09: +1.56 [0.96, 2.15] on 80).
    before, after = ppo["before"]["reward"], ppo["after"]["reward"]
    assert after > before + 0.2, f"held-out reward-model score {before:.2f} -> {after:.2f}"


def test_ppo_reward_is_hacked_not_earned(ppo):
    # what notebook 05 shows and discusses: the reward rose but the facts it cannot see did not. On 20 prompts one
    # answer is 0.05: a change of one answer either way is noise (bfloat16 and float32 training differ by that much)
    assert ppo["after"]["correct fact"] <= ppo["before"]["correct fact"] + 0.05 + 1e-9, (ppo["before"], ppo["after"])
    # the gold judge (requested form AND right fact) sees what the proxy cannot: it must not have risen either
    assert ppo["after"]["gold"] <= ppo["before"]["gold"] + 0.05 + 1e-9, (ppo["before"], ppo["after"])
    # judged with a budget that lets the starting model's full sentences end (not cut before their fact)
    assert ppo["before"]["truncated"] <= 0.1 and ppo["after"]["truncated"] <= 0.1, (ppo["before"], ppo["after"])
    # the policy is paid the penalised reward: never above the score, below it where answers were cut off
    assert all(p <= r + 1e-6 for p, r in zip(ppo["penalised_reward_curve"], ppo["reward_curve"]))
    assert ppo["kl_curve"][0] < 0.05 < max(ppo["kl_curve"]), ppo["kl_curve"]


@pytest.fixture(scope="module")
def dpo():
    return record("06_dpo")


def test_dpo_record_says_what_ran(dpo):
    profile = PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
    assert dpo["profile"] == profile.name and dpo["model"] == profile.pref_model
    assert dpo["steps"] == profile.pref_steps and dpo["pairs"] == profile.pref_steps * profile.pref_batch_size
    assert dpo["eval_pairs"] == profile.pref_eval_pairs
    assert set(dpo["sweep"]) == {str(beta) for beta in profile.dpo_betas}


def test_dpo_starts_near_chance_on_held_out_pairs(dpo):
    # the task is worth learning only if the starting model does not already prefer the chosen answers
    assert 0.3 <= dpo["before"]["preference_accuracy"] <= 0.7, dpo["before"]


def test_dpo_learns_the_held_out_preferences(dpo):
    after = dpo["after"]
    assert after["reward_accuracy"] >= 0.8, f"held-out reward accuracy {after['reward_accuracy']:.2f} < 0.8"
    assert after["reward_margin"] > 0.5, f"held-out reward margin only rose to {after['reward_margin']:.2f}"
    assert after["preference_accuracy"] > dpo["before"]["preference_accuracy"] + 0.2


def test_dpo_margins_rise_along_the_training_run(dpo):
    for beta, run in dpo["sweep"].items():
        assert run["reward_margin"] > 0, f"beta {beta}: held-out margin {run['reward_margin']:.2f}"


@pytest.fixture(scope="module")
def orpo():
    return record("07_orpo")


def test_orpo_record_says_what_ran(orpo):
    profile = PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
    assert orpo["profile"] == profile.name and orpo["model"] == profile.pref_model
    assert orpo["steps"] == profile.orpo_steps and orpo["pairs"] == profile.orpo_steps * profile.pref_batch_size
    assert orpo["eval_pairs"] == profile.pref_eval_pairs and orpo["beta"] == profile.orpo_beta
    assert orpo["models_in_memory"] == ["policy (no reference)"]


def test_orpo_raises_the_held_out_log_odds(orpo):
    before, after = orpo["before"]["log_odds_ratio"], orpo["after"]["log_odds_ratio"]
    assert after > before + 1.0, f"held-out log odds ratio {before:.2f} -> {after:.2f}"
    assert orpo["after"]["preference_accuracy"] >= 0.8, orpo["after"]


def test_orpo_keeps_the_chosen_answers_likely(orpo):
    # the NLL term: unlike DPO, the chosen answers gain probability while the rejected ones lose it
    assert orpo["after"]["logp_chosen"] > orpo["before"]["logp_chosen"], orpo["after"]
    assert orpo["after"]["logp_rejected"] < orpo["before"]["logp_rejected"], orpo["after"]


def test_the_odds_ratio_term_adds_to_sft_alone(orpo):
    # beta=0 is plain SFT on the chosen answers: it makes the rejected answers likelier too
    assert orpo["after"]["log_odds_ratio"] > orpo["sft_only"]["log_odds_ratio"], (orpo["after"], orpo["sft_only"])
    assert orpo["sft_only"]["logp_rejected"] > orpo["after"]["logp_rejected"]


@pytest.fixture(scope="module")
def grpo():
    return record("08_grpo")


def test_grpo_record_says_what_ran(grpo):
    profile = PROFILES[os.environ.get("COURSE_PROFILE", "cpu")]
    assert grpo["profile"] == profile.name and grpo["model"] == profile.pref_model
    assert grpo["steps"] == profile.grpo_steps and grpo["num_generations"] == profile.grpo_num_generations
    assert grpo["prompts"] == profile.grpo_steps * profile.grpo_batch_size // profile.grpo_num_generations
    assert grpo["eval_prompts"] == profile.grpo_eval_prompts and len(grpo["reward_curve"]) == profile.grpo_steps


def test_grpo_raises_the_held_out_reward(grpo):
    before, after = grpo["before"], grpo["after"]
    assert after["reward"] > before["reward"] + 0.3, f"held-out reward {before['reward']:.2f} -> {after['reward']:.2f}"
    assert after["format"] > before["format"], (before, after)


def test_grpo_did_not_buy_the_format_with_wrong_answers(grpo):
    # a policy that games the format reward (e.g. "3.3.3.3") loses correctness; this run must not
    assert grpo["after"]["correctness"] >= 0.5, grpo["after"]


def test_grpo_kl_grows_from_zero_when_beta_is_set(grpo):
    if grpo["beta"]:
        assert grpo["kl_curve"][0] < 0.05 and max(grpo["kl_curve"]) > grpo["kl_curve"][0], grpo["kl_curve"]


def test_the_datasheet_names_the_form_the_starting_model_prefers(dpo):
    """Bug: the datasheet said the starting model prefers the short answer; notebook 06 measures the opposite."""
    from pathlib import Path

    before = dpo["before"]
    prefers_sentences = before["accuracy_when_sentence_asked"] > before["accuracy_when_value_asked"]
    sheet = (Path(__file__).resolve().parents[1] / "assets" / "preferences" / "DATASHEET.md").read_text()
    said = "prefers the full sentence" if prefers_sentences else "prefers the short answer"
    assert said in sheet, (before, said)
