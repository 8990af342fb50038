"""Notebook 09: its table's cost columns equal the records notebooks 05-08 wrote (nothing retyped), the adapters it
reloads reproduce what their notebooks measured on the dev pairs, every quality value carries its interval over the
test prompts, and each claim of its decision guide is read from its intervals."""
import pytest
from notebook_records import record

from helpers import stats
from helpers.profiles import PROFILES

pytestmark = pytest.mark.notebooks  # reads the notebooks' run records (runs/*.json)

COSTS = ("trainable params", "steps", "training seconds", "peak memory (MB)", "models in memory")
QUALITY = ("reward-model score", "win rate vs start", "gold", "gold win rate vs start", "right fact",
           "preference accuracy", "mean words", "truncated")


@pytest.fixture(scope="module")
def comparison():
    return record("09_comparison")


@pytest.fixture(scope="module")
def sources():
    return {name: record(name) for name in ("05_reward_model", "05_ppo", "06_dpo", "06_kto", "07_orpo", "08_grpo",
                                            "08_grpo_rm", "08_rloo")}


def test_cost_columns_equal_the_records(comparison, sources):
    rm, ppo, dpo, kto, orpo, grpo, grpo_rm, rloo = sources.values()
    median_step = {"SFT on chosen": orpo["sft_only_median_step_seconds"], "DPO": dpo["median_step_seconds"],
                   "KTO": kto["median_step_seconds"],
                   "ORPO": orpo["median_step_seconds"], "PPO": ppo["median_step_seconds"],
                   "GRPO": grpo["median_step_seconds"], "GRPO (reward model)": grpo_rm["median_step_seconds"],
                   "RLOO (reward model)": rloo["median_step_seconds"]}
    # ^ the trainers' own step times, first steps left out
    expected = {  # method -> trainable params, steps, training seconds, peak memory, copies of the weights
        "SFT on chosen": (orpo["trainable_params"], orpo["steps"], orpo["sft_only_seconds"],
                          orpo["sft_only_peak_memory_mb"], orpo["weight_copies"]),
        "DPO": (dpo["trainable_params"], dpo["steps"], dpo["seconds"], dpo["peak_memory_mb"], dpo["weight_copies"]),
        "KTO": (kto["trainable_params"], kto["steps"], kto["seconds"], kto["peak_memory_mb"], kto["weight_copies"]),
        "ORPO": (orpo["trainable_params"], orpo["steps"], orpo["seconds"], orpo["peak_memory_mb"],
                 orpo["weight_copies"]),
        # PPO's own run; its reward model's training is shown apart (reward_model_cost)
        "PPO": (ppo["trainable_params"], ppo["steps"], ppo["seconds"], ppo["peak_memory_mb"], ppo["weight_copies"]),
        "GRPO": (grpo["trainable_params"], grpo["steps"], grpo["seconds"], grpo["peak_memory_mb"],
                 grpo["weight_copies"]),
        "GRPO (reward model)": (grpo_rm["trainable_params"], grpo_rm["steps"], grpo_rm["seconds"],
                                grpo_rm["peak_memory_mb"], grpo_rm["weight_copies"]),
        "RLOO (reward model)": (rloo["trainable_params"], rloo["steps"], rloo["seconds"], rloo["peak_memory_mb"],
                                rloo["weight_copies"]),
    }
    table = comparison["table"]
    for method, values in expected.items():
        for column, value in zip(COSTS, values):
            assert table[method][column] == pytest.approx(value), (method, column)
        assert table[method]["seconds per step"] == pytest.approx(median_step[method]), method
        # a median step of a few-step run is not its average: saves and the first step are left out
        assert 0 < median_step[method] <= values[2] / values[1] * 1.5, (method, median_step[method])
    assert all(table["start (SFT model)"][column] is None for column in COSTS)  # it did not train here
    assert comparison["reward_model_cost"]["training seconds"] == pytest.approx(rm["seconds"])
    assert comparison["needs"]["PPO"] == ", ".join(ppo["models_in_memory"])
    # the adapter-off reference is counted the same way everywhere: no method holds a copy for it
    assert [table[m]["models in memory"] for m in ("DPO", "KTO", "ORPO", "GRPO", "PPO", "GRPO (reward model)",
                                                   "RLOO (reward model)")] == [1, 1, 1, 1, 2, 2, 2]


def test_reloaded_adapters_and_judge_reproduce_their_notebooks(comparison, sources):
    for row, recorded in comparison["reproduced"].items():
        one_pair = 1 / sources["06_dpo"]["eval_pairs"] + 1e-6  # one dev pair may flip (GPU kernels, 16-bit)
        assert abs(recorded["difference"]) <= one_pair, (row, recorded)
    assert comparison["judge_check"]["accuracy"] == pytest.approx(sources["05_reward_model"]["after"]["accuracy"])
    assert comparison["judge_check"]["margin"] == pytest.approx(sources["05_reward_model"]["after"]["margin"],
                                                                abs=1e-3)


def test_the_comparison_is_reported_on_test_prompts_no_notebook_tuned_on(comparison):
    profile = PROFILES[comparison["profile"]]
    assert comparison["dev_pairs"] == max(profile.pref_eval_pairs, profile.ppo_eval_prompts)
    assert comparison["eval_prompts"] == 100 - comparison["dev_pairs"] >= 40  # the rest of the 100 held-out pairs
    methods = [row["method"] for row in comparison["rows"]]
    assert methods == ["start (SFT model)", "SFT on chosen", "DPO", "KTO", "ORPO", "PPO", "GRPO", "GRPO (reward model)",
                       "RLOO (reward model)"]
    assert len(comparison["generations"]) == 6
    assert all(set(methods) <= set(g) and g["fact"] in g["prompt"] for g in comparison["generations"])


