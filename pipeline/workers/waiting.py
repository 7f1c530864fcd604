"""Waiting for other workers: what a study holds, failing trials whose worker died, and the wait itself."""

from __future__ import annotations

import time
from typing import NamedTuple

import optuna
from optuna.trial import TrialState

from pipeline.names import IMPORTED_ATTR, OWNER_ATTRS
from pipeline.workers.claim import LIVE
from pipeline.workers.owners import is_orphan, owner_alive

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HOST, _, PID, _ = OWNER_ATTRS
SWEEP_S = 5.0  # how often a wait looks for dead runs when no trial failed under its eyes


class Tally(NamedTuple):
    finished: int
    running: int
    waiting: int  # enqueued, not started yet


def tally(study: optuna.Study) -> Tally:
    """What counts towards the stage: its live trials, not those imported for the sampler (--from-experiment)."""
    states = [t.state for t in study.get_trials(deepcopy=False, states=LIVE) if IMPORTED_ATTR not in t.user_attrs]
    return Tally(sum(s in FINISHED for s in states), states.count(TrialState.RUNNING), states.count(TrialState.WAITING))


def recover_orphans(study: optuna.Study, before_fail=None) -> list[int]:
    """Fail RUNNING trials whose process is gone; returns their numbers. The caller closes their runs.

    On a database storage Optuna's heartbeat tells a dead worker on any machine (its public
    `fail_stale_trials`, a no-op where the storage keeps no heartbeat); in this process namespace the process
    identity tells it at once, on any storage. `before_fail(trial)` runs first for each of those (the closer
    hands a trial killed after its run finished to the next worker, while its slot is still held)."""
    before = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_orphan(study.study_name, t):
            if before_fail is not None:
                before_fail(t)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    return [n for n in before if states[n] == TrialState.FAIL]


def wait_until_settled(study: optuna.Study, say, poll_s: float = 0.5, report_s: float = 30.0,
                       on_failed=None, n: int | None = None, before_fail=None) -> None:
    """Wait while other workers still run trials of this study (their results may change its best), or with
    `n`, until the study holds n finished trials: a confirm round is over when its own pairs are, even while
    a faster worker already trains the next round's.

    Every poll fails the trials whose worker died (`recover_orphans`; `on_failed` gets their numbers), so a
    dead worker costs at most the heartbeat's grace period. While it waits for a trial of another host (where a
    journal file shared across machines cannot tell whether its worker lives), the wait says every report_s
    seconds what it waits for, and for how long; a trial of this host is checked directly, so a wait for it (the
    final a local worker trains, whose progress shows) says nothing more."""
    started = last = swept = time.monotonic()  # a short wait at a stage's end says nothing
    while True:
        failed = recover_orphans(study, before_fail)
        if on_failed is not None and (failed or time.monotonic() - swept >= SWEEP_S):
            on_failed(failed)  # now and then with none: the closer finds what a heartbeat's failure left behind
            swept = time.monotonic()
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or (n is not None and tally(study).finished >= n):
            return
        if time.monotonic() - last >= report_s and any(owner_alive(t.user_attrs) is None for t in running):
            say(f"waiting {time.monotonic() - started:.0f} s so far for {describe_running(study, running)}")
            last = time.monotonic()
        time.sleep(poll_s)


def describe_running(study: optuna.Study, running: list) -> str:
    """'2 trial(s) of cifar10-lambda-coarse still running: 5 on host-a pid 12, 6 on host-b pid 40'."""
    who = ", ".join(f"{t.number} on {t.user_attrs.get(HOST, '?')} pid {t.user_attrs.get(PID, '?')}"
                    for t in running[:4])
    return f"{len(running)} trial(s) of {study.study_name} still running: {who}{', …' if len(running) > 4 else ''}"
