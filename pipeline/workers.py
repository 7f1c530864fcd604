"""Several workers on one study: who owns a trial, dead owners (orphans), the surplus claim, waiting.

A worker is a process instance: host, pid, and what tells this process from an earlier one with the
same pid (the boot id and the process start time), so a restarted container whose pid 1 repeats does
not take a dead trial for its own or for a live one.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from pipeline.sampling import LIVE

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ORPHAN_AGE_S = 120  # a RUNNING trial without an owner this old was killed before it said who ran it


class SurplusTrial(Exception):
    """Another worker took the stage's last slot while this trial was being created."""


class Tally(NamedTuple):
    finished: int
    running: int
    waiting: int  # enqueued, not started yet


def tally(study: optuna.Study) -> Tally:
    states = [t.state for t in study.get_trials(deepcopy=False, states=LIVE)]
    return Tally(sum(s in FINISHED for s in states), states.count(TrialState.RUNNING), states.count(TrialState.WAITING))


# ---- who runs a trial ------------------------------------------------------------------------------
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state first), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def instance_of(pid: int) -> str | None:
    """What identifies the process now running as pid: boot id and start time (clock ticks since boot)."""
    fields = _stat(pid)
    return None if fields is None else f"{_boot_id()}:{fields[19]}"


def owner() -> dict:
    """This process as a trial's owner, recorded in the trial's user attrs."""
    return _owner(os.getpid())  # keyed by pid: a forked worker is another owner


@functools.cache
def _owner(pid: int) -> dict:
    return {"host": socket.gethostname(), "pid": pid, "instance": instance_of(pid) or f"pid-{pid}-{time.time()}"}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)  # a killed child that nobody reaped yet is a zombie: dead for our purpose
    return fields is None or fields[0] != "Z"


def owner_alive(attrs: dict) -> bool | None:
    """Whether the process recorded in a trial's user attrs still runs; None when it ran on another host."""
    if attrs.get("host") != owner()["host"]:
        return None
    pid = int(attrs.get("pid", -1))
    if pid < 0 or not pid_alive(pid):
        return False
    recorded = attrs.get("instance")
    if recorded is None:  # recorded before instances were: a trial of our own pid is an earlier process's
        return pid != os.getpid()
    return recorded == owner()["instance"] if pid == os.getpid() else recorded == instance_of(pid)


def is_orphan(trial: optuna.trial.FrozenTrial, now: datetime) -> bool:
    """A RUNNING trial whose process is gone (kill -9, power loss, a restarted container)."""
    if not {"host", "pid"} <= trial.user_attrs.keys():  # killed before it said who ran it, or still saying it
        return trial.datetime_start is not None and (now - trial.datetime_start).total_seconds() > ORPHAN_AGE_S
    return owner_alive(trial.user_attrs) is False


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose process is gone; returns their numbers. The caller closes their runs."""
    storage = study._storage  # noqa: SLF001 - Optuna exposes heartbeats only through the storage
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
        optuna.storages.fail_stale_trials(study)  # dead workers on other machines, by their heartbeat
    now, failed = datetime.now(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_orphan(t, now):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


# ---- sharing a stage ------------------------------------------------------------------------------
def claim_slot(trial: optuna.Trial, n_trials: int) -> None:
    """Exactly n_trials: when racing workers created one trial too many, the later number yields."""
    earlier = [t for t in trial.study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number]
    if len(earlier) >= n_trials:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: the stage already has {n_trials} trials")


def wait_until_settled(study: optuna.Study, say, poll_s: float = 2.0, report_s: float = 30.0) -> None:
    """Wait while other workers still run trials of this study (their results may change its best)."""
    last = -math.inf
    now = datetime.now
    while running := [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                      if not is_orphan(t, now())]:
        if time.monotonic() - last > report_s:
            say(f"waiting for {len(running)} trial(s) of {study.study_name} still running in other workers")
            last = time.monotonic()
        time.sleep(poll_s)
