"""helpers.stats: bootstrap intervals against a known distribution, exact tests against scipy."""
import math

import pytest
import torch

from helpers import stats


def test_bootstrap_interval_covers_the_mean_with_the_binomial_width():
    values = torch.tensor([1.0] * 30 + [0.0] * 70)
    result = stats.interval(values)
    assert result["value"] == pytest.approx(0.3) and result["n"] == 100
    low, high = result["ci95"]
    half_width = 1.96 * (0.3 * 0.7 / 100) ** 0.5  # normal approximation: 0.09
    assert low == pytest.approx(0.3 - half_width, abs=0.02) and high == pytest.approx(0.3 + half_width, abs=0.02)
    assert stats.interval(values, seed=1)["ci95"] != result["ci95"]  # resampled, not computed from a formula
    assert stats.interval(values)["ci95"] == result["ci95"]  # seeded: the same every run


def test_sign_and_mcnemar_tests_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for wins, losses in [(13, 7), (20, 0), (5, 5), (1, 9), (0, 0)]:
        want = scipy_stats.binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
        assert stats.sign_test(wins, losses) == pytest.approx(want)
    a = torch.tensor([1, 1, 1, 1, 1, 0, 0, 1, 0, 1])
    b = torch.tensor([0, 0, 0, 0, 1, 0, 0, 1, 0, 1])
    assert stats.mcnemar_exact(a, b) == pytest.approx(scipy_stats.binomtest(4, 4).pvalue)  # 4 discordant, all a


def test_verdicts_read_intervals_in_three_states():
    assert stats.verdict([0.1, 0.3]) == "holds"
    assert stats.verdict([-0.1, 0.3]) == "within noise"
    assert stats.verdict([-0.3, -0.1]) == "fails"
    assert stats.verdict([0.45, 0.7], threshold=0.5) == "within noise"
    assert stats.combine("holds", "holds") == "holds"
    assert stats.combine("holds", "within noise") == "within noise"
    assert stats.combine("within noise", "fails") == "fails"
    with pytest.raises(ValueError, match="at least one value"):
        stats.bootstrap_ci([])


def test_before_after_pairs_the_prompts():
    # the same 40 prompts before and after: 10 rose by one, the rest stayed. Unpaired, the two intervals overlap
    # (0.30 [0.15, 0.45] against 0.55 [0.40, 0.70]); paired, the change is +0.25 [0.12, 0.38] and clears 0
    before = torch.tensor([1.0] * 12 + [0.0] * 28)
    after = before.clone()
    after[12:22] = 1.0
    result = stats.before_after({"right fact": before, "length": torch.full((40,), 5.0)},
                                {"right fact": after, "length": torch.full((40,), 5.0)})
    fact = result["right fact"]
    assert fact["before"]["value"] == pytest.approx(0.3) and fact["after"]["value"] == pytest.approx(0.55)
    assert fact["before"]["ci95"][1] > fact["after"]["ci95"][0], "unpaired, the intervals overlap"
    assert fact["change"]["value"] == pytest.approx(0.25) and fact["change"]["ci95"][0] > 0.05
    assert fact["direction"] == "rose" and fact["change"]["n"] == 40
    assert result["length"]["direction"] == "within noise" and result["length"]["change"]["ci95"] == [0.0, 0.0]
    assert stats.before_after({"x": after}, {"x": before})["x"]["direction"] == "fell"
    assert stats.means({"right fact": before}) == {"right fact": pytest.approx(0.3)}
    table = stats.before_after_table(result)
    assert table.loc["right fact", "change"] == "0.25 " + "[{:.2f}, {:.2f}]".format(*fact["change"]["ci95"])
    with pytest.raises(ValueError, match="same prompts"):
        stats.before_after({"x": before}, {"x": before[:10]})


def test_best_of_n_equals_the_average_over_every_draw():
    """best_of_n's closed form against brute force: every n-subset of the N samples, keep the best by score."""
    import itertools

    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (3, 6), generator=generator).double()  # small integers: ties happen
    values = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    for n in range(1, 7):
        expected = []
        for row_scores, row_values in zip(scores, values):
            kept = []
            for draw in itertools.combinations(range(6), n):
                best = max(draw, key=lambda i: (row_scores[i].item(), i))  # ties: the later sample
                kept.append(row_values[best].item())
            expected.append(sum(kept) / len(kept))
        torch.testing.assert_close(stats.best_of_n(scores, values, n), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(stats.best_of_n(scores, values, 1), values.mean(1))  # n = 1: the sampler itself
    with pytest.raises(ValueError, match="n = 7 needs 1 <= n <= 6, the answers sampled per prompt"):
        stats.best_of_n(scores, values, 7)
    with pytest.raises(ValueError, match=r"must both be \(prompts, samples per prompt\)"):
        stats.best_of_n(scores[0], values[0], 2)


def test_best_of_n_kl_is_the_analytic_value():
    assert stats.best_of_n_kl(1) == 0.0
    assert stats.best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert stats.best_of_n_kl(16) == pytest.approx(2.7726 - 0.9375, abs=1e-4)
