"""The one claim: of the live trials holding one key, the earliest wins; a later one yields, untrained.

A key is the project's own user attribute, written by the trial itself (or by the enqueue that made it), after
its owner: a search stage's slot ("slot 3": exactly n_trials slots), a confirm pair ("pair 1/0": candidate 1,
round 0), a final setting ("final <digest>"), a one-time action ("close <study>"). Live trials are the finished,
running and waiting ones, so a slot stays held while its trial runs and after it finished; a failed trial frees it.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from pipeline.names import CLAIM_ATTR, IMPORTED_ATTR, SURPLUS_ATTR
from pipeline.workers.owners import record_owner

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)  # trials that hold a key

SLOT = "slot "
UNDECIDED_S = 10.0  # an earlier trial that says nothing this long after this one claimed died before it could


def is_surplus(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial yielded to an earlier live one (SurplusTrial) and trained nothing."""
    return bool(trial.user_attrs.get(SURPLUS_ATTR))


class SurplusTrial(Exception):
    """Another live trial holds this trial's key: it yields."""


def holders(study: optuna.Study, key: str, before: int | None = None, since: int = 0,
            replaces: int | None = None) -> list[optuna.trial.FrozenTrial]:
    """Live trials holding key (numbered since ≤ n < before), other than the one `replaces` names."""
    return [t for t in study.get_trials(deepcopy=False, states=LIVE)
            if t.user_attrs.get(CLAIM_ATTR) == key and since <= t.number and t.number != replaces
            and (before is None or t.number < before)]


def claim(trial: optuna.Trial, key: str | None, since: int = 0, replaces: int | None = None) -> None:
    """Record this process as the trial's owner, then the key; yield (SurplusTrial) to an earlier live holder,
    or when there is nothing left to hold (key None: every slot held, no pair enqueued for it).

    `since`: earlier trials do not count (a forced retraining); `replaces`: the trial this one takes over
    (an adoption holds the key of the trial it adopts)."""
    record_owner(trial)
    if key is None:
        yield_trial(trial, f"trial {trial.number}: nothing left to claim")
    trial.set_user_attr(CLAIM_ATTR, key)
    deadline = time.monotonic() + UNDECIDED_S
    while True:
        rivals = holders(trial.study, key, before=trial.number, since=since, replaces=replaces)
        if rivals:
            yield_trial(trial, f"trial {trial.number}: trial {rivals[0].number} holds {key!r}")
        # an earlier trial still writing its key may hold the same: its key decides, not who wrote first
        if not undecided(trial.study, trial.number, since, replaces) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def undecided(study: optuna.Study, number: int, since: int, replaces: int | None) -> bool:
    """Whether an earlier RUNNING trial has not written its key yet."""
    return any(since <= t.number < number and t.number != replaces and CLAIM_ATTR not in t.user_attrs
               for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def yield_trial(trial: optuna.Trial, why: str) -> None:
    trial.set_user_attr(SURPLUS_ATTR, True)
    raise SurplusTrial(why)


def slot_key(study: optuna.Study, number: int, n: int) -> str | None:
    """The slot a new search trial takes: the lowest of 0..n-1 that no live trial holds; None when all are held.

    Trials that hold no key yet (just created, or recorded before keys were) take the lowest free slots in
    their numbers' order, so concurrent workers mostly pick different slots; when two pick the same one, the
    claim makes the later yield."""
    held, keyless = set(), []
    for t in study.get_trials(deepcopy=False, states=LIVE):
        key = t.user_attrs.get(CLAIM_ATTR)
        if IMPORTED_ATTR in t.user_attrs:  # added for the sampler (--from-experiment): holds no slot
            continue
        if key is not None and key.startswith(SLOT):
            held.add(int(key[len(SLOT):]))
        elif t.number < number:
            keyless.append(t)
    free = (s for s in range(n + len(keyless) + len(held)) if s not in held)
    for _ in keyless:
        next(free)
    slot = next(free)
    return f"{SLOT}{slot}" if slot < n else None
