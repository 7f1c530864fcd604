#!/usr/bin/env python3
"""Training speed of our NumPy core against the PyTorch reference, side by side.

Same job for both: real CIFAR-10, 45,000 training samples (the last 5,000 of the 50,000 are the
validation set), 3072 -> 50 -> 10, float32, 2 threads, batch 100 and 450. An epoch is what the peer
times: one reshuffle and n // B update steps, without data loading or evaluation. Runs are
interleaved round-robin (ours, torch, ours, torch, ...) because absolute times on this machine
drift between sittings; compare the ratios.

    .venv/bin/python bench/bench_speed.py --data-dir /work/data [--rounds 3] [--epochs 3]

Needs torch in the venv for the peer (pip install torch==2.13.0; not a project dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import model.train as train_module  # noqa: E402
from model.train import TrainSettings, train  # noqa: E402

PEER = ROOT.parent / "shared" / "bench" / "peer_torch_mlp.py"  # shared/ beside the checkout
BATCH_SIZES = (100, 450)
VAL_SIZE = 5000
HIDDEN = 50
LAM = 0.0027  # the peer's defaults, so both do the same arithmetic
ETA_MIN, ETA_MAX = 1e-5, 1e-1


def load(data_dir: str):
    """(X, y, X_val, y_val), float32 standardised with the training statistics."""
    from model.cifar10 import load_dataset

    ds = load_dataset(data_dir, "holdout", VAL_SIZE)
    return ds.X_train, ds.y_train, ds.X_val, ds.y_val


def ours_epochs(data, B: int, epochs: int) -> list[float]:
    """Seconds per epoch of model.train.train, evaluations excluded.

    One checkpoint per epoch lets us read the clock at each epoch boundary; the time spent in the
    checkpoint's evaluation is measured by wrapping it and subtracted, so what remains is the
    reshuffle and the update steps, as the peer times them.
    """
    X, y, X_val, y_val = data
    steps = len(y) // B
    if steps * epochs % 2:
        raise SystemExit(f"need an even number of steps in all ({steps} x {epochs}); change --epochs")
    settings = TrainSettings(
        lam=LAM,
        hidden=HIDDEN,
        batch_size=B,
        eta_min=ETA_MIN,
        eta_max=ETA_MAX,
        n_s=steps * epochs // 2,
        cycles=1,
        checkpoints_per_cycle=epochs,
    )
    real = train_module.checkpoint_metrics
    in_eval = []

    def timed(*args):
        t0 = time.perf_counter()
        out = real(*args)
        in_eval.append(time.perf_counter() - t0)
        return out

    stamps = []
    train_module.checkpoint_metrics = timed
    try:
        t0 = time.perf_counter()
        train(X, y, X_val, y_val, settings, lambda step, m: stamps.append(time.perf_counter()))
    finally:
        train_module.checkpoint_metrics = real
    assert len(stamps) == len(in_eval) == epochs, "checkpoints no longer fall on epoch boundaries"
    ends = np.array(stamps)
    return list(np.diff(ends, prepend=t0) - np.array(in_eval))


def peer_epochs(data_dir: str, B: int, epochs: int, threads: int) -> dict:
    opts = {"--data-dir": data_dir, "--batch-size": B, "--epochs": epochs, "--threads": threads,
            "--val-size": VAL_SIZE, "--hidden": HIDDEN, "--lam": LAM}  # fmt: skip
    cmd = [sys.executable, str(PEER), *(str(x) for pair in opts.items() for x in pair)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def peak_rss_of_loading(data_dir: str) -> float:
    """Peak RSS in GB of a fresh process that loads all 60,000 images normalised to float32."""
    code = (
        f"import resource, sys; sys.path.insert(0, {str(ROOT)!r})\n"
        f"from model.cifar10 import load_dataset\n"
        f"ds = load_dataset({data_dir!r}, 'holdout', {VAL_SIZE})\n"
        f"assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 60000\n"
        f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )  # KiB on Linux
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 2**20


def blas_report() -> str:
    blas = [
        f"{i['internal_api']} {i.get('version')} kernel={i.get('architecture')} threads={i['num_threads']}"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    env = {k: v for k, v in os.environ.items() if k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    line = f"BLAS: {'; '.join(blas) or 'none found'}"
    if env:
        line += (
            f"\n  note: {env} is set (inherited by both sides); unsetting both lets OpenBLAS pick its "
            f"kernel for this CPU, which speeds NumPy up"
        )
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir",
        default=os.environ.get("HPSEARCH_DATA"),
        help="folder holding cifar-10-batches-py (default: $HPSEARCH_DATA)",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; each run reports its median")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not a.data_dir:
        ap.error("pass --data-dir or set HPSEARCH_DATA")
    threadpool_limits(a.threads)
    load_before = os.getloadavg()[0]
    print(f"numpy {np.__version__}, {a.threads} threads, {a.rounds} rounds x {a.epochs} epochs")
    print(blas_report())
    data = load(a.data_dir)
    ours = {B: [] for B in BATCH_SIZES}
    torch = {B: [] for B in BATCH_SIZES}
    for r in range(a.rounds):
        for B in BATCH_SIZES:
            ours[B].append(statistics.median(ours_epochs(data, B, a.epochs)))
            peer = peer_epochs(a.data_dir, B, a.epochs, a.threads)
            torch[B].append(peer["median_epoch_s"])
            print(f"  round {r + 1} B{B}: ours {ours[B][-1]:.3f} s, {peer['peer']} {torch[B][-1]:.3f} s", flush=True)
    print(f"\n{'batch':>5} {'ours s/epoch':>13} {'torch s/epoch':>14} {'ours/torch':>11}")
    for B in BATCH_SIZES:
        o, t = statistics.median(ours[B]), statistics.median(torch[B])
        ratios = [oi / ti for oi, ti in zip(ours[B], torch[B], strict=True)]
        print(f"{B:>5} {o:>13.3f} {t:>14.3f} {o / t:>11.2f}   (per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(
        f"\npeak RSS, loading all 60,000 images as float32 (model.cifar10.load_dataset): "
        f"{peak_rss_of_loading(a.data_dir):.2f} GB"
    )
    print(
        f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
        f"(this benchmark alone adds ~2; much more means other jobs shared the cores: run it again)"
    )


if __name__ == "__main__":
    main()
