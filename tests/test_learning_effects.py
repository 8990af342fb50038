"""The learning effects the notebooks claim, checked on the numbers they wrote to runs/ (held-out data).

`make test` runs the notebooks first (pytest collects notebooks/ before tests/), so the records are fresh.
Run alone, a missing record is produced by executing its notebook.
"""
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import helpers.tracking as tracking
from helpers.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]
WRITTEN_BY = {"01_pretrain": "01_pretraining_vs_sft", "01_sft": "01_pretraining_vs_sft"}


def record(name: str) -> dict:
    path = tracking.RUNS / f"{name}.json"
    if not path.exists():
        notebook = ROOT / "notebooks" / f"{WRITTEN_BY[name]}.ipynb"
        nb = nbformat.read(notebook, as_version=4)
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return json.loads(path.read_text())


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
    assert sft["model"] == profile.chat_model


def test_pretraining_loss_falls_on_held_out_stories(pretrain):
    before, after = pretrain["before"]["eval_loss"], pretrain["after"]["eval_loss"]
    assert before > 5.0, "a random model should start near ln(vocab size)"
    assert after < 1.2, f"held-out loss only reached {after:.2f}"
    assert after < 0.25 * before


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
