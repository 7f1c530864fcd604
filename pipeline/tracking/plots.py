"""The figures: learning curves (the report's Figures 2, 3, 5) and accuracy vs λ (Figure 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
from matplotlib.figure import Figure  # noqa: E402


def curves(history: Mapping[str, Sequence[float]], title: str) -> Figure:
    """Loss, cost, accuracy (train and validation) and η against the update step."""
    fig = Figure(figsize=(11, 2.9))
    # Fixed margins: a layout engine would double the cost of the figure every trial logs.
    axes = fig.subplots(1, 4, gridspec_kw={"left": 0.055, "right": 0.99, "bottom": 0.17, "top": 0.8, "wspace": 0.33})
    steps = history["step"]
    for ax, key, label in zip(axes[:3], ("loss", "cost", "accuracy"), ("Loss", "Cost", "Accuracy"), strict=True):
        ax.plot(steps, history[f"train_{key}"], label="training", color="tab:green")
        ax.plot(steps, history[f"val_{key}"], label="validation", color="tab:red")
        ax.set(title=label, xlabel="update step", ylabel=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[3].plot(steps, history["eta"], color="tab:blue", marker=".", lw=1)
    axes[3].set(title="Learning rate η", xlabel="update step", ylabel="η")
    axes[3].grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def accuracy_vs_lambda(
    stages: Mapping[str, Sequence[tuple[float, float, bool]]],
    title: str,
    fine_range: tuple[float, float] | None = None,
    n_val: int | None = None,
) -> Figure:
    """Validation accuracy of each trial against its λ (log scale), one marker per stage; pruned trials are
    hollow at their last reported accuracy. Optionally the fine stage's range and the best's standard error."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = {"coarse": ("o", "tab:blue"), "fine": ("^", "tab:orange")}
    done = [(lam, acc) for points in stages.values() for lam, acc, complete in points if complete]
    for stage, points in stages.items():
        marker, color = styles.get(stage, ("s", "tab:gray"))
        for complete, label in ((True, f"{stage}, completed"), (False, f"{stage}, pruned (last report)")):
            sel = [(lam, acc) for lam, acc, c in points if c == complete]
            if sel:
                lams, accs = zip(*sel, strict=True)
                face = color if complete else "none"
                ax.scatter(lams, accs, marker=marker, facecolors=face, edgecolors=color, s=45, label=label)
    if fine_range is not None:
        ax.axvspan(*fine_range, color="tab:orange", alpha=0.08, label="fine range")
    if done:
        best = max(done, key=lambda p: p[1])
        if n_val:
            se = (best[1] * (1 - best[1]) / n_val) ** 0.5
            ax.axhline(best[1] - se, color="gray", ls="--", lw=1, label="best − 1 standard error")
        ax.annotate(f"best: λ = {best[0]:.2g}\nval acc {best[1]:.4f}", best, xytext=(0, -44), ha="center",
                    textcoords="offset points", arrowprops={"arrowstyle": "->", "color": "gray"}, fontsize="small")
    ax.set_xscale("log")
    ax.set(xlabel="λ (L2 strength, log scale)", ylabel="validation accuracy", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig

