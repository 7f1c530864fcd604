"""Child processes that lead their own process group (start_new_session), stopped with all they started.

Ctrl-C in the terminal then reaches only us; we stop each group ourselves: SIGTERM, a grace period, then
SIGKILL for what is left, the leader and any child that outlives it (uvicorn's workers under `mlflow ui`).
Used by the `--jobs` workers (workers/local.py) and the MLflow UI's server (views/ui.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time


def stop_groups(procs: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM to each process's group, wait up to `timeout` in all, SIGKILL what is left after it."""
    for p in procs:
        signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(p, signal.SIGKILL)
            p.wait()
    for p in procs:  # a group's other members may outlive its leader by a moment
        while _group_alive(p.pid):
            if time.monotonic() > deadline:
                signal_group(p, signal.SIGKILL)
                break
            time.sleep(0.1)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """The signal to the process's whole group (its pid is the group's id); a group already gone is no error."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    return reaches(os.killpg, pgid)


def reaches(send, target: int) -> bool:
    """Whether signal 0 sent by `send` (os.kill to a pid, os.killpg to a group) finds its target: one we may not
    signal exists too."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
