"""Uncertainty for the course's comparisons: bootstrap intervals over prompts and exact tests for paired outcomes.

Every quality number the course reports is a mean over n held-out prompts; these turn it into
{"value", "ci95", "n"} and say whether a claim holds, fails or is within noise.
"""

import math

import torch


def bootstrap_ci(values, resamples: int = 4000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (n,): resample the n prompts with replacement.

    For a paired comparison pass the per-prompt differences (method - baseline): the same resampled prompts for
    both sides, which is what makes the interval paired.
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, x.numel(), (resamples, x.numel()), generator=generator)
    means = x[rows].mean(1)
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return low.item(), high.item()


def interval(values, **kwargs) -> dict:
    """{"value": mean, "ci95": [low, high], "n": n} for per-prompt values (n,)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    low, high = bootstrap_ci(x, **kwargs)
    return {"value": x.mean().item(), "ci95": [low, high], "n": x.numel()}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of `wins` against `losses` under "each is equally likely" (ties left out).

    For paired binary outcomes (right fact for method and baseline on the same prompt) the wins and losses are the
    discordant prompts, and this is McNemar's exact test."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_exact(a, b) -> float:
    """Exact McNemar p-value for paired 0/1 outcomes a, b (n,): do a and b differ in how often they are 1?"""
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    return sign_test(int((a & ~b).sum()), int((~a & b).sum()))


def verdict(ci95, threshold: float = 0.0) -> str:
    """"holds" if the interval lies above the threshold, "fails" if below, "within noise" if it straddles it."""
    low, high = ci95
    return "holds" if low > threshold else "fails" if high < threshold else "within noise"


def combine(*verdicts: str) -> str:
    """A claim made of several parts: it fails if any part fails, holds if all hold, else is within noise."""
    return "fails" if "fails" in verdicts else "holds" if all(v == "holds" for v in verdicts) else "within noise"


def means(per_prompt: dict) -> dict:
    """{metric: mean} from {metric: per-prompt values (n,)}: the headline numbers a record's before/after hold."""
    return {name: torch.as_tensor(values, dtype=torch.float64).mean().item() for name, values in per_prompt.items()}


def before_after(before: dict, after: dict, **kwargs) -> dict:
    """Intervals for a before/after measurement on the same n held-out prompts (same order on both sides).

    before, after: {metric: per-prompt values (n,)}. Returns {metric: {"before": interval, "after": interval,
    "change": paired interval of after - before, "direction": "rose" / "fell" (the interval clears 0) or
    "within noise"}}.
    """
    out = {}
    for name in before:
        b = torch.as_tensor(before[name], dtype=torch.float64).flatten()
        a = torch.as_tensor(after[name], dtype=torch.float64).flatten()
        if a.shape != b.shape:
            raise ValueError(f"{name}: {b.numel()} values before, {a.numel()} after; score the same prompts twice")
        change = interval(a - b, **kwargs)
        direction = {"holds": "rose", "fails": "fell"}.get(verdict(change["ci95"]), "within noise")
        out[name] = {"before": interval(b, **kwargs), "after": interval(a, **kwargs), "change": change,
                     "direction": direction}
    return out


def shown(result: dict, digits: int = 2) -> str:
    """"0.72 [0.55, 0.88]" for an interval {"value", "ci95", "n"}."""
    low, high = result["ci95"]
    return f"{result['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def before_after_table(intervals: dict, digits: int = 2):
    """before_after's result as a table: one row per metric, value [95% interval] before, after and for the
    change, its direction and n."""
    import pandas as pd

    return pd.DataFrame({name: {"before": shown(r["before"], digits), "after": shown(r["after"], digits),
                                "change": shown(r["change"], digits), "direction": r["direction"],
                                "n": r["change"]["n"]} for name, r in intervals.items()}).T


def best_of_n(scores, values, n: int) -> torch.Tensor:
    """Best-of-n sampling, read off N >= n answers already sampled per prompt: the expected value of the answer it
    keeps, per prompt, averaged over every way of drawing n of the N (an unbiased estimate, no resampling noise).

    scores: (P, N), what ranks the answers (the reward model: best-of-n keeps the highest); values: (P, N), what is
    read off the kept answer (the score itself, or the gold judge). Returns (P,).
    Sorted by score, the i-th lowest answer (i = 1..N) is the best of C(i-1, n-1) of the C(N, n) draws of n;
    equal scores rank by sample order (a later sample counts as higher).
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    values = torch.as_tensor(values, dtype=torch.float64)
    if scores.shape != values.shape or scores.dim() != 2:
        raise ValueError(f"best_of_n: scores {tuple(scores.shape)} and values {tuple(values.shape)} must both be "
                         "(prompts, samples per prompt)")
    N = scores.shape[1]
    if not 1 <= n <= N:
        raise ValueError(f"best_of_n: n = {n} needs 1 <= n <= {N}, the answers sampled per prompt; sample more")
    ranked = values.gather(1, scores.argsort(dim=1, stable=True))  # (P, N), by score, lowest first
    weights = torch.tensor([math.comb(i, n - 1) for i in range(N)], dtype=torch.float64,
                           device=values.device) / math.comb(N, n)
    return ranked @ weights


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || the sampler) in nats, the usual analytic value log n - (n - 1) / n. It is an upper bound,
    reached only when no single answer has a noticeable probability (Beirami et al., 2024): short answers that the
    sampler repeats make the true KL smaller. 0 for n = 1, about log n for large n."""
    return math.log(n) - (n - 1) / n
