"""The figures: learning curves (the report's Figures 2, 3, 5) and accuracy vs λ (Figure 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
from matplotlib.figure import Figure  # noqa: E402


def curves(history: Mapping[str, Sequence[float]], title: str) -> Figure:
    """Loss, cost, accuracy (train and validation) and η against the update step."""
    fig = Figure(figsize=(11, 2.9), layout="constrained")
    axes = fig.subplots(1, 4)
    steps = history["step"]
    for ax, key, label in zip(axes[:3], ("loss", "cost", "accuracy"), ("Loss", "Cost", "Accuracy"), strict=True):
        ax.plot(steps, history[f"train_{key}"], label="training", color="tab:green")
        ax.plot(steps, history[f"val_{key}"], label="validation", color="tab:red")
        ax.set(title=label, xlabel="update step", ylabel=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[3].plot(steps, history["eta"], color="tab:blue", marker=".", lw=1)
    axes[3].set(title="Learning rate η (at checkpoints)", xlabel="update step", ylabel="η")
    axes[3].grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def accuracy_vs_lambda(stages: Mapping[str, Sequence[tuple[float, float]]], title: str) -> Figure:
    """Validation accuracy of each trial against its λ (log scale), one marker style per stage."""
    fig = Figure(figsize=(6.4, 4), layout="constrained")
    ax = fig.subplots()
    styles = {"coarse": ("o", "tab:blue"), "fine": ("^", "tab:orange")}
    best = None
    for stage, points in stages.items():
        if not points:
            continue
        lams, accs = zip(*points, strict=True)
        marker, color = styles.get(stage, ("s", None))
        ax.scatter(lams, accs, marker=marker, color=color, label=f"{stage} ({len(points)} trials)", alpha=0.8)
        top = max(points, key=lambda p: p[1])
        best = top if best is None or top[1] > best[1] else best
    if best is not None:
        ax.annotate(f"best λ = {best[0]:.2g}\nval acc = {best[1]:.4f}", best, xytext=(12, -28),
                    textcoords="offset points", arrowprops={"arrowstyle": "->"}, fontsize="small")
    ax.set_xscale("log")
    ax.set(xlabel="λ (L2 strength, log scale)", ylabel="validation accuracy", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig
