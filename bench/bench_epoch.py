#!/usr/bin/env python3
"""One training epoch against its GEMM floor, a square matmul and the PyTorch reference, in one run.

Everything is measured in the same process and interleaved round-robin (each round runs every
configuration once), so the ratios compare like with like even when the machine is noisy:

- ours: one 45,000-sample epoch of model.train.train (reshuffle + n // B fused steps, checkpoint
  evaluations timed and subtracted), hidden 50, float32, at batch 100 and 450;
- floor: the step's five GEMMs alone, same shapes, layouts, BLAS and threads, in a loop over the
  epoch's batches with the batch already in cache (nothing but GEMMs);
- gather: the per-step np.take of the batch rows alone (memory bound; PERF.md);
- square: a 2048² float32 matmul, as GFLOP/s: the BLAS's peak here;
- torch: the reference ../shared/bench/peer_torch_mlp.py in a subprocess with the same threads;
- augment (with --augment): an epoch with flips and ±4 pixel shifts against one without, at m = 50
  and m = 300.

    .venv/bin/python bench/bench_epoch.py --data-dir /work/data [--rounds 5] [--augment] [--wide] [--no-torch]
    .venv/bin/python bench/bench_epoch.py --data-dir /work/data --threads 1 --clock cpu --augment --wide

Ratios are medians of per-round ratios; absolute times drift between sittings here. When other jobs
share the two cores (load average well above 2), two-thread wall times stall on BLAS thread hand-offs
and mean little: the second form counts one thread's CPU seconds instead, which they barely move.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from bench_speed import PEER, blas_report, load, peer_epochs  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import model.train as train_module  # noqa: E402
from model.network import init_params  # noqa: E402
from model.step import Step  # noqa: E402
from model.train import TrainSettings, train  # noqa: E402

BATCH_SIZES = (100, 450)
clock = time.perf_counter  # --clock cpu: time.process_time, CPU seconds of this process
LAM = 0.0027  # the peer's default
K = 10


def epoch_flops(n: int, B: int, d: int, m: int) -> float:
    """FLOPs of the five GEMMs over one epoch: X@W1ᵀ, W2@Hᵀ, G@H, Gᵀ@W2, GHᵀ@X."""
    return (n // B) * 2 * B * (2 * d * m + 3 * m * K)


def ours_epoch(data, B: int, hidden: int = 50, **options) -> float:
    """Seconds of one epoch of train(), its checkpoint evaluation excluded (second of two epochs)."""
    X, y, X_val, y_val = data
    steps = len(y) // B
    settings = TrainSettings(lam=LAM, hidden=hidden, batch_size=B, n_s=steps, cycles=1,
                             checkpoints_per_cycle=2, train_eval_size=1000, **options)  # fmt: skip
    real, in_eval, stamps = train_module.checkpoint_metrics, [], []

    def timed(*args):
        t0 = clock()
        out = real(*args)
        in_eval.append(clock() - t0)
        return out

    train_module.checkpoint_metrics = timed
    try:
        train(X, y, X_val[:1000], y_val[:1000], settings, lambda step, m: stamps.append(clock()))
    finally:
        train_module.checkpoint_metrics = real
    return stamps[1] - stamps[0] - in_eval[1]  # the first epoch warms caches and allocations


def gemm_floor(data, B: int, hidden: int = 50, order: str = "F", fraction: float = 1.0) -> float:
    """Seconds of the epoch's GEMMs alone (or of `fraction` of them), in the fused step's own buffers."""
    X = data[0]
    n, d = X.shape
    params = init_params(d, hidden, K, np.random.default_rng(0))
    params.W1 = np.asarray(params.W1, order=order)
    s = Step(params, B)
    Xb = np.ascontiguousarray(X[:B])
    W1, W2 = params.W1, params.W2
    t0 = clock()
    for _ in range(round(n // B * fraction)):
        np.matmul(Xb, W1.T, out=s.H)
        np.matmul(W2, s.H.T, out=s.St)
        np.matmul(s.St, s.H, out=s.dW2)
        np.matmul(s.St.T, W2, out=s.GH)
        np.matmul(s.GH.T, Xb, out=s.dW1)
    return clock() - t0


def gather(data, B: int) -> float:
    """Seconds of an epoch's batch gathers alone."""
    X = data[0]
    n, d = X.shape
    Xb = np.empty((B, d), X.dtype)
    perm = np.random.default_rng(0).permutation(n)
    t0 = clock()
    for i in range(0, n - B + 1, B):
        np.take(X, perm[i : i + B], axis=0, out=Xb, mode="clip")
    return clock() - t0


