"""The preference-tuning effects notebooks 05-08 claim, checked on the numbers they wrote to runs/ (held-out data)."""

import math

import pytest
import torch
import helpers
from notebook_records import record


pytestmark = pytest.mark.notebooks  # reads the notebooks' run records (runs/*.json)


@pytest.fixture(scope="module")
def reward_model():
    return record("05_reward_model")


@pytest.fixture(scope="module")
def ppo():
    return record("05_ppo")


def test_reward_model_and_ppo_records_say_what_ran(reward_model, ppo, profile):
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


def test_ppo_raises_the_reward_it_is_paid(ppo):
    # Judged with room to finish (05's JUDGE_TOKENS) the starting model scores 0.72, not 0.18 as when 16 tokens cut
    # its sentences, so on these 20 held-out prompts the rise is +0.41 [-0.74, 1.66]: within noise, which is what
    # the notebook says (notebook 09 measures +1.56 [0.96, 2.15] on 80 test prompts, tests/test_comparison.py).
    # What holds here: the samples' reward rose along the run, and the held-out interval leaves room for a rise.
    curve = ppo["reward_curve"]
    assert sum(curve[-3:]) / 3 > sum(curve[:3]) / 3 + 0.3, curve
    change = ppo["intervals"]["reward"]
    assert change["change"]["value"] > 0 and change["direction"] != "fell", change


def test_ppo_reward_is_hacked_not_earned(ppo):
    # what notebook 05 shows and discusses: the facts the reward model cannot see fell, and so did the gold judge
    # (requested form AND right fact). Measured on 20 prompts: -0.80 [-0.95, -0.60] and -0.50 [-0.70, -0.30]; the
    # upper bounds must stay below zero by a margin
    for metric in ("correct fact", "gold"):
        change = ppo["intervals"][metric]
        assert change["direction"] == "fell" and change["change"]["ci95"][1] < -0.15, (metric, change)
    # judged with a budget that lets the starting model's full sentences end (not cut before their fact)
    assert ppo["before"]["truncated"] <= 0.1 and ppo["after"]["truncated"] <= 0.1, (ppo["before"], ppo["after"])
    # the policy is paid the penalised reward: never above the score, below it where answers were cut off
    assert all(p <= r + 1e-6 for p, r in zip(ppo["penalised_reward_curve"], ppo["reward_curve"]))
    assert ppo["kl_curve"][0] < 0.05 < max(ppo["kl_curve"]), ppo["kl_curve"]


@pytest.fixture(scope="module")
def overoptimisation():
    return record("05_overoptimisation")


def test_overoptimisation_points_put_proxy_and_gold_against_kl(overoptimisation, ppo, profile):
    """Issue 21: per point kl, proxy and gold; one point per PPO step (its training samples, the same numbers as
    05_ppo's curves), one per best-of-n (the analytic KL), and PPO's end on the held-out prompts."""
    run, points = overoptimisation, overoptimisation["points"]
    assert run["profile"] == profile.name and run["eval_prompts"] == profile.ppo_eval_prompts
    assert run["max_new_tokens"] == profile.ppo_max_new_tokens
    assert all({"method", "kl", "proxy", "gold"} <= set(p) and 0 <= p["gold"] <= 1 for p in points), points
    steps = [p for p in points if p["method"] == "ppo"]
    assert [p["step"] for p in steps] == list(range(profile.ppo_steps))
    assert [p["kl"] for p in steps] == pytest.approx(ppo["kl_curve"])
    assert [p["proxy"] for p in steps] == pytest.approx(ppo["reward_curve"])
    best_of = [p for p in points if p["method"] == "best_of_n"]
    ns = [p["n"] for p in best_of]
    assert ns[0] == 1 and ns[-1] == run["best_of"] and ns == sorted(ns), ns
    assert [p["kl"] for p in best_of] == pytest.approx([math.log(n) - (n - 1) / n for n in ns])
    assert [p["gold"] for p in best_of] == pytest.approx([run["best_of_n"][str(n)]["gold"]["value"] for n in ns])
    (end,) = [p for p in points if p["method"] == "ppo_final"]
    assert end["proxy"] == pytest.approx(run["after"]["proxy"]) and end["gold"] == pytest.approx(run["after"]["gold"])
    assert run["before"]["kl"] == 0 and run["before"]["gold"] == pytest.approx(best_of[0]["gold"])


def test_best_of_n_buys_proxy_and_the_gold_judge_does_not_fall(overoptimisation):
    """Keeping the highest-scored of n samples raises the proxy (paired over the held-out prompts); at best-of-n's
    small KL the gold judge does not fall: the reward model's ranking agrees with it on form (notebook 05, sec. 10).
    Measured on 20 prompts (cpu): proxy +1.46 [1.14, 1.83] at n = 8, gold +0.13 [0.03, 0.26]."""
    claims = overoptimisation["claims"]
    proxy, gold = claims["best-of-n minus sampler, proxy"], claims["best-of-n minus sampler, gold"]
    assert proxy["n"] == overoptimisation["eval_prompts"] and proxy["ci95"][0] > 0.3, proxy
    assert gold["ci95"][1] > 0, gold


