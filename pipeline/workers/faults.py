"""Test-only fault injection: the process kills itself at a named point when the environment asks for it.

HPSEARCH_TEST_FAULT = "<point>:<signal>[:<token folder>][,...]", e.g. "tell:SIGKILL:/tmp/faults". At `point` the
process sends itself the signal (SIGKILL: it dies there; SIGINT: Ctrl-C there). With a token folder only the
first process to reach the point fires (it makes `<folder>/<point>-<signal>`, atomically), so every worker of a
test can carry the same faults and each fires once; a point named twice, with two signals, fires at its first two
arrivals. Unset, `fault()` reads one environment variable and returns.

The points: "trial" (inside a trial's training), "tell" (a trial's run FINISHED, Optuna not told yet), "enqueue"
(a confirm round's pairs half enqueued), "final" (inside the final training), "close" (a stage run's summary
half logged).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pipeline.names import FAULT_ENV

POINTS = ("trial", "tell", "enqueue", "final", "close")


def fault(point: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, sig, *token = item.split(":", 2)
        if name != point:
            continue
        if token:
            try:
                (Path(token[0]) / f"{name}-{sig}").mkdir()
            except FileExistsError:  # another process fired it
                continue
        os.kill(os.getpid(), signal.Signals[sig])
        if sig == "SIGKILL":  # still here: the init of a pid namespace ignores a SIGKILL from inside it
            os._exit(128 + signal.SIGKILL)
