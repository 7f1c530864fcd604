"""What is done once per experiment, whatever the workers: claimed through the study storage, like a trial.

The study `<experiment>-once` holds one trial per attempt, keyed by what it does ("close <study>"). The earliest
live claim acts; a later one waits while it runs (failing it when its worker dies) and returns once it completed.
A claim whose worker died or was interrupted is FAIL, and the next worker acts again: the action must pick up
where a dead one stopped (closing a stage run logs only what is not logged yet).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from pipeline.names import ONCE_STAGE, REASON_ATTR
from pipeline.workers.claim import SurplusTrial, claim, holders
from pipeline.workers.waiting import wait_until_settled


def run_once(session, key: str, action) -> bool:
    """Run action() unless another worker did or does it; True when this process ran it."""
    study = optuna.create_study(study_name=session.study_name(ONCE_STAGE), storage=session.storage,
                                load_if_exists=True)
    while True:
        if any(t.state == TrialState.COMPLETE for t in holders(study, key)):
            return False
        trial = study.ask()
        try:
            claim(trial, key)
        except SurplusTrial:
            study.tell(trial, state=TrialState.FAIL)
            wait_until_settled(study, session.terminal.say)  # the holder acts now; a dead one is failed
            continue
        try:
            action()
        except BaseException as e:
            trial.set_user_attr(REASON_ATTR, f"{type(e).__name__}: {e}"[:300])
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, 1.0)
        return True
