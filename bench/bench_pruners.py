"""Does multi-fidelity pruning help this search? The coarse stage with each pruner, on the same draws.

Each pruner gets its own scratch folder (its own Optuna and MLflow stores) but the same experiment name, so the
seeded sampler draws the same λ for trial k in every run: only the pruner differs. Prints per pruner: wall
time, the compute it saved (update steps not trained), the best trial and the top two λ (what the fine stage
would refine around).

    HPSEARCH_DATA=/path/to/cifar .venv/bin/python bench/bench_pruners.py [--pruners none median asha hyperband]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pruners", nargs="*", default=["none", "median", "asha", "hyperband"])
    ap.add_argument("--n-trials", type=int, default=8)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.search.results import stage_metrics
    from pipeline.session import Session, Stores

    print(f"coarse stage, {a.n_trials} trials, studies/coarse.toml; load {os.getloadavg()[0]:.2f}")
    for pruner in a.pruners:
        folder = Path(tempfile.mkdtemp(prefix=f"hpsearch-pruner-{pruner}-"))
        shutil.copytree(ROOT / "studies", folder / "studies", ignore=shutil.ignore_patterns("*.journal*", "*.db*"))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline", "--experiment", "pruners", "search", "coarse",
                        "--n-trials", str(a.n_trials), "--pruner", pruner], cwd=folder, check=True,
                       capture_output=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t
        study = Session(Stores(storage_url=str(folder / "studies" / "optuna.journal"), experiment="pruners"))
        study = study.load_study("coarse")
        m = stage_metrics(study)
        done = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: (-t.value, t.number))
        pruned = sum(t.state.name == "PRUNED" for t in study.trials)
        top = ", ".join(f"{t.params['lambda']:.3g} ({t.value:.4f})" for t in done[:2])
        saved, best = 100 * m.get("compute_saved", 0), m.get("best_val_accuracy", float("nan"))
        print(f"{pruner:>9}: {wall:6.1f} s wall, {pruned} pruned, compute saved {saved:4.1f} %, best {best:.4f}; "
              f"top two λ {top}", flush=True)


if __name__ == "__main__":
    main()
