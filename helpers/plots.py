"""Plots a reader would rather look at than read: curves from a trainer's log history, before/after bars."""

import matplotlib.pyplot as plt


def history_series(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged metric, e.g. "loss", "eval_loss" or "rewards/margins"."""
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
    return [s for s, _ in points], [v for _, v in points]


def plot_history(log_history: list[dict], keys=("loss", "eval_loss"), title: str = "", ax=None, label_prefix=""):
    """One line per logged metric against the optimizer step. Returns the axes (pass `ax` to overlay runs)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        steps, values = history_series(log_history, key)
        if steps:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                    label=f"{label_prefix}{key}")
    ax.set_xlabel("optimizer step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_before_after(metrics_before: dict, metrics_after: dict, title: str = "", ax=None):
    """Side-by-side bars of the same held-out metrics before and after training."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    names = list(metrics_before)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [metrics_before[n] for n in names], width=0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [metrics_after[n] for n in names], width=0.4, label="after")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend()
    return ax
