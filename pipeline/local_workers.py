"""`--jobs N`: N worker processes on this machine share one stage, each with its share of the cores.

Each worker is `python -m pipeline search <stage> …`, the same command a user starts by hand on several
machines, so exactly-n_trials and one-run-per-trial hold as they do there. The BLAS thread count is set
in each worker's environment before NumPy loads (OpenBLAS reads it once, at import): N workers on C
cores get C / N threads each instead of all competing for every core. The store URLs travel in the
environment, never in argv, where `ps` would show a password to every user of the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from pipeline.errors import UserError
from pipeline.session import Stores

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_jobs() -> int:
    """Workers for `pipeline` when --jobs is not given: one per core, each with one BLAS thread. On 2 cores,
    2 workers × 1 thread took 0.87× the wall time of 1 worker × 2 threads (bench/bench_pipeline.py)."""
    return os.cpu_count() or 1


def worker_env(stores: Stores, jobs: int) -> dict[str, str]:
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = dict(os.environ) | dict.fromkeys(THREAD_VARS, threads)
    env |= {"HPSEARCH_STORAGE": stores.storage_url, "HPSEARCH_EXPERIMENT": stores.experiment}
    if stores.data_dir is not None:
        env["HPSEARCH_DATA"] = str(stores.data_dir)
    if stores.tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = stores.tracking_uri
    return env


def run_workers(stores: Stores, args: list[str], jobs: int) -> None:
    """Run `python -m pipeline <args>` in `jobs` processes at once until all end; their progress lines go to
    our stderr. Ctrl-C or SIGTERM stops them the way it stops one (the running trials FAIL, runs KILLED)."""
    env = worker_env(stores, jobs)
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, start_new_session=True) for _ in range(jobs)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated: each worker closes its own trial
        for p in procs:
            _signal(p, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                _signal(p, signal.SIGKILL)
                p.wait()
        raise
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed:
        i, code = failed[0]
        raise UserError(f"worker {i} of {jobs} exited with code {code} (its error line is above); run the same "
                        "command to resume")


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