@pytest.fixture(scope="module")
def dpo():
    return record("06_dpo")


def test_dpo_record_says_what_ran(dpo, profile):
    assert dpo["profile"] == profile.name and dpo["model"] == profile.pref_model
    assert dpo["steps"] == profile.pref_steps and dpo["pairs"] == profile.pref_steps * profile.pref_batch_size
    assert dpo["eval_pairs"] == profile.pref_eval_pairs
    assert set(dpo["sweep"]) == {str(beta) for beta in profile.dpo_betas}


def test_dpo_starts_near_chance_on_held_out_pairs(dpo):
    # the task is worth learning only if the starting model does not already prefer the chosen answers
    assert 0.3 <= dpo["before"]["preference_accuracy"] <= 0.7, dpo["before"]


def test_dpo_learns_the_held_out_preferences(dpo):
    after, change = dpo["after"], {metric: result["change"] for metric, result in dpo["intervals"].items()}
    assert after["reward_accuracy"] >= 0.8, f"held-out reward accuracy {after['reward_accuracy']:.2f} < 0.8"
    # paired over the 20 dev pairs (measured: reward accuracy +0.45 [0.35, 0.50], margin +5.6 [3.9, 7.2])
    assert change["reward_accuracy"]["ci95"][0] > 0.2 and change["reward_margin"]["ci95"][0] > 1.0, change
    # preference accuracy +0.30 [0.05, 0.55]: it rose, narrowly on 20 pairs (one pair is 0.05), so here only "not
    # fallen, up by 0.15 or more"; on notebook 09's 80 test pairs the lower bound clears 0.1 (test_comparison.py)
    assert dpo["intervals"]["preference_accuracy"]["direction"] != "fell", change["preference_accuracy"]
    assert change["preference_accuracy"]["value"] >= 0.15, change["preference_accuracy"]


def test_dpo_margins_rise_along_the_training_run(dpo):
    for beta, run in dpo["sweep"].items():
        assert run["reward_margin"] > 0, f"beta {beta}: held-out margin {run['reward_margin']:.2f}"


@pytest.fixture(scope="module")
def kto():
    return record("06_kto")


def test_kto_record_says_what_ran(kto, dpo, profile):
    assert kto["profile"] == profile.name and kto["model"] == profile.pref_model and kto["steps"] == profile.pref_steps
    # the main DPO run's pairs, taken apart: one desirable and one undesirable answer each
    assert kto["pairs"] == dpo["pairs"] and kto["answers"] == 2 * dpo["pairs"] and kto["beta"] == dpo["beta"]
    assert kto["eval_pairs"] == dpo["eval_pairs"] and kto["before"] == dpo["before"]  # the same held-out pairs
    assert kto["models_in_memory"] == dpo["models_in_memory"] and kto["weight_copies"] == 1


def test_ktos_loss_in_the_notebook_equals_trls(kto, profile):
    check = kto["loss_check"]
    tolerance = 1e-3 if profile.weights_dtype == torch.float32 else 3e-2  # 16-bit: the notebook's own tolerances
    assert check["ours"] == pytest.approx(check["trl"], rel=tolerance, abs=tolerance / 10), check
    # z0 was 0 on the notebook's batch in the cpu run (clamped): tests/test_losses.py checks its use with z0 > 0.1
    assert check["z0"] >= 0, check


def test_kto_falls_behind_dpo_on_the_same_answers_unpaired(kto, profile):
    """Measured on the cpu profile over the 20 dev pairs: KTO learned "just the value" whatever was asked (accuracy
    1.00 where the value was asked, 0.00 where a sentence was) and its preference accuracy is behind DPO's, paired,
    by -0.50 [-0.80, -0.15]; its own change is within noise (-0.20 [-0.60, 0.20]). Asserted: the gap to DPO (upper
    bound below 0, a margin of 0.15) and the collapse onto one form."""
    if profile.name != "cpu":
        pytest.skip("measured on the cpu profile; a GPU profile's notebook reports its own intervals")
    assert kto["vs_dpo"]["preference_accuracy"]["ci95"][1] < 0, kto["vs_dpo"]
    after = kto["after"]
    assert after["accuracy_when_value_asked"] - after["accuracy_when_sentence_asked"] >= 0.5, after


@pytest.fixture(scope="module")
def other_losses():
    return record("06_dpo_losses")


VARIANTS = {"DPO + SFT": "DPOTrainer", "IPO": "DPOTrainer", "hinge": "DPOTrainer", "SimPO": "CPOTrainer"}
JUDGED = {"preference_accuracy", "gold", "right_fact", "mean_words", "truncated"}


