"""What is done once per experiment, whatever the workers: claimed through the study storage, like a trial.

The study `<experiment>-once` holds one trial per attempt, keyed by what it does ("close <study> after <n>"). The
earliest live claim acts; a later one waits while it runs (failing it when its worker dies: its process identity
here, Optuna's heartbeat across hosts) and returns once it completed. A claim whose worker died or was interrupted
is FAIL, and the next worker acts again: the action must pick up where a dead one stopped (closing a stage run
logs only what is not logged yet).
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
    ran = []

    def attempt(trial: optuna.Trial) -> float:  # an objective: Optuna's heartbeat runs while it acts
        claim(trial, key)
        try:
            action()
        except BaseException as e:
            trial.set_user_attr(REASON_ATTR, f"{type(e).__name__}: {e}"[:300])
            raise
        ran.append(trial.number)
        return 1.0

    while True:
        if any(t.state == TrialState.COMPLETE for t in holders(study, key)):
            return bool(ran)
        study.optimize(attempt, n_trials=1, catch=(SurplusTrial,))
        if ran:
            return True
        wait_until_settled(study, session.terminal.say)  # the holder acts now; a dead one is failed