def square_gflops(size: int = 2048, reps: int = 5) -> float:
    A = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    C = np.empty_like(A)
    t0 = clock()
    for _ in range(reps):
        np.matmul(A, A, out=C)
    return reps * 2 * size**3 / (clock() - t0) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("HPSEARCH_DATA"), help="folder holding cifar-10-batches-py")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--augment", action="store_true", help="also time epochs with augmentation at m = 50 and 300")
    ap.add_argument("--wide", action="store_true", help="also compare W1 layouts' GEMM floors at m = 1000")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: count this process's CPU seconds, which other jobs on the cores inflate far less than "
                         "wall time; use it with --threads 1 (idle BLAS threads spin); skips torch (it reports wall "
                         "time)")  # fmt: skip
    a = ap.parse_args()
    if a.clock == "cpu":
        global clock
        clock, a.no_torch = time.process_time, True
    if not a.data_dir:
        ap.error("pass --data-dir or set HPSEARCH_DATA")
    threadpool_limits(a.threads)
    load_before = os.getloadavg()
    print(f"numpy {np.__version__}, {a.threads} threads, {a.rounds} rounds, {a.clock} clock; {blas_report()}")
    data = load(a.data_dir)
    n, d = data[0].shape
    jobs = {}
    for B in BATCH_SIZES:
        jobs[f"ours B{B}"] = lambda B=B: ours_epoch(data, B)
        jobs[f"floor B{B}"] = lambda B=B: gemm_floor(data, B)
        jobs[f"gather B{B}"] = lambda B=B: gather(data, B)
        if not a.no_torch:
            jobs[f"torch B{B}"] = lambda B=B: peer_epochs(a.data_dir, B, 2, a.threads)["epoch_s"][-1]
    jobs["square GFLOP/s"] = square_gflops
    if a.augment:
        jobs["ours m300 B100"] = lambda: ours_epoch(data, 100, hidden=300)  # m = 50: "ours B100"
        for m in (50, 300):
            jobs[f"augment m{m} B100"] = lambda m=m: ours_epoch(data, 100, hidden=m, augment=True, shift=4)
    if a.wide:
        fifth = (data[0][: n // 5], data[1][: n // 5], data[2], data[3])
        jobs["ours m1000 B100"] = lambda: ours_epoch(fifth, 100, hidden=1000)
        for order in ("F", "C"):
            jobs[f"floor m1000 B100 W1 {order}"] = lambda o=order: gemm_floor(data, 100, 1000, o, fraction=0.2)
    times = {name: [] for name in jobs}
    for r in range(a.rounds):
        for name, job in jobs.items():
            times[name].append(job())
        print(f"  round {r + 1}/{a.rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}

    def paired(a: str, b: str) -> float:
        """Median over rounds of a/b: each round's pair ran back to back, so it shares its noise."""
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    peak = med["square GFLOP/s"]
    print(f"\nsquare 2048² float32 matmul: {peak:.0f} GFLOP/s (median); ratios are medians of per-round ratios")
    header = (f"{'':>5} {'ours ms':>8} {'floor ms':>9} {'gather ms':>10} {'ours/floor':>11} "
              f"{'(floor+gather)/floor':>21} {'ours/square':>12} {'floor/square':>13}")  # fmt: skip
    print(header + ("" if a.no_torch else f" {'torch ms':>9} {'ours/torch':>11}"))
    for B in BATCH_SIZES:
        o, f, g = med[f"ours B{B}"], med[f"floor B{B}"], med[f"gather B{B}"]
        flops = epoch_flops(n, B, d, 50) / 1e9

        def of_peak(name: str, flops: float = flops) -> float:  # GFLOP/s over the square matmul's, same round
            return statistics.median(flops / t / p for t, p in zip(times[name], times["square GFLOP/s"], strict=True))

        line = (f"B{B:<4} {o * 1e3:>8.0f} {f * 1e3:>9.0f} {g * 1e3:>10.0f} "
                f"{paired(f'ours B{B}', f'floor B{B}'):>11.2f} {1 + paired(f'gather B{B}', f'floor B{B}'):>21.2f} "
                f"{of_peak(f'ours B{B}'):>12.2f} {of_peak(f'floor B{B}'):>13.2f}")  # fmt: skip
        if not a.no_torch:
            line += f" {med[f'torch B{B}'] * 1e3:>9.0f} {paired(f'ours B{B}', f'torch B{B}'):>11.2f}"
        print(line)
    if not a.no_torch:
        print(f"torch: {PEER.name} in a subprocess, its second epoch (the first warms up)")
    if a.augment:
        for m in (50, 300):
            base, aug = "ours B100" if m == 50 else f"ours m{m} B100", f"augment m{m} B100"
            print(f"augment (flips + shift 4), m = {m}, B100: {med[aug] * 1e3:.0f} vs {med[base] * 1e3:.0f} ms "
                  f"per epoch, +{(paired(aug, base) - 1) * 100:.0f} %")  # fmt: skip
    if a.wide:
        F, C = "floor m1000 B100 W1 F", "floor m1000 B100 W1 C"
        wide = "ours m1000 B100"
        print(f"m = 1000, B100, a fifth of an epoch: GEMM floor with column-major W1 {med[F] * 1e3:.0f} ms, "
              f"row-major {med[C] * 1e3:.0f} ms (row/column {paired(C, F):.2f}); training loop "
              f"{med[wide] * 1e3:.0f} ms, {paired(wide, F):.2f}x the column-major floor")  # fmt: skip
    load_after = os.getloadavg()
    print(f"load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} on {os.cpu_count()} "
          f"CPUs (this benchmark alone adds ~2; more means other jobs shared the cores)")  # fmt: skip


if __name__ == "__main__":
    main()