def test_other_losses_record_says_what_ran(other_losses, dpo, profile):
    run = other_losses
    assert run["profile"] == profile.name and run["model"] == profile.pref_model and run["steps"] == profile.pref_steps
    assert run["pairs"] == dpo["pairs"] and run["eval_pairs"] == dpo["eval_pairs"]  # the main run's pairs, held-out set
    assert run["shared_settings"]["max_steps"] == profile.pref_steps
    assert {name: v["trainer"] for name, v in run["variants"].items()} == VARIANTS
    assert all(v["seconds"] > 0 for v in run["variants"].values())
    assert run["dpo"] == f"DPO (beta {dpo['beta']})"
    assert set(run["judged"]) == {"start", run["dpo"], *VARIANTS} and set(run["vs_dpo"]) == set(VARIANTS)


def test_other_losses_are_judged_with_paired_intervals(other_losses, dpo):
    """Every policy on the same held-out prompts (n = eval_pairs); each variant against DPO paired, prompt by prompt.
    The start and the main DPO run, scored here by helpers.generate_and_score, rank the pairs as 06_dpo.json says
    helpers.preference_logps did: two code paths, one answer."""
    run, n = other_losses, other_losses["eval_pairs"]
    for name, metrics in run["judged"].items():
        assert set(metrics) == JUDGED, name
        for metric, result in metrics.items():
            low, high = result["ci95"]
            assert result["n"] == n and low - 1e-9 <= result["value"] <= high + 1e-9, (name, metric)
            assert result["value"] == pytest.approx(run["after"][name][metric], abs=1e-6), (name, metric)
    for name, metrics in run["vs_dpo"].items():
        for metric, result in metrics.items():
            expected = run["judged"][name][metric]["value"] - run["judged"][run["dpo"]][metric]["value"]
            assert result["n"] == n and result["value"] == pytest.approx(expected, abs=1e-6), (name, metric)
    for name, metrics in run["per_prompt"].items():  # the yes/no verdicts behind the means, prompt by prompt
        for metric, values in metrics.items():
            assert len(values) == n and set(values) <= {0, 1}, (name, metric)
            assert sum(values) / n == pytest.approx(run["judged"][name][metric]["value"], abs=1e-6), (name, metric)
    for name, metrics in run["mcnemar_p"].items():  # the exact test, recomputed from the per-prompt values
        for metric, p in metrics.items():
            ours, theirs = run["per_prompt"][name][metric], run["per_prompt"][run["dpo"]][metric]
            assert p == pytest.approx(helpers.stats.mcnemar_exact(ours, theirs)), (name, metric)
            word = "within noise" if p >= 0.05 else "higher" if sum(ours) > sum(theirs) else "lower"
            assert run["reads"][name][metric] == word, (name, metric)
    assert run["judged"]["start"]["preference_accuracy"]["value"] == pytest.approx(
        dpo["before"]["preference_accuracy"], abs=1e-6)
    assert run["judged"][run["dpo"]]["preference_accuracy"]["value"] == pytest.approx(
        dpo["after"]["preference_accuracy"], abs=1e-6)


def test_an_sft_term_shortens_dpos_answers_and_simpo_collapses(other_losses, profile):
    """Measured on the cpu profile (20 held-out prompts): DPO + SFT's greedy answers are about 14 words shorter than
    DPO's ([-18.0, -10.4]) and none is cut off (DPO: 0.25); SimPO (no reference model) answers in 1.45 words [1.05,
    2.05]. Its gold rate, 0.80 against 0.40, is not asserted: 11 of the 14 disagreeing prompts, exact McNemar
    p = 0.057, which the notebook calls suggestive. Asserted: the length gap with a margin of 5 words, no cut-off
    answers with a margin of 2 prompts, SimPO's collapse with a margin of 2 words."""
    if profile.name != "cpu":
        pytest.skip("measured on the cpu profile; a GPU profile's notebook reports its own table")
    vs_dpo, judged = other_losses["vs_dpo"]["DPO + SFT"], other_losses["judged"]
    assert vs_dpo["mean_words"]["ci95"][1] < -5 and other_losses["reads"]["DPO + SFT"]["mean_words"] == "lower"
    assert judged["DPO + SFT"]["truncated"]["value"] <= 0.1, judged["DPO + SFT"]["truncated"]
    assert judged["SimPO"]["mean_words"]["ci95"][1] < 4, judged["SimPO"]


@pytest.fixture(scope="module")
def iterative():
    return record("06_iterative_dpo")


LABELLERS = ("gold rule", "reward model")
ROUND_JUDGED = JUDGED | {"proxy"}


