"""Issue #29's table and figure from bench_search.py's results: regret per method at equal compute, paired.

    .venv/bin/python bench/search_report.py RESULTS [--figure docs/search-regret.png] [--csv bench/results/search.csv]

Regret of a promoted λ = the refreshed sweep's best mean at the final's budget (52.88 % at λ 5e-3, docs/promotion.md)
minus the sweep's mean at that λ, linear in log10 λ between the sweep's points (below 1e-4: 1e-4's mean, as the first
sweep found 1e-5 and 1e-4 level; above 3e-2: the 1e-2 → 3e-2 slope extended). With the finals (`final-*.json`)
also 52.88 % minus the final's test accuracy, and whether both rank the methods alike. Paired differences are
per experiment k (every method's experiment k has seed k); SE = the standard deviation over k / √n.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from bench_search import best, prefix

SWEEP = {1e-4: 51.22, 1e-3: 52.04, 2.5e-3: 52.41, 3.5e-3: 52.50, 5e-3: 52.88, 7e-3: 52.33, 1e-2: 51.74,
         3e-2: 47.99}  # refreshed sweep, 2026-12-07, mean of 3 seeds (%)
BEST = max(SWEEP.values())
METHODS = ("default", "report", "tpe", "random", "tpe-confirm")
LABELS = {"default": "default pipeline (coarse 8 + fine 8 + confirm)", "report": "report's procedure (--no-confirm)",
          "tpe": "one TPE study, best trial", "random": "random search, best trial",
          "tpe-confirm": "TPE + confirm (no fine)", "tpe@report": "one TPE study at report's compute",
          "random@report": "random search at report's compute"}


def sweep_mean(lam: float) -> float:
    x, y = np.log10(list(SWEEP)), np.array(list(SWEEP.values()))
    v = math.log10(lam)
    if v > x[-1]:
        return float(y[-1] + (v - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2]))
    return float(np.interp(v, x, y))


def regret(lam: float) -> float:
    return BEST - sweep_mean(lam)


def load_all(folder: Path) -> dict:
    docs = {}
    for path in folder.glob("*.json"):
        d = json.loads(path.read_text())
        docs[(d["method"], d["k"])] = d
    return docs


def rows_of(docs: dict) -> list[dict]:
    """One row per (method, k) for the k where every method finished."""
    ks = sorted(k for m, k in docs if m == "default" and all((x, k) in docs for x in METHODS))
    rows = []
    for k in ks:
        default, report = docs[("default", k)], docs[("report", k)]
        for m in METHODS:
            d = docs[(m, k)]
            lam, compute = d.get("lambda"), d["compute"]
            trained = ({s: default["trials"][s] for s in ("coarse", "fine")} if m == "report" else d["trials"])
            wall = sum(r["seconds"] or 0 for rows in trained.values() for r in rows)
            if m in ("tpe", "random"):
                kept = prefix(d["trials"]["coarse"], default["compute"])
                lam, compute = best(kept)["lambda"], sum(r["compute"] for r in kept)
                wall = sum(r["seconds"] or 0 for r in kept)
                early = prefix(d["trials"]["coarse"], report["compute"])
                rows.append(row(docs, f"{m}@report", m, k, best(early)["lambda"], sum(r["compute"] for r in early),
                                sum(r["seconds"] or 0 for r in early)))
            rows.append(row(docs, m, m, k, lam, compute, wall))
    return rows


def row(docs: dict, name: str, method: str, k: int, lam: float, compute: float, wall: float) -> dict:
    final = docs.get((f"final-{method}", k)) if "@" not in name else None
    return {"method": name, "k": k, "lambda": lam, "compute": compute, "wall": wall, "regret_sweep": regret(lam),
            "final_test": None if final is None else 100 * final["test_accuracy"]}


def mean_se(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None], float)
    return (float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan, len(v))


def table(rows: list[dict]) -> str:
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["k"]] = r
    base = by["default"]
    lines = ["| method | compute (search trials) | trainings' wall (s) | regret, sweep (points) | − default, paired | "
             "regret, finals (points) | − default, paired | n |", "|---|---|---|---|---|---|---|---|"]
    for name, ks in by.items():
        rs = [ks[k] for k in sorted(ks)]
        c, w = mean_se(r["compute"] for r in rs), mean_se(r["wall"] for r in rs)
        s = mean_se(r["regret_sweep"] for r in rs)
        ds = mean_se(ks[k]["regret_sweep"] - base[k]["regret_sweep"] for k in ks)
        fin = [(BEST - ks[k]["final_test"], BEST - base[k]["final_test"]) for k in ks
               if ks[k]["final_test"] is not None and base[k]["final_test"] is not None]
        f = mean_se(a for a, _ in fin) if fin else None
        df = mean_se(a - b for a, b in fin) if fin else None
        def fmt(m):
            return f"{m[0]:+.2f} ± {m[1]:.2f}"

        lines.append(f"| {LABELS[name]} | {c[0]:.1f} | {w[0]:.0f} | {s[0]:.2f} ± {s[1]:.2f} | "
                     f"{'–' if name == 'default' else fmt(ds)} | {'–' if f is None else f'{f[0]:.2f} ± {f[1]:.2f}'} | "
                     f"{'–' if name == 'default' or df is None else fmt(df)} | {len(rs)} ({len(fin)} finals) |")
    return "\n".join(lines)


def ranking(rows: list[dict]) -> str:
    """The methods ordered by mean regret by the sweep and by the finals, over the k with finals for all."""
    ks = {r["k"] for r in rows if r["method"] == "default" and r["final_test"] is not None}
    ks = {k for k in ks if all(r["final_test"] is not None for r in rows if r["k"] == k and "@" not in r["method"])}
    mean = {m: [np.mean([r[key] if key == "regret_sweep" else BEST - r[key] for r in rows
                         if r["method"] == m and r["k"] in ks]) for key in ("regret_sweep", "final_test")]
            for m in METHODS}
    order = [" < ".join(sorted(METHODS, key=lambda m: mean[m][i])) for i in (0, 1)]
    return f"over k = {sorted(ks)}: by the sweep {order[0]}; by the finals {order[1]}"


def figure(rows: list[dict], docs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["k"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    top = max(r["compute"] for r in rows)
    grid = np.linspace(1, top, 60)
    for m, colour in (("tpe", "C2"), ("random", "C3")):
        curves = [[regret(best(prefix(docs[(m, k)]["trials"]["coarse"], c))["lambda"]) for c in grid] for k in ks]
        mu, se = np.mean(curves, 0), np.std(curves, 0, ddof=1) / math.sqrt(len(ks))
        ax.plot(grid, mu, color=colour, label=LABELS[m])
        ax.fill_between(grid, mu - se, mu + se, color=colour, alpha=0.15)
    for m, colour, mark in (("default", "C0", "o"), ("report", "C1", "s"), ("tpe-confirm", "C4", "D")):
        rs = [r for r in rows if r["method"] == m]
        c, s = mean_se(r["compute"] for r in rs), mean_se(r["regret_sweep"] for r in rs)
        ax.errorbar(c[0], s[0], yerr=s[1], xerr=c[1], fmt=mark, color=colour, capsize=3, label=LABELS[m])
    ax.set_xlabel("compute (unpruned search trials: 1,200 steps at batch 450)")
    ax.set_ylabel("regret (points below 52.88 %, by the sweep)")
    ax.set_title(f"regret against compute, mean ± SE over {len(ks)} fresh experiments", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--csv", type=Path)
    a = ap.parse_args()
    docs = load_all(a.results)
    rows = rows_of(docs)
    if not rows:
        raise SystemExit("no experiment k has every method's result yet")
    print(table(rows))
    print(ranking(rows))
    if a.figure:
        figure(rows, docs, a.figure)
    if a.csv:
        import pandas as pd

        a.csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).round(5).to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
