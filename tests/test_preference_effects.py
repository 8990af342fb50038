"""The preference-tuning effects notebooks 05-08 claim, checked on the numbers they wrote to runs/ (held-out data)."""
import os

import pytest
from notebook_records import record

from helpers.profiles import PROFILES


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
