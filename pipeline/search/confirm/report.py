"""What the confirm stage decided, recorded on its parent run: the candidate table, a figure of every training
on log10 λ with the fit, and decision.md, which says in plain words why this λ and what the next best needed."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.names import NOTE_TAG, RANK_METRIC
from pipeline.search.confirm import agreement
from pipeline.search.confirm.candidates import KEY
from pipeline.search.confirm.racing import Decision, Score
from pipeline.search.objective import describe
from pipeline.settings.config import ConfirmSection

ROUND_MARKERS = "os^vD<>p*h"


def record(tracker, parent: str, study_name: str, d: Decision, c: ConfirmSection) -> None:
    tracker.log_text(parent, table(d).to_csv(index=False), "candidates.csv")
    tracker.log_text(parent, decision_md(d, c), "decision.md")
    tracker.log_figure(parent, figure(d, f"{study_name}: {c.strategy}, select {c.select}"), "candidates.png")
    metrics = {"chosen_mean_val_accuracy": d.best.mean, "chosen_se": d.best.se,
               "trainings": float(sum(len(s.values) for s in d.scores)), "rounds": float(len(d.rounds))}
    if KEY in d.chosen:
        metrics["chosen_lambda"] = d.chosen[KEY]
    if (rank := agreement.search_agreement(d)) is not None:
        metrics[RANK_METRIC] = rank.rho
    tracker.log_metrics(parent, metrics)
    tracker.set_tags(parent, {"chosen": describe(d.chosen), "select": c.select, "strategy": c.strategy,
                              NOTE_TAG: f"confirm: chose {describe(d.chosen)} ({d.how}); best mean val acc "
                                    f"{d.best.mean:.4f} over {len(d.best.values)} rounds"})


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def name(s: Score) -> str:
    return describe(s.candidate.settings)


def table(d: Decision):
    import pandas as pd

    rows = [{**{k.partition(".")[2]: v for k, v in s.candidate.settings.items()}, "mean": s.mean, "se": s.se,
             "n": len(s.values), "rounds": " ".join(str(r + 1) for r in s.rounds),
             "diff_vs_best": None if s.vs_best is None else -s.vs_best.diff,
             "paired_se": None if s.vs_best is None else s.vs_best.se,
             "search_val_accuracy": s.candidate.search_value, "origin": s.candidate.origin, "best": s is d.best,
             "chosen": s.candidate.settings == d.chosen} for s in d.scores]
    if (d.fit or d.multifit) is not None and not any(row["chosen"] for row in rows):  # a peak between candidates
        rows.append({**{k.partition(".")[2]: v for k, v in d.chosen.items()},
                     "mean": float(d.fit.curve(np.array([d.fit.x]))[0]) if d.fit else None, "n": 0,
                     "origin": "the fit's peak", "best": False, "chosen": True})
    return pd.DataFrame(rows)


def how_many(c: ConfirmSection) -> str:
    return f"a budget of {c.budget} trainings" if c.strategy == "race" else f"{c.seeds} rounds"


def decision_md(d: Decision, c: ConfirmSection) -> str:
    lines = [f"# Confirm: {describe(d.chosen)}", "",
             f"Strategy {c.strategy} ({how_many(c)}), candidates placed by {c.placement}, chosen by {c.select}: "
             f"{d.how}.", "", "## Rounds", ""]
    for r in range(len(d.rounds)):
        got = [s for s in d.scores if r in s.rounds]
        lines.append(f"- Round {r + 1} (seed + {r}, validation block {r}): "
                     + ", ".join(f"{name(s)}: {pct(s.values[s.rounds.index(r)])} %" for s in got) + ".")
        stopped = [s for s in got if s.rounds[-1] == r and r < len(d.rounds) - 1]
        for s in stopped:
            why_not = (f"more than z = {c.z:g} behind" if s.vs_best.z() > c.z else
                       f"not among the {len(d.rounds[r + 1])} best the budget trains again")
            lines.append(f"  - {name(s)} stopped, {why_not}: {pct(s.vs_best.diff)} points below the best over the "
                         f"rounds they shared, {s.vs_best.z():.1f} paired standard errors.")
    lines += ["", "## Candidates", "", "| candidate | rounds | mean val acc (%) | best minus it, paired (points) |",
              "|---|---|---|---|"]
    for s in sorted(d.scores, key=lambda s: -s.mean):
        vs = "the best" if s.vs_best is None else f"{pct(s.vs_best.diff)} ± {pct(s.vs_best.se)}"
        lines.append(f"| {name(s)} | {len(s.values)} | {pct(s.mean)} ± {pct(s.se)} | {vs} |")
    lines += ["", "## Why this λ" if set(d.chosen) == {KEY} else "## Why these settings", "", why(d), ""]
    lines += ["## Does the search budget rank like this one?", "", *rank_lines(d, c), ""]
    return "\n".join(lines)


def rank_lines(d: Decision, c: ConfirmSection) -> list[str]:
    """Spearman ρ of the search values against round 1 (and round 1 against the last round, with halving)."""
    out = agreement.lines(agreement.record(d, c)) or [
        "Not measured: fewer than three candidates are search trials with a round-1 training "
        "(spread places candidates between trials)."]
    if (rounds := agreement.rounds_agreement(d)) is not None:
        out.append(rounds.line("confirm stage's round 1", "its last round"))
    return [f"- {x}" for x in out]


def why(d: Decision) -> str:
    best = d.best
    others = sorted((s for s in d.scores if s.vs_best is not None), key=lambda s: s.vs_best.diff)
    out = [f"{name(best)} has the best mean validation accuracy of the last round, {pct(best.mean)} %."]
    if others:
        nxt = others[0]
        sig = nxt.vs_best.z()
        out.append(f"The next best, {name(nxt)}, would have needed {pct(nxt.vs_best.diff)} points more over the "
                   f"{nxt.vs_best.rounds} round(s) they shared ({sig:.1f} paired standard errors"
                   + ("; a difference within one SE, so the two are tied by the evidence)." if sig < 1 else ")."))
    if d.fit is not None:
        f = d.fit
        where = ("the vertex lay outside the measured range or the fit has no peak, so it was clipped to "
                 f"log10 λ = {f.x:.2f}" if f.clipped else f"its peak lies inside the measured range "
                 f"{10 ** f.lo:.2g}..{10 ** f.hi:.2g}")
        out.append(f"A quadratic in log10 λ with one offset per round, fitted to every training, has curvature "
                   f"{100 * f.b2:.2f} points per decade²; {where}. It proposes λ = {10 ** f.x:.3g}, "
                   f"{pct(f.peak_gain)} points above the better end of the range by the fit; train-final takes it.")
    elif d.multifit is not None:
        curv = ", ".join(f"{k} {100 * b:.2f}" for k, b in d.multifit.curvature.items())
        out.append(f"Train-final takes {d.how} (curvature in points per decade²: {curv}): {describe(d.chosen)}.")
    elif d.how.startswith("best mean ("):
        out.append(f"Train-final takes the {d.how}.")
    return " ".join(out)


def figure(d: Decision, title: str) -> Figure:
    """Every training on log10 λ (marker: its round), each candidate's mean ± SE, the fit, the chosen λ."""
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.subplots()
    on_lambda = all(KEY in s.candidate.settings for s in d.scores)
    xs = [math.log10(s.candidate.settings[KEY]) if on_lambda else i for i, s in enumerate(d.scores)]
    for x, s in zip(xs, d.scores, strict=True):
        for r, v in zip(s.rounds, s.values, strict=True):
            ax.scatter(x + 0.015 * (r - 0.5), 100 * v, marker=ROUND_MARKERS[r % len(ROUND_MARKERS)], s=28,
                       color="lightgray", edgecolor="gray", zorder=1, label=f"round {r + 1}")
        ax.errorbar(x, 100 * s.mean, yerr=100 * s.se, fmt="o", color="tab:red" if s is d.best else "tab:blue",
                    capsize=4, zorder=3, label="best mean ± SE" if s is d.best else "mean ± SE")
    if d.fit is not None:
        grid = np.linspace(d.fit.lo, d.fit.hi, 100)
        ax.plot(grid, 100 * d.fit.curve(grid), color="tab:green", label="quadratic fit (mean round offset)")
    if on_lambda and KEY in d.chosen:
        ax.axvline(math.log10(d.chosen[KEY]), color="tab:red", ls="--", label=f"chosen λ {d.chosen[KEY]:.3g}")
    handles, labels = ax.get_legend_handles_labels()
    keep = dict(zip(labels, handles, strict=True))
    ax.legend(keep.values(), keep.keys(), fontsize="small")
    ax.set(xlabel="log10 λ" if on_lambda else "candidate", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    return fig
