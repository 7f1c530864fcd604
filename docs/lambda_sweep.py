"""The ground truth for "does the search find the best λ?": test accuracy at the final budget, per λ and seed.

Runs `hpsearch train --config studies/final.toml --lambda L --set train.seed=S` for every (λ, seed) in its own
MLflow experiment (default `lambda-sweep`), skipping pairs already recorded there, then prints mean ± SE per λ
and draws docs/lambda-sweep.png.

    HPSEARCH_DATA=/path/to/cifar .venv/bin/python docs/lambda_sweep.py            # 8 λ × 3 seeds
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (1e-4, 1e-3, 2.5e-3, 3.5e-3, 5e-3, 7e-3, 1e-2, 3e-2)


def recorded(experiment: str) -> dict[tuple[float, int], float]:
    """(λ, seed) -> test accuracy of the finished runs of the experiment."""
    sys.path.insert(0, str(ROOT))
    from pipeline.session import Session, Stores

    tracker = Session(Stores(experiment=experiment)).tracker
    runs = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
    return {(float(r.data.params["lambda"]), int(r.data.params["train.seed"])): r.data.metrics["test_accuracy"]
            for r in runs if "test_accuracy" in r.data.metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="lambda-sweep")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lambdas", type=float, nargs="*", default=LAMBDAS)
    a = ap.parse_args()
    done = recorded(a.experiment)
    for lam in a.lambdas:
        for seed in range(a.seeds):
            if any(abs(k[0] - lam) < 1e-12 and k[1] == seed for k in done):
                continue
            subprocess.run([sys.executable, "-m", "pipeline", "--experiment", a.experiment, "train",
                            "--config", "studies/final.toml", "--lambda", repr(lam), "--set", f"train.seed={seed}"],
                           check=True, cwd=os.getcwd(), env=os.environ | {"PYTHONPATH": str(ROOT)})
    done = recorded(a.experiment)
    rows = []
    print(f"{'λ':>10}  {'test accuracy per seed':<26} mean ± SE")
    for lam in sorted({k[0] for k in done}):
        accs = [v for k, v in sorted(done.items()) if k[0] == lam]
        se = statistics.stdev(accs) / len(accs) ** 0.5 if len(accs) > 1 else float("nan")
        rows.append((lam, statistics.fmean(accs), se, accs))
        print(f"{lam:>10.3g}  {' / '.join(f'{100 * v:.2f}' for v in accs):<26} "
              f"{100 * statistics.fmean(accs):.2f} ± {100 * se:.2f} %")
    figure(rows, ROOT / "docs" / "lambda-sweep.png")


def figure(rows, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    lams, means, ses, accs = zip(*rows, strict=True)
    for lam, a in zip(lams, accs, strict=True):
        ax.scatter([lam] * len(a), [100 * v for v in a], color="lightgray", s=14, zorder=1)
    ax.errorbar(lams, [100 * m for m in means], yerr=[100 * s for s in ses], fmt="o-", capsize=4, zorder=2,
                label="mean ± SE over seeds")
    best = max(rows, key=lambda r: r[1])
    ax.axhspan(100 * best[1] - 0.5, 100 * best[1], color="tab:green", alpha=0.1, label="within 0.5 points of the best")
    ax.set_xscale("log")
    ax.set(xlabel="λ", ylabel="test accuracy (%)",
           title="Final budget (49k / 1k, n_s 1960, 3 cycles): test accuracy by λ")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=90)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