def test_iterative_dpo_record_says_what_ran(iterative, dpo, other_losses, profile):
    """Two rounds per labeller, each on pairs labelled from the policy's own samples, with the offline run's beta and
    (cpu) its number of pairs; the start and the offline run are the policies section 9 judged."""
    run, round_steps = iterative, profile.dpo_round_steps or profile.pref_steps // 2
    assert run["profile"] == profile.name and run["model"] == profile.pref_model and run["beta"] == dpo["beta"]
    assert run["offline_pairs"] == 2 * round_steps * profile.pref_batch_size and run["eval_pairs"] == dpo["eval_pairs"]
    assert run["round_steps"] == round_steps and set(run["rounds"]) == set(LABELLERS)
    reused = run["offline_pairs"] == dpo["pairs"]  # else the notebook trained an offline run on as many pairs
    assert (run["offline"] == f"offline {other_losses['dpo']}") == reused
    for labeller, rounds in run["rounds"].items():
        assert [r["round"] for r in rounds] == [1, 2], labeller
        for r in rounds:
            assert r["prompts"] == run["round_prompts"], (labeller, r["round"])
            assert r["answers_sampled"] == r["prompts"] * run["samples_per_prompt"], (labeller, r["round"])
            assert 0 <= r["pairs"] <= round_steps * profile.pref_batch_size, (labeller, r["round"])
            assert r["gold_agrees"] + r["gold_ties"] + r["gold_disagrees"] == r["pairs"], (labeller, r["round"])
            if r["pairs"]:
                assert r["steps"] == math.ceil(r["pairs"] / profile.pref_batch_size) and r["seconds"] > 0
            assert set(r["judged"]) == ROUND_JUDGED, (labeller, r["round"])
    # the gold rule's pairs are in its own order; both labellers labelled the same round-1 samples (one seed)
    assert all(r["gold_agrees"] == r["pairs"] for r in run["rounds"]["gold rule"])
    first = [run["rounds"][labeller][0] for labeller in LABELLERS]
    assert first[0]["prompts"] == first[1]["prompts"] and first[0]["sampled_gold"] == first[1]["sampled_gold"]
    for name, section9 in (("start", "start"), (run["offline"], other_losses["dpo"]))[:2 if reused else 1]:
        for metric in JUDGED:
            assert run["judged"][name][metric]["value"] == pytest.approx(
                other_losses["judged"][section9][metric]["value"], abs=1e-6), (name, metric)


def test_round_two_is_anchored_to_round_ones_policy(iterative, profile):
    """From round 2 on TRL copies the trained adapter into a frozen "ref" adapter: policy and reference start equal,
    so the first logged loss is log 2; after training the reference still holds round 1's weights (in 16-bit up to
    rounding) while the policy moved away from them (both relative to the weights' largest value)."""
    tolerance = 1e-4 if profile.dtype == torch.float32 else 3e-2
    checked = 0
    for labeller, rounds in iterative["rounds"].items():
        if rounds[0]["pairs"] and rounds[1]["pairs"]:
            r = rounds[1]
            assert r["first_loss"] == pytest.approx(math.log(2), abs=tolerance), labeller
            assert r["ref_drift"] <= tolerance and r["policy_moved"] > r["ref_drift"], labeller
            checked += 1
    if profile.name == "cpu":
        assert checked == 2, "both labellers trained in both rounds on the cpu profile"
        assert all(r["ref_drift"] == 0 for rounds in iterative["rounds"].values() for r in rounds[1:])  # float32 copy


def test_iterative_dpo_is_judged_with_paired_intervals(iterative):
    """Each policy's values on the same held-out prompts; each contrast paired, its exact test and its word
    recomputed from the per-prompt verdicts."""
    run, n = iterative, iterative["eval_pairs"]
    rounds = {r["policy"]: r for entries in run["rounds"].values() for r in entries}
    assert set(run["judged"]) == {"start", run["offline"], *rounds} == set(run["per_prompt"])
    for name, metrics in run["judged"].items():
        for metric, result in metrics.items():
            low, high = result["ci95"]
            assert result["n"] == n and low - 1e-9 <= result["value"] <= high + 1e-9, (name, metric)
            if name in rounds:
                assert result == rounds[name]["judged"][metric], (name, metric)
        for metric, values in run["per_prompt"][name].items():
            assert len(values) == n and sum(values) / n == pytest.approx(metrics[metric]["value"]), (name, metric)
    assert set(run["final"].values()) == set(run["after"]) and run["before"] == pytest.approx(
        {m: r["value"] for m, r in run["judged"]["start"].items()})
    for name, means in run["after"].items():
        assert means == pytest.approx({m: r["value"] for m, r in run["judged"][name].items()}), name
    for contrast, (a, b) in run["contrasts"].items():
        for metric, result in run["vs"][contrast].items():
            expected = run["judged"][a][metric]["value"] - run["judged"][b][metric]["value"]
            assert result["n"] == n and result["value"] == pytest.approx(expected, abs=1e-6), (contrast, metric)
        for metric, p in run["mcnemar_p"][contrast].items():
            ours, theirs = run["per_prompt"][a][metric], run["per_prompt"][b][metric]
            assert p == pytest.approx(helpers.stats.mcnemar_exact(ours, theirs)), (contrast, metric)
            word = "within noise" if p >= 0.05 else "higher" if sum(ours) > sum(theirs) else "lower"
            assert run["reads"][contrast][metric] == word, (contrast, metric)


