"""Several workers on one study: who owns a trial, dead owners (orphans), the surplus claim, waiting.

A worker is a process instance: host, pid, and what tells this process from an earlier one with the
same pid (the boot id and the process start time), so a restarted container whose pid 1 repeats does
not take a dead trial for its own or for a live one.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from pipeline.names import SURPLUS_ATTR
from pipeline.workers.groups import reaches

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ORPHAN_AGE_S = 120  # a RUNNING trial without an owner this old was killed before it said who ran it


def is_surplus(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial yielded to an earlier live one (SurplusTrial) and trained nothing."""
    return bool(trial.user_attrs.get(SURPLUS_ATTR))


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
    if not reaches(os.kill, pid):
        return False
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
    """Fail RUNNING trials whose process is gone; returns their numbers. The caller closes their runs.

    On a database storage Optuna's heartbeat tells a dead worker on any machine (its public
    `fail_stale_trials`, a no-op where the storage keeps no heartbeat); on this machine the process identity
    tells it at once, on any storage."""
    before = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    optuna.storages.fail_stale_trials(study)
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_orphan(t, now):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    return [n for n in before if states[n] == TrialState.FAIL]


# ---- sharing a stage ------------------------------------------------------------------------------
def claim_slot(trial: optuna.Trial, n_trials: int) -> None:
    """Exactly n_trials: when racing workers created one trial too many, the later number yields."""
    earlier = [t for t in trial.study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number]
    if len(earlier) >= n_trials:
        trial.set_user_attr(SURPLUS_ATTR, True)
        raise SurplusTrial(f"trial {trial.number}: the stage already has {n_trials} trials")


def claim_enqueued(trial: optuna.Trial) -> None:
    """A stage whose trials are all enqueued (confirm's pairs): a trial that the queue did not fill, or one whose
    values an earlier live trial holds too (two workers enqueued at once), yields."""
    trials = {t.number: t for t in trial.study.get_trials(deepcopy=False, states=LIVE)}
    fixed = trials[trial.number].system_attrs.get("fixed_params")
    if fixed is None or any(t.system_attrs.get("fixed_params") == fixed for n, t in trials.items() if n < trial.number):
        trial.set_user_attr(SURPLUS_ATTR, True)
        raise SurplusTrial(f"trial {trial.number}: no enqueued values left for it")


def wait_until_settled(study: optuna.Study, say, poll_s: float = 0.5, report_s: float = 30.0,
                       on_failed=None, n: int | None = None) -> None:
    """Wait while other workers still run trials of this study (their results may change its best), or with
    `n`, until the study holds n finished trials: a confirm round is over when its own pairs are, even while
    a faster worker already trains the next round's.

    Every poll fails the trials whose worker died (`recover_orphans`; `on_failed` gets their numbers), so a
    dead worker costs at most the heartbeat's grace period. While it waits for a trial of another host (where a
    journal file shared across machines cannot tell whether its worker lives), the wait says every report_s
    seconds what it waits for, and for how long; a trial of this host is checked directly, so a wait for it (the
    final a local worker trains, whose progress shows) says nothing more."""
    started = last = time.monotonic()  # a short wait at a stage's end says nothing
    while True:
        failed = recover_orphans(study)
        if failed and on_failed is not None:
            on_failed(failed)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or (n is not None and tally(study).finished >= n):
            return
        if time.monotonic() - last >= report_s and any(owner_alive(t.user_attrs) is None for t in running):
            say(f"waiting {time.monotonic() - started:.0f} s so far for {describe_running(study, running)}")
            last = time.monotonic()
        time.sleep(poll_s)


def describe_running(study: optuna.Study, running: list) -> str:
    """'2 trial(s) of cifar10-lambda-coarse still running: 5 on host-a pid 12, 6 on host-b pid 40'."""
    who = ", ".join(f"{t.number} on {t.user_attrs.get('host', '?')} pid {t.user_attrs.get('pid', '?')}"
                    for t in running[:4])
    return f"{len(running)} trial(s) of {study.study_name} still running: {who}{', …' if len(running) > 4 else ''}"
