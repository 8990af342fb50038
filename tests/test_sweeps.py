"""Notebook 03's learning rates come from benchmarks/sweeps/03_{peft,approaches}_cpu.json (scripts/sweep_peft.py):
each file must belong to the notebook as it is now, and its choice must follow from its own dev numbers."""
import importlib.util
import json
from pathlib import Path

import pytest

from helpers import load_course_dataset
from helpers.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("sweep_peft", ROOT / "scripts" / "sweep_peft.py")
sweep_peft = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep_peft)


PARTS = {"peft": ("methods", sweep_peft.GRIDS), "approaches": ("approaches", sweep_peft.APPROACH_GRIDS)}


@pytest.fixture(scope="module", params=list(PARTS))
def part(request):
    return request.param


@pytest.fixture(scope="module")
def sweep(part):
    return json.loads((ROOT / "benchmarks" / "sweeps" / f"03_{part}_cpu.json").read_text())


def test_the_sweep_trained_what_the_notebook_trains(sweep, part):
    profile = PROFILES["cpu"]
    assert sweep["profile"] == "cpu" and sweep["model"] == profile.chat_model
    assert sweep["steps"] == profile.peft_steps and sweep["batch_size"] == profile.sft_batch_size
    cell, grids = PARTS[part]
    methods = sweep_peft.notebook_cell(profile, cell)  # the notebook's own cell
    assert list(sweep["learning_rates"]) == list(methods)
    assert sweep["methods"] == {name: getattr(config, "__name__", type(config).__name__)
                                for name, config in methods.items()}
    assert sweep["dev_examples"] == len(load_course_dataset("sft")["dev"])
    ran = {(r["method"], r["learning_rate"], r["seed"]) for r in sweep["runs"]}
    assert ran == {(m, lr, seed) for m, grid in grids.items() for lr in grid for seed in sweep_peft.SEEDS}
    assert not sweep["on_grid_edge"], "a learning rate chosen at the edge of its grid: widen the grid, --resume"


def test_the_chosen_learning_rates_follow_from_the_dev_losses(sweep):
    for run in sweep["runs"]:
        per_example = run["dev_loss_per_example"]
        assert len(per_example) == sweep["dev_examples"]
        assert sum(per_example) / len(per_example) == pytest.approx(run["dev_loss"], abs=1e-4)
    for method, chosen in sweep["learning_rates"].items():
        mean = {lr: sum(r["dev_loss"] for r in sweep["runs"] if r["method"] == method and r["learning_rate"] == lr)
                / len(sweep["seeds"]) for lr in sweep["grids"][method]}
        assert chosen == min(mean, key=mean.get), (method, mean)
    by_seed = {str(seed): sweep_peft.ranking({r["method"]: r["dev_loss"] for r in sweep["runs"] if r["seed"] == seed
                                              and r["learning_rate"] == sweep["learning_rates"][r["method"]]})
               for seed in sweep["seeds"]}
    assert sweep["ranking_by_seed"] == by_seed
    assert sweep["ranking_stable"] == (len({tuple(r) for r in by_seed.values()}) == 1)
