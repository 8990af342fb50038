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
