"""The final training, exactly once per experiment and setting, however many workers (or machines) reach it.

The claim goes through the study storage, like any trial: the study `<experiment>-final` holds one trial per final
training, tagged with the digest of its settings (λ included). Of the live trials of one digest the lowest number
trains; a later one yields (surplus, FAIL) and its worker waits for the winner, failing it when its worker dies (its
heartbeat on a database, its process identity on this machine) and then claiming anew. A waiting worker says once
who trains, waits, and returns the same result.
"""

from __future__ import annotations

import math
import os

import optuna
from optuna.trial import TrialState

from pipeline.errors import UserError
from pipeline.final.choice import final_settings, previous_final
from pipeline.final.trainings import RunResult, train_run
from pipeline.names import (
    DIGEST_ATTR,
    FINAL_STAGE,
    FINAL_TRIAL_TAG,
    LAMBDA_SOURCE_TAG,
    MODEL_VERSION_TAG,
    REASON_ATTR,
    RUN_ATTR,
    SETTINGS_ATTR,
    tag,
)
from pipeline.search.objective import describe
from pipeline.session import Session
from pipeline.settings.config import Settings
from pipeline.workers import Closer, SurplusTrial, claim, wait_until_settled
from pipeline.workers.local import blas_threads

INTERRUPTED = "interrupted"  # a reason that lets another worker take the final over


def train_final(session: Session, cfg: Settings, lam: float | None = None, force: bool = False,
                confirmed: bool = True) -> RunResult:
    """Train, register and test the final model, unless a worker did or does (then its result); --force retrains."""
    session.check_tracking()
    values, source = final_settings(session, cfg, lam, confirmed)
    cfg = cfg.replace(values)
    if not force and (run := previous_final(session, cfg)) is not None:
        m = run.data.metrics
        return RunResult(run.info.run_id, "final", cfg.train.lam, m.get("test_accuracy", math.nan),
                         m.get("val_accuracy", math.nan), run.data.tags.get(tag(MODEL_VERSION_TAG)), reused=True)
    study = optuna.create_study(study_name=session.study_name(FINAL_STAGE), storage=session.storage,
                                direction="maximize", load_if_exists=True)
    claimer = Claim(session, cfg, values, source, first=len(study.get_trials(deepcopy=False)) if force else 0)
    close = Closer(session.tracker, study, lambda: session.tracker.find_runs(role="final"), FINAL_TRIAL_TAG,
                   adopt=False)
    said = set()
    while True:
        ours = [t for t in study.get_trials(deepcopy=False) if t.number >= claimer.first
                and t.user_attrs.get(DIGEST_ATTR, cfg.digest()) == cfg.digest()]
        if done := [t for t in ours if t.state == TrialState.COMPLETE]:
            return result_of(done[0], cfg.train.lam)
        if running := [t for t in ours if t.state == TrialState.RUNNING]:
            t = running[0]
            if t.number not in said:
                said.add(t.number)
                session.terminal.say(f"final: trained by {t.user_attrs.get('host', '?')} (pid "
                                     f"{t.user_attrs.get('pid', '?')}, trial {t.number} of {study.study_name}); "
                                     "waiting for it")
            wait_until_settled(study, session.terminal.say, on_failed=close)
            close()
            gone = next(x for x in study.get_trials(deepcopy=False) if x.number == t.number)
            reason = gone.user_attrs.get(REASON_ATTR, INTERRUPTED)
            if gone.state == TrialState.FAIL and not reason.startswith(INTERRUPTED):
                raise UserError(f"the final training (trial {t.number} of {study.study_name}, on "
                                f"{gone.user_attrs.get('host', '?')}) failed: {reason}")
            continue
        study.optimize(claimer, n_trials=1, catch=(SurplusTrial,))


class Claim:
    """The final study's objective: claim the training for this digest, or yield to an earlier live claim."""

    def __init__(self, session: Session, cfg: Settings, values: dict, source: str, first: int):
        self.session, self.cfg, self.values, self.source, self.first = session, cfg, values, source, first

    def __call__(self, trial: optuna.Trial) -> float:
        digest = self.cfg.digest()
        trial.set_user_attr(DIGEST_ATTR, digest)
        trial.set_user_attr(SETTINGS_ATTR, self.values)
        claim(trial, f"final {digest}", since=self.first)
        try:
            result = self.adopted(trial) or self.train(trial)
        except BaseException as e:
            trial.set_user_attr(REASON_ATTR, INTERRUPTED if isinstance(e, KeyboardInterrupt) else f"{e}"[:300])
            raise
        for key, value in {RUN_ATTR: result.run_id, "test_accuracy": result.test_accuracy, "lambda": result.lam,
                           MODEL_VERSION_TAG: str(result.model_version)}.items():
            trial.set_user_attr(key, value)
        return result.val_accuracy

    def train(self, trial: optuna.Trial) -> RunResult:
        self.session.terminal.say(f"final training with {describe(self.values)} ({self.source})")
        with blas_threads(os.cpu_count() or 1):  # the other workers wait: the final takes every core
            return train_run(self.session, self.cfg, "final", role="final", register=True,
                             tags={LAMBDA_SOURCE_TAG: self.source, FINAL_TRIAL_TAG: trial.number})

    def adopted(self, trial: optuna.Trial) -> RunResult | None:
        """The FINISHED run of a claim killed before Optuna was told (its model registered): its result."""
        run = previous_final(self.session, self.cfg)
        if run is None or int(run.data.tags.get(tag(FINAL_TRIAL_TAG), -1)) < self.first:
            return None
        self.session.terminal.say(f"final: adopts the finished run {run.info.run_id}, whose worker was killed before "
                                  "its result was stored")
        m = run.data.metrics
        return RunResult(run.info.run_id, "final", self.cfg.train.lam, m.get("test_accuracy", math.nan),
                         m.get("val_accuracy", math.nan), run.data.tags.get(tag(MODEL_VERSION_TAG)))


def result_of(trial: optuna.trial.FrozenTrial, lam: float) -> RunResult:
    a = trial.user_attrs
    return RunResult(a[RUN_ATTR], "final", a.get("lambda", lam), a["test_accuracy"], trial.value, a[MODEL_VERSION_TAG])
