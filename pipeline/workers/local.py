"""`--jobs N`: this process and N − 1 more on this machine work on the same command, each with its share of the
cores.

Each other worker is `python -m pipeline <the same command> --jobs 1`, the command a user starts by hand on
several machines, so exactly-n_trials, one run per trial and one final hold as they do there. They are started
once for the whole command. Their BLAS thread count is set in their environment before NumPy loads (OpenBLAS
reads it once, at import); this process limits its own at run time (threadpoolctl). N workers on C cores get
C / N threads each instead of all competing for every core. The store URLs travel in the environment, never in
argv, where `ps` would show a password to every user of the machine.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from pipeline.errors import UserError
from pipeline.names import GATE_ENV
from pipeline.session import Stores
from pipeline.workers.groups import stop_groups

STOP_TIMEOUT_S = 60.0  # a worker stopped mid-trial marks its trial FAIL and its run KILLED first
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_jobs() -> int:
    """Workers for `pipeline` when --jobs is not given: one per core, each with one BLAS thread. On 2 cores,
    2 workers × 1 thread took 0.87× the wall time of 1 worker × 2 threads (bench/bench_pipeline.py)."""
    return os.cpu_count() or 1


def threads_each(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def worker_env(stores: Stores, jobs: int) -> dict[str, str]:
    return dict(os.environ) | dict.fromkeys(THREAD_VARS, str(threads_each(jobs))) | stores.to_env()


@contextlib.contextmanager
def blas_threads(n: int):
    """This process's BLAS threads set to n at run time, the earlier count restored after."""
    import numpy  # noqa: F401 - the limit applies to the BLAS libraries loaded so far
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def worker_processes(stores: Stores, args: list[str], jobs: int, check=lambda: None, env: dict | None = None):
    """Start jobs − 1 processes running `python -m pipeline <args>`, then run `check` (opening the stores); the
    body is this process's own share of the work, with its share of the cores. On leaving, wait for the others
    (their progress lines go to our stderr, their output nowhere: this process prints the results). Ctrl-C,
    SIGTERM or an error here stops them the way it stops one (the running trials FAIL, runs KILLED).

    The others start before `check` so that their start-up (imports: about 1.5 s) overlaps it, but they open
    nothing until it passed (`await_go`): when it refuses, they exit quietly and its one error line is the only
    one. `env` adds to the workers' environment (the command's deadline)."""
    if jobs <= 1:
        check()
        yield
        return
    env = worker_env(stores, jobs) | (env or {}) | {GATE_ENV: "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=subprocess.DEVNULL,
                              stdin=subprocess.PIPE, start_new_session=True) for _ in range(jobs - 1)]
    try:
        check()
    except BaseException:
        _release(procs, b"")  # no go: each reads the end of its input and exits 0, having opened nothing
        for p in procs:
            p.wait()
        raise
    _release(procs, b"go\n")
    try:
        with blas_threads(threads_each(jobs)):
            yield
        codes = [p.wait() for p in procs]
    except BaseException:
        stop_groups(procs, STOP_TIMEOUT_S)
        raise
    failed = [(i, c) for i, c in enumerate(codes, start=1) if c != 0]
    if failed:
        i, code = failed[0]
        raise UserError(f"worker {i} of {jobs} exited with code {code} (its error line is above); run the same "
                        "command to resume")


def _release(procs: list[subprocess.Popen], word: bytes) -> None:
    for p in procs:
        with contextlib.suppress(BrokenPipeError):  # a worker that already died: its exit code tells
            p.stdin.write(word)
            p.stdin.close()


def await_go() -> None:
    """In a worker that `worker_processes` started: load the heavy libraries, then wait for the starter's go (its
    stores check passed); without it (the check refused, or the starter died), exit quietly."""
    if os.environ.get(GATE_ENV) != "1":
        return
    import mlflow.tracking  # noqa: F401 - the start-up that overlaps the starter's check
    import optuna  # noqa: F401

    if sys.stdin.readline() != "go\n":
        raise SystemExit(0)
