"""Notebook 09: its table's cost columns equal the records notebooks 05-08 wrote (nothing retyped), the adapters it
reloads reproduce what their notebooks measured, and on the `cpu` profile every claim of its decision guide holds."""
import pytest
from notebook_records import record

from helpers.profiles import PROFILES

COSTS = ("trainable params", "steps", "training seconds", "peak memory (MB)", "models in memory")


@pytest.fixture(scope="module")
def comparison():
    return record("09_comparison")


@pytest.fixture(scope="module")
def sources():
    return {name: record(name) for name in ("05_reward_model", "05_ppo", "06_dpo", "07_orpo", "08_grpo")}


def test_cost_columns_equal_the_records(comparison, sources):
    rm, ppo, dpo, orpo, grpo = sources.values()
    expected = {  # method -> trainable params, steps, training seconds, peak memory, models in memory
        "SFT on chosen": (orpo["trainable_params"], orpo["steps"], orpo["sft_only_seconds"],
                          orpo["sft_only_peak_memory_mb"], len(orpo["models_in_memory"])),
        "DPO": (dpo["trainable_params"], dpo["steps"], dpo["seconds"], dpo["peak_memory_mb"],
                len(dpo["models_in_memory"])),
        "ORPO": (orpo["trainable_params"], orpo["steps"], orpo["seconds"], orpo["peak_memory_mb"],
                 len(orpo["models_in_memory"])),
        "PPO": (rm["trainable_params"] + ppo["trainable_params"], ppo["steps"], rm["seconds"] + ppo["seconds"],
                max(rm["peak_memory_mb"], ppo["peak_memory_mb"]), len(ppo["models_in_memory"])),
        "GRPO": (grpo["trainable_params"], grpo["steps"], grpo["seconds"], grpo["peak_memory_mb"],
                 len(grpo["models_in_memory"])),
    }
    table = comparison["table"]
    for method, values in expected.items():
        for column, value in zip(COSTS, values):
            assert table[method][column] == pytest.approx(value), (method, column)
        assert table[method]["seconds per step"] == pytest.approx(values[2] / values[1]), method
    assert all(table["start (SFT model)"][column] is None for column in COSTS)  # it did not train here
    assert comparison["needs"]["PPO"] == ", ".join(ppo["models_in_memory"])


def test_reloaded_adapters_and_judge_reproduce_their_notebooks(comparison, sources):
    table = comparison["table"]
    assert table["DPO"]["preference accuracy"] == pytest.approx(sources["06_dpo"]["after"]["preference_accuracy"],
                                                                abs=0.051)  # one pair of 20 may flip
    assert table["ORPO"]["preference accuracy"] == pytest.approx(
        sources["07_orpo"]["after"]["preference_accuracy"], abs=0.051)
    assert comparison["judge_check"]["accuracy"] == pytest.approx(sources["05_reward_model"]["after"]["accuracy"])
    assert comparison["judge_check"]["margin"] == pytest.approx(sources["05_reward_model"]["after"]["margin"],
                                                                abs=1e-3)


def test_one_prompt_set_and_the_generations_side_by_side(comparison):
    assert comparison["eval_prompts"] == PROFILES[comparison["profile"]].pref_eval_pairs
    methods = set(comparison["table"])
    assert methods == {"start (SFT model)", "SFT on chosen", "DPO", "ORPO", "PPO", "GRPO"}
    assert len(comparison["generations"]) == 6
    assert all(methods <= set(g) and g["fact"] in g["prompt"] for g in comparison["generations"])


def test_decision_guide_claims_hold_on_the_cpu_profile(comparison):
    if comparison["profile"] != "cpu":
        pytest.skip("the claims are checked on the cpu profile; on a GPU profile the notebook reports them")
    failing = [c["claim"] + " | " + c["numbers"] for c in comparison["claims"] if not c["holds"]]
    assert len(comparison["claims"]) == 6 and not failing, failing
    table = comparison["table"]
    start = table["start (SFT model)"]
    for method in ("SFT on chosen", "ORPO"):  # learning from the pairs' chosen answers improves on the start
        assert table[method]["win rate vs start"] >= 0.6, method
        assert table[method]["right fact"] > start["right fact"], method
