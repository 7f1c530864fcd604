"""Where a pipeline's time goes, process by process: loaded by bench/bench_pipeline.py --profile through PYTHONPATH
(every worker inherits it), it wraps a few functions with timers and writes one JSON file per process on exit into
$HPSEARCH_BENCH_PROFILE. Nothing here changes what the pipeline does; a function missing in this version of the
code is simply not timed.
"""

import atexit
import functools
import json
import os
import time
from pathlib import Path

OUT = os.environ.get("HPSEARCH_BENCH_PROFILE")
SPENT: dict[str, float] = {}  # category -> seconds spent in it, not in a category nested inside it
_stack: list[list] = []  # [category, start, seconds of nested categories]


def _process_start() -> float:
    """This process's start as a wall-clock time, from /proc (the interpreter's own start-up included)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def _timed(key, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _stack.append([key, time.perf_counter(), 0.0])
        try:
            return fn(*args, **kwargs)
        finally:
            _, t, nested = _stack.pop()
            dt = time.perf_counter() - t
            SPENT[key] = SPENT.get(key, 0.0) + dt - nested
            if _stack:
                _stack[-1][2] += dt

    return wrapper


def _patch(module_name: str, attr: str, key: str) -> None:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    owner, _, name = attr.rpartition(".")
    target = getattr(module, owner, None) if owner else module
    if target is not None and hasattr(target, name):
        setattr(target, name, _timed(key, getattr(target, name)))


def _install() -> None:
    import subprocess

    import pipeline.cli.common  # noqa: F401 - first: it sets NumPy's huge-page variable before NumPy loads

    first = {}
    import pipeline.session as session

    init = session.Session.__init__

    def session_init(self, *args, **kwargs):
        first.setdefault("session", time.time())
        init(self, *args, **kwargs)

    session.Session.__init__ = session_init
    for module, attr, key in (
        ("pipeline.search.objective", "train", "training_steps"),
        ("pipeline.final.trainings", "train", "training_steps"),
        ("model.train", "evaluate", "evaluation"), ("pipeline.final.trainings", "evaluate", "evaluation"),
        ("pipeline.tracking.run", "TrackedRun.checkpoint", "tracking"),
        ("optuna.trial", "Trial.report", "tracking"), ("optuna.trial", "Trial.should_prune", "tracking"),
        ("pipeline.data.sources", "dataset", "data_loads"),
        ("pipeline.search.stages", "wait_until_settled", "waits"),
        ("pipeline.final.claim", "wait_until_settled", "waits"),
        ("pipeline.search.objective", "Objective.__call__", "tracking"),
        ("pipeline.final.trainings", "train_run", "tracking"),
        ("pipeline.search.stages", "finish_stage", "tracking"), ("pipeline.search.confirm.stage", "finish", "tracking"),
    ):
        _patch(module, attr, key)
    subprocess.Popen.wait = _timed("child_processes", subprocess.Popen.wait)
    start = _process_start()

    def write() -> None:
        end = time.time()
        doc = {"pid": os.getpid(), "wall": end - start, "to_session": first.get("session", end) - start,
               "spent": SPENT}
        (Path(OUT) / f"{os.getpid()}.json").write_text(json.dumps(doc))

    atexit.register(write)


if OUT:
    _install()
