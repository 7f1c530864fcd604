"""Issue #11's goals in one run, side by side, as ratios: the whole pipeline against the PyTorch reference's
10-epoch process, workers against threads, peak memory of a search process, start-up.

    HPSEARCH_DATA=/path/to/cifar .venv/bin/python bench/bench_pipeline.py [--rounds 2] [--peer PATH]

Each round runs, in this order and in fresh scratch folders (copies of studies/): the peer's 10 epochs at
batch 100 as a whole process; `hpsearch pipeline --no-confirm --jobs 1`; `hpsearch pipeline --jobs 1` (confirm
included); `hpsearch pipeline --no-confirm --jobs 2`; `hpsearch pipeline --jobs 2` (the default on 2 cores).
Ratios are per round, against that round's peer time; the medians over rounds are printed with the machine's
load, and what the confirm stage adds. Needs torch (pip install torch==2.13.0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "bench" / "peer_torch_mlp.py"


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (GB) of this command's largest process (its own or a worker's)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage alone: the peak of it and what it waited for
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd[:6])}… failed ({proc.returncode}): {err.read().decode()[-400:]}")
    return wall, usage.ru_maxrss / 1e6, ""  # KB → GB


def scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    shutil.copytree(ROOT / "studies", folder / "studies", ignore=shutil.ignore_patterns("*.journal*", "*.db*"))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peer", type=Path, default=PEER)
    a = ap.parse_args()
    data = os.environ.get("HPSEARCH_DATA")
    if not data:
        sys.exit("set HPSEARCH_DATA to a folder holding cifar-10-batches-py")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    hp = [sys.executable, "-m", "pipeline"]
    import numpy  # noqa: F401 - loads the BLAS that threadpoolctl then reports
    import threadpoolctl

    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    print(f"BLAS {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}", flush=True)

    helps = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([*hp, "--help"], env=env, capture_output=True, check=True)
        helps.append(time.perf_counter() - t)
    print(f"hpsearch --help: median {statistics.median(helps):.3f} s over 5", flush=True)

    rows = {k: [] for k in ("peer", "no_confirm", "default", "no_confirm_jobs2", "default_jobs2")}
    peaks = []
    for r in range(1, a.rounds + 1):
        load = os.getloadavg()[0]
        peer, _, out = timed([sys.executable, str(a.peer), "--data-dir", data, "--epochs", "10", "--batch-size",
                              "100", "--threads", str(os.cpu_count())], Path.cwd(), env)
        rows["peer"].append(peer)
        for key, extra in (("no_confirm", ["--no-confirm", "--jobs", "1"]), ("default", ["--jobs", "1"]),
                           ("no_confirm_jobs2", ["--no-confirm", "--jobs", "2"]), ("default_jobs2", ["--jobs", "2"])):
            wall, peak, _ = timed([*hp, "pipeline", *extra], scratch(), env)
            rows[key].append(wall)
            peaks.append(peak)
        walls = ", ".join(f"{k} {v[-1]:.1f} s = {v[-1] / peer:.2f}×" for k, v in rows.items() if k != "peer")
        print(f"round {r} (load {load:.2f} → {os.getloadavg()[0]:.2f}): peer {peer:.1f} s; {walls}", flush=True)
    for key, goal in (("no_confirm", 6.0), ("default", 11.0), ("no_confirm_jobs2", 6.0), ("default_jobs2", 11.0)):
        ratios = [w / p for w, p in zip(rows[key], rows["peer"], strict=True)]
        print(f"{key:>17}: median {statistics.median(ratios):.2f}× the peer's 10 epochs (goal ≤ {goal}×); "
              f"walls {', '.join(f'{w:.0f}' for w in rows[key])} s")
    jobs = [b / a for a, b in zip(rows["no_confirm"], rows["no_confirm_jobs2"], strict=True)]
    print(f"2 workers × 1 thread / 1 worker × 2 threads: median {statistics.median(jobs):.2f}")
    for jobs_n, (off, on) in (("1", ("no_confirm", "default")), ("2", ("no_confirm_jobs2", "default_jobs2"))):
        added = [b - a for a, b in zip(rows[off], rows[on], strict=True)]
        print(f"the confirm stage adds (--jobs {jobs_n}): median {statistics.median(added):.1f} s (goal ≤ 60 s)")
    print(f"peak RSS of the largest pipeline process: {max(peaks):.2f} GB (`pipeline --jobs 1` holds the search "
          "split, then the final's; the goal, ≤ 1.2 GB, is a search process's: "
          "/usr/bin/time -f %M hpsearch search coarse)")


if __name__ == "__main__":
    main()