def test_every_quality_value_has_its_interval_and_n(comparison):
    for row in comparison["rows"]:
        assert set(row["metrics"]) == set(QUALITY), row["method"]
        for name, m in row["metrics"].items():
            low, high = m["ci95"]
            assert m["n"] == comparison["eval_prompts"], (row["method"], name)
            assert low <= m["value"] + 1e-9 and m["value"] <= high + 1e-9, (row["method"], name, m)
            assert comparison["table"][row["method"]][name] == pytest.approx(m["value"])
        for name in ("gold", "right fact", "preference accuracy", "truncated", "win rate vs start"):
            assert 0 <= row["metrics"][name]["ci95"][0] <= row["metrics"][name]["ci95"][1] <= 1
    # the token budget lets the most verbose sane policy (the starting model) finish: no fact is cut off
    rows = {row["method"]: row for row in comparison["rows"]}
    assert rows["start (SFT model)"]["metrics"]["truncated"]["value"] <= 0.1, rows["start (SFT model)"]["metrics"]


def test_each_claim_reads_its_state_from_the_intervals(comparison):
    claims, d = comparison["claims"], comparison["paired"]
    assert len(claims) == 8 and all(c["state"] in ("holds", "within noise", "fails") for c in claims)
    v = stats.verdict
    # start minus PPO on the same prompts: the negated difference, so "fell" reads as "holds"
    assert d["ppo_gold_fall"]["value"] == pytest.approx(-d["ppo_gold"]["value"])
    assert d["ppo_gold_fall"]["ci95"] == pytest.approx([-d["ppo_gold"]["ci95"][1], -d["ppo_gold"]["ci95"][0]])
    assert d["rloo_fact_fall"]["value"] == pytest.approx(-d["rloo_fact"]["value"])
    expected = {0: stats.combine(v(d["dpo_pref"]["ci95"]), v(d["orpo_pref"]["ci95"])),
                2: v(d["orpo_sft_pref"]["ci95"]),
                3: stats.combine(v(d["ppo_proxy"]["ci95"]), v(d["ppo_gold_fall"]["ci95"])),
                4: stats.combine(v(d["reward_fact"]["ci95"]), v(d["reward_vs_rest"]["ci95"])),
                6: v(d["kto_pref"]["ci95"]),
                7: v(d["rloo_fact_fall"]["ci95"])}
    for i, state in expected.items():
        assert claims[i]["state"] == state, (claims[i], state)
    for diff in d.values():
        assert diff["n"] == comparison["eval_prompts"] and diff["ci95"][0] <= diff["value"] <= diff["ci95"][1]


def rows_mean_words(comparison, method):
    return next(row["metrics"]["mean words"]["value"] for row in comparison["rows"] if row["method"] == method)


def test_on_the_cpu_profile_the_claims_with_clear_intervals_hold(comparison):
    """What this run's intervals support, with a margin: on 80 test prompts the paired differences behind claims 1,
    3, 4 and 5 clear zero by at least 0.1 (the lower bounds measured: 0.15, 0.11, 0.23, and for 5 0.60 for the
    reward's effect on the facts and 0.36 for its share against the rest's), and the timings behind 2 and 6 differ by a factor of 1.5 or more. The gold judge
    sees PPO's hack: the proxy rose, gold fell; notebook 08's control (GRPO paid by the reward model) loses the facts
    a checker-paid GRPO keeps."""
    if comparison["profile"] != "cpu":
        pytest.skip("checked on the cpu profile; on a GPU profile the notebook reports the states")
    states = [c["state"] for c in comparison["claims"]]
    assert states[:6] == ["holds"] * 6 and states[7] == "holds", comparison["claims"]
    d = comparison["paired"]
    # claim 7 (KTO over the start) is within noise: +0.04 [-0.16, +0.23]. What the intervals support: KTO, trained on
    # DPO's pairs taken apart, is behind DPO (-0.25 [-0.41, -0.09]) and answers with one word or so (measured 1.0
    # words on average, the start 13)
    assert d["kto_dpo_pref"]["ci95"][1] < 0, d["kto_dpo_pref"]
    assert rows_mean_words(comparison, "KTO") < 3 < rows_mean_words(comparison, "start (SFT model)")
    assert d["ppo_proxy"]["ci95"][0] > 0.3 and d["ppo_gold"]["ci95"][1] < -0.1, (d["ppo_proxy"], d["ppo_gold"])
    assert d["grpo_ppo_fact"]["ci95"][0] > 0.5 and d["grpo_ppo_fact"]["p_mcnemar"] < 1e-3
    assert d["reward_fact"]["ci95"][0] > 0.4 and d["reward_fact"]["p_mcnemar"] < 1e-6, d["reward_fact"]
    assert d["reward_vs_rest"]["ci95"][0] > 0.1, d["reward_vs_rest"]  # measured: +0.54 [0.36, 0.71]
    # claim 8: RLOO paid by the reward model loses the facts, start minus RLOO +0.71 [0.61, 0.81] (an AMD EPYC); its
    # gain in the proxy's score on these longer test answers, +0.80 [-0.02, +1.60], is within noise: not asserted
    assert d["rloo_fact_fall"]["ci95"][0] > 0.4, d["rloo_fact_fall"]
    rows = {row["method"]: row["metrics"] for row in comparison["rows"]}
    for method in ("SFT on chosen", "ORPO"):  # learning from the pairs' chosen answers beats the start by gold
        assert rows[method]["gold win rate vs start"]["ci95"][0] > 0.6, (method, rows[method])