def test_a_proxy_labeller_picks_pairs_the_gold_rule_does_not_rank_so(iterative, profile):
    """Measured on the cpu profile: both labellers labelled as many pairs as the offline run trained on (2 rounds of
    6), and of the reward model's 12 pairs the gold rule agreed with 2, saw no difference in 5 and preferred the
    rejected answer in 5. Asserted with margins: at least half the pairs, and the gold rule agreeing with at most half
    of the reward model's. The held-out
    differences (right facts +0.25 for the gold-labelled policy against the offline run, exact p = 0.062; the
    reward-model-labelled policy's shorter answers) are not asserted: one seed, 20 prompts."""
    if profile.name != "cpu":
        pytest.skip("measured on the cpu profile; a GPU profile's notebook reports its own rounds")
    gold, proxy = iterative["rounds"]["gold rule"], iterative["rounds"]["reward model"]
    # a prompt gives a pair only where its samples score differently: on this run every round found its 6, but
    # sampling on another CPU can part from the first differing bit, so the margin is half
    assert sum(r["pairs"] for r in gold) >= iterative["offline_pairs"] // 2
    pairs, agrees = sum(r["pairs"] for r in proxy), sum(r["gold_agrees"] for r in proxy)
    assert pairs >= iterative["offline_pairs"] // 2 and agrees <= pairs / 2, (agrees, pairs)

@pytest.fixture(scope="module")
def orpo():
    return record("07_orpo")


def test_orpo_record_says_what_ran(orpo, profile):
    assert orpo["profile"] == profile.name and orpo["model"] == profile.pref_model
    assert orpo["steps"] == profile.orpo_steps and orpo["pairs"] == profile.orpo_steps * profile.pref_batch_size
    assert orpo["eval_pairs"] == profile.pref_eval_pairs and orpo["beta"] == profile.orpo_beta
    assert orpo["models_in_memory"] == ["policy (no reference)"]


def test_orpo_raises_the_held_out_log_odds(orpo):
    # paired over the 20 held-out pairs (measured: +3.3 [2.0, 4.8])
    change = orpo["intervals"]["log_odds_ratio"]["change"]
    assert change["ci95"][0] > 1.0, f"held-out log odds ratio change {change}"
    assert orpo["after"]["preference_accuracy"] >= 0.8, orpo["after"]


def test_orpo_keeps_the_chosen_answers_likely(orpo):
    # the NLL term: unlike DPO, the chosen answers gain probability while the rejected ones lose it (measured:
    # log p(chosen) +4.2 [2.3, 6.5], log p(rejected) -5.9 [-7.8, -4.0], summed over the answer's tokens)
    change = {metric: result["change"] for metric, result in orpo["intervals"].items()}
    assert change["logp_chosen"]["ci95"][0] > 0.5, change["logp_chosen"]
    assert change["logp_rejected"]["ci95"][1] < -1.0, change["logp_rejected"]


def test_the_odds_ratio_term_adds_to_sft_alone(orpo):
    # beta=0 is plain SFT on the chosen answers: it makes the rejected answers likelier too. ORPO minus SFT alone,
    # paired (measured: log odds ratio +1.9 [1.1, 2.7], log p(rejected) -10.7 [-12.6, -8.7])
    over_sft = {metric: result["change"] for metric, result in orpo["over_sft_only"].items()}
    assert over_sft["log_odds_ratio"]["value"] == pytest.approx(
        orpo["after"]["log_odds_ratio"] - orpo["sft_only"]["log_odds_ratio"], rel=1e-6, abs=1e-6)  # float32 means
    assert over_sft["log_odds_ratio"]["ci95"][0] > 0.5, over_sft["log_odds_ratio"]
    assert over_sft["logp_rejected"]["ci95"][1] < -1.0, over_sft["logp_rejected"]


@pytest.fixture(scope="module")
def grpo():
    return record("08_grpo")


def test_grpo_record_says_what_ran(grpo, profile):
    assert grpo["profile"] == profile.name and grpo["model"] == profile.pref_model
    assert grpo["steps"] == profile.grpo_steps and grpo["num_generations"] == profile.grpo_num_generations
    assert grpo["prompts"] == profile.grpo_steps * profile.grpo_batch_size // profile.grpo_num_generations
    assert grpo["eval_prompts"] == profile.grpo_eval_prompts and len(grpo["reward_curve"]) == profile.grpo_steps


def test_grpo_raises_the_held_out_reward(grpo):
    # paired over the 32 held-out prompts (measured: reward +0.66 [0.39, 0.93], format +0.66 [0.57, 0.76])
    change = {metric: result["change"] for metric, result in grpo["intervals"].items()}
    assert change["reward"]["ci95"][0] > 0.2, change["reward"]
    assert change["format"]["ci95"][0] > 0.3, change["format"]


