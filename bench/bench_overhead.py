#!/usr/bin/env python3
"""Search and tracking overhead: a tracked Optuna trial vs a bare `model.train` on the same settings.

    python bench/bench_overhead.py [--data-dir DIR] [--rounds 3] [--config studies/coarse.toml]

Two measures. (1) Direct: inside each tracked trial, the time spent outside the NumPy work (before and
after `train`, and in the checkpoint callback: Optuna reports, MLflow batches, the figure) as a share of
the NumPy work itself; machine noise hardly moves it. (2) End to end: runs bare and tracked trainings
alternately in one process (same data and seed; the cost of a step does not
depend on λ, which the trial samples) and prints
the median wall time of each and the overhead ratio. The tracked trial goes through the real stage
loop (journal storage, Optuna objective with pruning reports, MLflow child run with batched metrics and
its curves figure) in a throw-away folder. Timings on a shared machine drift: compare the ratio only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=os.environ.get("HPSEARCH_DATA"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--config", type=Path, default=ROOT / "studies/coarse.toml")
    a = ap.parse_args()
    if a.data_dir is None:
        sys.exit("pass --data-dir or set HPSEARCH_DATA (a folder holding cifar-10-batches-py)")

    import optuna

    from model.train import train
    from pipeline.data import sources
    from pipeline.search import objective
    from pipeline.search.stages import run_search
    from pipeline.session import Session, Stores
    from pipeline.settings import config

    inside = {}  # time in train() and in its callback, for the trial that is running

    def timed_train(X, y, X_val, y_val, settings, on_checkpoint):
        def timed_callback(step, metrics):
            t = time.perf_counter()
            try:
                on_checkpoint(step, metrics)
            finally:
                inside["callback"] += time.perf_counter() - t

        inside.update(train=0.0, callback=0.0)
        t = time.perf_counter()
        try:
            return train(X, y, X_val, y_val, settings, timed_callback)
        finally:
            inside["train"] = time.perf_counter() - t

    objective.train = timed_train  # the objective's own reference: same code, now timed

    os.chdir(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    cfg = config.load("coarse", a.config, {"search.prune": False})
    data = sources.dataset(sources.resolve(a.data_dir), cfg.data.split, cfg.data.val_size)
    settings = cfg.replace({"train.lambda": 0.0027}).train_settings()
    session = Session(Stores(data_dir=a.data_dir))
    bare, tracked, stage_calls, direct = [], [], [], []
    for i in range(1, a.rounds + 1):
        t0 = time.perf_counter()
        train(data.X_train, data.y_train, data.X_val, data.y_val, settings)
        bare.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        run_search(session, "coarse", cfg.replace({"search.n_trials": i}))
        stage_calls.append(time.perf_counter() - t0)
        last = session.load_study("coarse").trials[-1]
        tracked.append((last.datetime_complete - last.datetime_start).total_seconds())
        numpy_work = inside["train"] - inside["callback"]
        direct.append((tracked[-1] - numpy_work) / numpy_work)
        print(f"round {i}: bare {bare[-1]:.2f} s, tracked trial {tracked[-1]:.2f} s "
              f"(NumPy {numpy_work:.2f} s, tracking {tracked[-1] - numpy_work:.2f} s = {100 * direct[-1]:.1f} %), "
              f"whole stage call {stage_calls[-1]:.2f} s (λ {last.params['lambda']:.3g})", flush=True)
    b, t, s = (statistics.median(x) for x in (bare, tracked, stage_calls))
    paired = statistics.median(tr / ba for tr, ba in zip(tracked, bare, strict=True))
    print(f"\nsettings: {settings.total_steps} steps at batch {settings.batch_size}, "
          f"{len(settings.checkpoint_steps())} checkpoints, {len(data.y_train)} train / {len(data.y_val)} val")
    print(f"direct: search and tracking time per trial, median {100 * statistics.median(direct):.1f} % "
          "of its NumPy work")
    print(f"bare model.train     median {b:.2f} s")
    print(f"tracked Optuna trial median {t:.2f} s   overhead {100 * (t / b - 1):+.1f} % "
          f"(median of the per-round ratios: {100 * (paired - 1):+.1f} %)")
    print(f"whole stage call     median {s:.2f} s   overhead {100 * (s / b - 1):+.1f} % "
          "(adds study/run lookup, orphan check, the stage figure and table)")
    print(f"optuna {optuna.__version__}")


if __name__ == "__main__":
    main()
