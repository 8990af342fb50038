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