def test_grpo_did_not_buy_the_format_with_wrong_answers(grpo):
    # a policy that games the format reward (e.g. "3.3.3.3") loses correctness; this run must not (measured: 0.72 ->
    # 0.72, +0.00 [-0.22, 0.22]: within noise, not fallen)
    assert grpo["after"]["correctness"] >= 0.5, grpo["after"]
    assert grpo["intervals"]["correctness"]["direction"] != "fell", grpo["intervals"]["correctness"]


def test_grpo_kl_grows_from_zero_when_beta_is_set(grpo):
    if grpo["beta"]:
        assert grpo["kl_curve"][0] < 0.05 and max(grpo["kl_curve"]) > grpo["kl_curve"][0], grpo["kl_curve"]


@pytest.fixture(scope="module")
def grpo_loss_types():
    return record("08_grpo_loss_types")


LOSS_VARIANTS = {  # key: (loss_type, scale_rewards, num_iterations), notebook 08's section 11
    "dapo": ("dapo", "group", 1), "grpo": ("grpo", "group", 1), "dr_grpo": ("dr_grpo", "none", 1),
    "dapo_scale_none": ("dapo", "none", 1), "dapo_num_iterations_2": ("dapo", "group", 2)}


def test_grpo_loss_types_record_says_what_ran(grpo_loss_types, grpo, profile):
    run = grpo_loss_types
    assert run["profile"] == profile.name and run["model"] == profile.pref_model
    assert run["steps"] == (profile.grpo_ablation_steps or profile.grpo_steps)
    assert run["prompts"] == run["steps"] * profile.grpo_batch_size // profile.grpo_num_generations
    assert {key: (v["loss_type"], v["scale_rewards"], v["num_iterations"])
            for key, v in run["loss_types"].items()} == LOSS_VARIANTS
    for key, v in run["loss_types"].items():
        # one clip ratio per optimizer step; one sampled length per sampled batch (each used num_iterations times)
        assert v["steps"] == run["steps"] == len(v["clip_ratio_curve"]), key
        assert len(v["sampled_length_curve"]) == -(-run["steps"] // v["num_iterations"]), key  # ceil
        assert v["section_6_run"] == (key == "dapo" and run["steps"] == profile.grpo_steps), key
        assert (v["seconds"] is None) == v["section_6_run"] and (v["seconds"] is None or v["seconds"] > 0), key
    if run["loss_types"]["dapo"]["section_6_run"]:  # the same run as 08_grpo.json: the same held-out means
        for metric, value in grpo["after"].items():
            assert run["loss_types"]["dapo"]["held_out"][metric]["value"] == pytest.approx(value, abs=1e-6), metric


def same_interval(a, b):
    return a["n"] == b["n"] and a["value"] == pytest.approx(b["value"]) and a["ci95"] == pytest.approx(b["ci95"])


def test_grpo_loss_types_are_judged_paired_against_dapo(grpo_loss_types):
    """Every interval and p-value of the record, recomputed from its per-prompt values."""
    run = grpo_loss_types
    dapo = run["loss_types"]["dapo"]["per_prompt"]
    for key, v in run["loss_types"].items():
        assert set(v["per_prompt"]) == {"correctness", "format", "reward", "mean words"}, key
        for metric, values in v["per_prompt"].items():
            assert len(values) == run["eval_prompts"], (key, metric)
            assert same_interval(v["held_out"][metric], helpers.stats.interval(values)), (key, metric)
            assert run["after"][key][metric] == pytest.approx(sum(values) / len(values)), (key, metric)
        if key == "dapo":
            assert v["minus_dapo"] == {} and v["correctness_mcnemar_p"] is None
            continue
        for metric, result in v["minus_dapo"].items():
            change = helpers.stats.interval(torch.tensor(v["per_prompt"][metric]) - torch.tensor(dapo[metric]))
            assert same_interval(result["change"], change), (key, metric)
            assert result["direction"] == {"holds": "rose", "fails": "fell"}.get(
                helpers.stats.verdict(change["ci95"]), "within noise"), (key, metric)
        assert v["correctness_mcnemar_p"] == pytest.approx(
            helpers.stats.mcnemar_exact(v["per_prompt"]["correctness"], dapo["correctness"])), key


def test_the_clip_binds_only_when_a_sampled_batch_is_reused(grpo_loss_types, profile):
    """With one update per batch the ratio is exactly 1 and TRL clips nothing; with num_iterations=2 the second
    update of each batch runs a moved policy, and some tokens leave [1 - eps, 1 + eps]."""
    for key, v in grpo_loss_types["loss_types"].items():
        if v["num_iterations"] == 1:
            assert all(c == 0 for c in v["clip_ratio_curve"]), (key, v["clip_ratio_curve"])
        elif profile.name == "cpu":  # its learning rate (1e-3) moves the policy enough; a GPU profile's 5e-5 may not
            assert max(v["clip_ratio_curve"]) > 0, (key, v["clip_ratio_curve"])


def test_the_clip_binds_on_the_second_update_of_each_batch_only(grpo_loss_types, profile):
    """num_iterations=2 (cpu: 10 steps, 5 sampled batches): measured clip shares 0.57, 0.27, 0.27, 0.19, 0.15 on the
    second updates, exactly 0 on the first (the ratio is 1 before the policy has moved)."""
    if profile.name != "cpu":
        pytest.skip("measured on the cpu profile (learning rate 1e-3); a GPU profile's 5e-5 may clip nothing")
    curve = grpo_loss_types["loss_types"]["dapo_num_iterations_2"]["clip_ratio_curve"]
    assert all(c == 0 for c in curve[0::2]) and min(curve[1::2]) > 0.02, curve


def test_without_the_std_the_policy_learns_less_format_and_keeps_longer_answers(grpo_loss_types, profile):
    """Measured on the cpu profile (32 held-out prompts, paired against dapo): scale_rewards="none" (dr_grpo, and
    dapo alone) answers +5.7 words [4.8, 6.5] / [4.9, 6.6] with format -0.46 [-0.53, -0.40] / [-0.54, -0.40];
    num_iterations=2 format -0.60 [-0.69, -0.51]; grpo within noise of dapo everywhere. Their gain in right values
    (+0.25 [0.09, 0.44], McNemar p = 0.02; +0.22 [0.03, 0.41], p = 0.065) is too close to 0 to assert. Asserted, with
    margins: the words and format intervals clear 0 by 2 words and 0.2; grpo's reward interval holds 0."""
    if profile.name != "cpu":
        pytest.skip("measured on the cpu profile; a GPU profile's notebook reports its own table")
    variants = grpo_loss_types["loss_types"]
    for key in ("dr_grpo", "dapo_scale_none"):
        change = variants[key]["minus_dapo"]
        assert change["mean words"]["change"]["ci95"][0] > 2, (key, change["mean words"])
        assert change["format"]["change"]["ci95"][1] < -0.2, (key, change["format"])
    assert variants["dapo_num_iterations_2"]["minus_dapo"]["format"]["change"]["ci95"][1] < -0.2
    assert variants["grpo"]["minus_dapo"]["reward"]["direction"] == "within noise"


def test_the_datasheet_names_the_form_the_starting_model_prefers(dpo):
    """Bug: the datasheet said the starting model prefers the short answer; notebook 06 measures the opposite."""
    from pathlib import Path

    before = dpo["before"]
    prefers_sentences = before["accuracy_when_sentence_asked"] > before["accuracy_when_value_asked"]
    sheet = (Path(__file__).resolve().parents[1] / "assets" / "preferences" / "DATASHEET.md").read_text()
    said = "prefers the full sentence" if prefers_sentences else "prefers the short answer"
    assert said in sheet, (before, said)


@pytest.fixture(scope="module")
def grpo_rm():
    return record("08_grpo_rm")


@pytest.fixture(scope="module")
def rloo():
    return record("08_rloo")


WITH_INTERVALS = {  # record -> how many held-out prompts or pairs its before/after were measured on
    "05_reward_model": "eval_pairs", "05_ppo": "eval_prompts", "05_overoptimisation": "eval_prompts",
    "06_dpo": "eval_pairs", "06_kto": "eval_pairs",
    "07_orpo": "eval_pairs",
    "08_grpo": "eval_prompts", "08_grpo_rm": "eval_prompts", "08_rloo": "eval_prompts"}


@pytest.mark.parametrize("name", WITH_INTERVALS)
def test_before_and_after_come_with_paired_intervals(name):
    """Every before/after a training notebook reports carries its 95% interval over the held-out prompts, and the
    change is paired (the same prompts twice): its direction is read from the interval."""
    run = record(name)
    intervals, n = run["intervals"], run[WITH_INTERVALS[name]]
    assert intervals and set(intervals) <= set(run["before"]) & set(run["after"]), (name, sorted(intervals))
    # equal up to float32 rounding: a notebook may average in float32 (one unit in the last place of a log-prob
    # near -9 is about 1e-6), the interval in float64 from the same per-prompt values
    same = dict(rel=1e-6, abs=1e-6)
    for metric, result in intervals.items():
        for side in ("before", "after"):
            assert result[side]["value"] == pytest.approx(run[side][metric], **same), (name, metric, side)
        assert result["change"]["value"] == pytest.approx(run["after"][metric] - run["before"][metric], **same)
        for part in ("before", "after", "change"):
            low, high = result[part]["ci95"]
            assert result[part]["n"] == n and low <= result[part]["value"] + 1e-9 <= high + 2e-9, (name, metric, part)
        low, high = result["change"]["ci95"]
        assert result["direction"] == ("rose" if low > 0 else "fell" if high < 0 else "within noise"), (name, metric)


def test_grpo_control_changes_only_the_reward(grpo, grpo_rm):
    """Notebook 08's control: the GRPO run again, with notebook 05's reward model as its only reward."""
    for key in ("profile", "model", "steps", "num_generations", "beta", "prompts", "eval_prompts"):
        assert grpo_rm[key] == grpo[key], key
    assert grpo_rm["before"]["correctness"] == grpo["before"]["correctness"]  # the same start, the same answers
    assert {k: v for k, v in grpo_rm["checker_run_after"].items() if k in grpo["after"]} == pytest.approx(grpo["after"])
    assert grpo_rm["config_diff"] == ["output_dir", "run_name"], grpo_rm["config_diff"]  # nothing else changed
    assert grpo_rm["models_in_memory"][1:] == ["reward model"] and grpo_rm["weight_copies"] == 2
    assert len(grpo_rm["reward_curve"]) == grpo_rm["steps"]
    assert set(grpo_rm["reward_effect"]) == set(grpo_rm["intervals"])


def test_the_same_grpo_paid_by_the_reward_model_hacks_it(grpo_rm):
    """Notebook 08's control: with the reward model as its reward, GRPO raises the reward model's score and loses the
    facts, as PPO did in notebook 05; with the checker (the same run otherwise) it kept them. Measured on 32 held-out
    prompts: reward-model score +4.6 [4.1, 5.1] from the start, correctness -0.53 [-0.72, -0.31] from the start and
    -0.53 [-0.72, -0.34] against the checker-paid run (an AMD EPYC); +4.39 [3.88, 4.88], -0.66 [-0.81, -0.50] and
    -0.66 [-0.84, -0.47] on an Intel Xeon. Against the checker-paid run the reward model's score rose on the EPYC but
    is within noise on the Xeon, +0.37 [-0.01, 0.72]: the checker-paid run raised it too (-4.52 -> -0.50), so only
    "not lower" is asserted there."""
    from_start, against_checker = grpo_rm["intervals"], grpo_rm["reward_effect"]
    assert from_start["reward-model score"]["change"]["ci95"][0] > 1.0, from_start["reward-model score"]
    assert from_start["correctness"]["change"]["ci95"][1] < -0.15, from_start["correctness"]
    assert against_checker["correctness"]["change"]["ci95"][1] < -0.15, against_checker["correctness"]
    assert against_checker["reward-model score"]["direction"] != "fell", against_checker["reward-model score"]


def test_rloo_changes_only_the_algorithm(grpo_rm, rloo):
    """Notebook 08's RLOO run: the GRPO control (paid by notebook 05's reward model) again with RLOOTrainer, every
    setting the two trainers share equal, the same start and the same held-out prompts."""
    for key in ("profile", "model", "steps", "num_generations", "beta", "prompts", "eval_prompts", "reward",
                "trainable_params", "models_in_memory", "weight_copies"):
        assert rloo[key] == grpo_rm[key], key
    assert rloo["before"] == pytest.approx(grpo_rm["before"])  # the same start, the same answers, the same scores
    assert rloo["grpo_control_after"] == pytest.approx(grpo_rm["after"])
    assert rloo["config_diff"] == ["output_dir", "run_name"], rloo["config_diff"]
    assert len(rloo["reward_curve"]) == len(rloo["kl_curve"]) == rloo["steps"]
    assert set(rloo["algorithm_effect"]) == set(rloo["intervals"])
    for metric, result in rloo["algorithm_effect"].items():  # RLOO minus the GRPO control, paired
        assert result["change"]["value"] == pytest.approx(rloo["after"][metric] - rloo["grpo_control_after"][metric])


def test_rloo_paid_by_the_reward_model_hacks_it_as_the_grpo_control_does(rloo):
    """Notebook 08's RLOO run, paid by notebook 05's reward model: like the GRPO control it raises the reward model's
    score and loses the facts. Measured on 32 held-out prompts (an AMD EPYC): reward-model score +4.20 [3.70, 4.68]
    and correctness -0.66 [-0.81, -0.50] from the start; against the GRPO control correctness 0.00 [-0.12, 0.12]
    and the reward-model score -0.19 [-0.53, 0.15], within noise (only the length fell, -1.6 [-3.0, -0.3] words,
    too close to zero to assert). Asserted with margins: the two effects from the start, and that the control's
    loss of facts is not undone by the algorithm (RLOO's right values not above the control's by more than 0.25)."""
    from_start, against_grpo = rloo["intervals"], rloo["algorithm_effect"]
    assert from_start["reward-model score"]["change"]["ci95"][0] > 1.0, from_start["reward-model score"]
    assert from_start["correctness"]["change"]["ci95"][1] < -0.15, from_start["correctness"]
    assert against_grpo["correctness"]["change"]["ci95"][0] < 0.25, against_grpo["correctness"]
