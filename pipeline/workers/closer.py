"""The one dead-run closer: runs whose worker died are closed KILLED, in one wording; a run that FINISHED before
its worker could tell Optuna is handed to the next worker, which adopts it instead of training the slot again.

A trial's run is found by the trial number its tags carry (`runs()` lists them: a stage's child runs, or the final
runs). A run still RUNNING whose trial is over lost its process. A FINISHED run (state COMPLETE or PRUNED) whose
trial FAILed was killed between the run's end and Optuna's tell: an enqueued trial with the same params, key and
record (`adopts` naming the dead one) takes the run over, unless a live trial already holds the key.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from pipeline.names import ADOPT_ATTR, CLAIM_ATTR, OWNER_ATTRS, REASON_ATTR, RUN_ATTR, SURPLUS_ATTR, TRIAL_TAG, tag
from pipeline.workers.claim import LIVE

DIED = "its process died (found by another worker)"  # the one wording of a run closed by another worker
RESULTS = ("COMPLETE", "PRUNED")  # a run's state tag when it FINISHED with a result


def close_dead_run(tracker, run_id: str) -> None:
    tracker.set_tags(run_id, {"state": "FAIL", "reason": DIED})
    tracker.set_status(run_id, "KILLED")


def has_result(run) -> bool:
    return run.info.status == "FINISHED" and run.data.tags.get(tag("state")) in RESULTS


class Closer:
    """Closes the dead runs of one study. `runs()` lists the study's runs; `number_tag` is the tag holding a
    run's trial number; `adopt` says whether FINISHED runs of dead trials are handed over (stage trials) or not
    (the final, which finds its FINISHED run by its settings)."""

    def __init__(self, tracker, study: optuna.Study, runs: Callable[[], list], number_tag: str = TRIAL_TAG,
                 adopt: bool = True):
        self.tracker, self.study, self.runs, self.adopt = tracker, study, runs, adopt
        self.number_tag = tag(number_tag)
        self.settled: set[str] = set()  # runs seen closed for good: never looked up again

    def before_fail(self, trial: optuna.trial.FrozenTrial) -> None:
        """For an orphan about to be failed: when its run has its result, enqueue the adoption first, so the
        trial's key stays held throughout and no other worker starts the slot again."""
        run_id = trial.user_attrs.get(RUN_ATTR)
        if self.adopt and run_id is not None and has_result(self.tracker.client.get_run(run_id)):
            hand_over(self.study, trial)

    def __call__(self, _failed=None) -> None:
        """Close every dead run of the study; hand the FINISHED runs of failed trials over."""
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for run in self.runs():
            if run.info.run_id in self.settled:
                continue
            number = int(run.data.tags.get(self.number_tag, -1))
            trial = trials.get(number)
            if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            if run.info.status == "RUNNING":
                close_dead_run(self.tracker, run.info.run_id)
            elif self.adopt and trial.state == TrialState.FAIL and has_result(run) and not adopted(trials, trial):
                hand_over(self.study, trial)
            self.settled.add(run.info.run_id)


def adopted(trials: dict, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a live trial holds the dead trial's key (its adopter, or a retraining of the slot), or the trial
    yielded (a surplus trial trained nothing)."""
    key = trial.user_attrs.get(CLAIM_ATTR)
    return trial.user_attrs.get(SURPLUS_ATTR, False) or key is None or any(
        t.state in LIVE and t.user_attrs.get(CLAIM_ATTR) == key for t in trials.values())


def hand_over(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Enqueue the adoption of a trial whose run FINISHED: its params, its key and its record."""
    keep = {k: v for k, v in trial.user_attrs.items() if k not in (*OWNER_ATTRS, REASON_ATTR, SURPLUS_ATTR)}
    study.enqueue_trial(trial.params, user_attrs=keep | {ADOPT_ATTR: trial.number}, skip_if_exists=False)
