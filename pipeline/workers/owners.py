"""Who runs a trial: a process instance, recorded in the trial's user attrs before it claims anything.

A worker is its host name (for people), its process namespace (the kernel's boot id and the inode of its pid
namespace: two containers sharing a host name, or one host's and another's, never compare equal), its pid, and
what tells this process from an earlier one with the same pid (its start time in clock ticks since boot), so a
restarted container whose pid 1 repeats does not take a dead trial for its own or for a live one.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from pathlib import Path

import optuna

from pipeline.names import OWNER_ATTRS
from pipeline.workers.groups import reaches

HOST, NAMESPACE, PID, INSTANCE = OWNER_ATTRS
ORPHAN_AGE_S = 120  # a RUNNING trial without an owner, seen this long, was killed before it said who ran it


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


@functools.cache
def namespace() -> str:
    """This process's pid namespace on this kernel: '<boot id>/pid:[<inode>]'. Within one, pids are comparable."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = f"host:{socket.gethostname()}"  # no /proc: the host name is all there is
    return f"{_boot_id()}/{ns}"


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
    return {HOST: socket.gethostname(), NAMESPACE: namespace(), PID: pid,
            INSTANCE: instance_of(pid) or f"pid-{pid}-{time.time()}"}


def record_owner(trial: optuna.Trial) -> None:
    for key, value in owner().items():
        trial.set_user_attr(key, value)


def pid_alive(pid: int) -> bool:
    if not reaches(os.kill, pid):
        return False
    fields = _stat(pid)  # a killed child that nobody reaped yet is a zombie: dead for our purpose
    return fields is None or fields[0] != "Z"


def same_namespace(attrs: dict) -> bool:
    """Whether the recorded owner's pid means a process of this pid namespace (records before namespaces were
    kept: by host name, as they were judged then)."""
    if NAMESPACE in attrs:
        return attrs[NAMESPACE] == namespace()
    return attrs.get(HOST) == socket.gethostname()


def owner_alive(attrs: dict) -> bool | None:
    """Whether the process recorded in a trial's user attrs still runs; None when it ran in another namespace."""
    if not same_namespace(attrs):
        return None
    pid = int(attrs.get(PID, -1))
    if pid < 0 or not pid_alive(pid):
        return False
    recorded = attrs.get(INSTANCE)
    if recorded is None:  # recorded before instances were: a trial of our own pid is an earlier process's
        return pid != os.getpid()
    return recorded == owner()[INSTANCE] if pid == os.getpid() else recorded == instance_of(pid)


class Ownerless:
    """RUNNING trials seen without an owner, aged by this process's monotonic clock: a start time written by
    another host (its clock, its time zone) is never compared with ours. A trial says who runs it as its first
    step, so one still ownerless after ORPHAN_AGE_S of watching was killed before it could."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.first_seen = clock, {}

    def too_old(self, study_name: str, trial: optuna.trial.FrozenTrial) -> bool:
        seen = self.first_seen.setdefault((study_name, trial.number), self.clock())
        return self.clock() - seen > ORPHAN_AGE_S


OWNERLESS = Ownerless()  # one watch per process


def is_orphan(study_name: str, trial: optuna.trial.FrozenTrial, ownerless: Ownerless = OWNERLESS) -> bool:
    """A RUNNING trial whose process is gone (kill -9, power loss, a restarted container)."""
    if not {HOST, PID} <= trial.user_attrs.keys():  # killed before it said who ran it, or still saying it
        return ownerless.too_old(study_name, trial)
    return owner_alive(trial.user_attrs) is False
