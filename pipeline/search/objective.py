"""The Optuna objective: suggest the values, train inside a tracked child run, report checkpoints, return."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from model.cifar10 import Dataset
from model.train import DivergedError, train
from pipeline.names import (
    ADOPT_ATTR,
    CLAIM_ATTR,
    N_VAL_ATTR,
    OBJECTIVE,
    REASON_ATTR,
    RUN_ATTR,
    SETTINGS_ATTR,
    TRIAL_TAG,
    tag,
)
from pipeline.settings.config import Settings
from pipeline.tracking.data_input import DataInput
from pipeline.tracking.run import TrackedRun
from pipeline.tracking.tracker import Tracker
from pipeline.workers import claim, fault, hand_over, slot_key, yield_trial
from pipeline.workers.closer import RESULTS


def data_params(data: Dataset) -> dict:
    """What a run records of its data: the digest of the exact images and split, the sizes, and the digest of
    the whitening matrix fitted on the training part (with the number of eigenvectors it kept)."""
    w = data.whitening
    return {"data.digest": data.digest, "data.n_train": len(data.y_train), "data.n_val": len(data.y_val)} | (
        {"data.whiten_digest": w.digest, "data.whiten_components": w.components} if w is not None else {})


@dataclass
class TrialContext:
    """What every trial of one stage shares: its settings, data, tracker, stage run and suggestions."""

    name: str
    study_name: str
    cfg: Settings
    dataset: Callable[[Settings], Dataset]  # a trial's data, by its settings (confirm's seeds validate on folds)
    tracker: Tracker
    parent_run_id: str
    suggest: Callable[[optuna.Trial], dict]  # the trial's setting values ("train.lambda": 0.003, ...)
    terminal: object
    log_scale: frozenset = frozenset()  # settings whose log10 the runs also log (MLflow plots linearly)
    params: dict = field(default_factory=dict)  # logged on every trial's run besides its settings
    data_origin: str = ""  # the data folder or the download URL: the source of every run's dataset input
    after: Callable | None = None  # (trial, run, data, result) after a finished training: confirm's per-image record
    enqueued: bool = False  # every trial is enqueued with its key (confirm's pairs): a trial without one yields


class Objective:
    """Callable objective: the final validation accuracy of a training with the suggested values."""

    def __init__(self, context: TrialContext, deadline=None):
        self.context = context
        self.deadline = deadline  # budget.Deadline: checked again here, since creating a trial can take seconds

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.context
        if self.deadline is not None and self.deadline.passed():  # created after the budget: it yields, untrained
            yield_trial(trial, f"trial {trial.number}: {self.deadline.describe()} passed")
        key = trial.user_attrs.get(CLAIM_ATTR)  # an enqueued trial (a confirm pair, an adoption) brings its key
        if key is None and not s.enqueued:
            key = slot_key(trial.study, trial.number, s.cfg.search.n_trials)
        claim(trial, key, replaces=trial.user_attrs.get(ADOPT_ATTR))
        trial.set_user_attr("stage", s.name)
        values = s.suggest(trial)
        if ADOPT_ATTR in trial.user_attrs:
            return self.adopt(trial)
        trial.set_user_attr(SETTINGS_ATTR, values)
        cfg = s.cfg.replace(values)
        data = s.dataset(cfg)
        trial.set_user_attr(N_VAL_ATTR, len(data.y_val))
        settings = cfg.train_settings()
        trial.set_user_attr("steps_total", settings.total_steps)  # with steps_trained: the compute pruning saved
        run = self.tracked_run(trial, cfg, values, settings.total_steps, DataInput(data, cfg.data.val_fold,
                                                                                   s.data_origin))
        try:
            with run:
                try:
                    result = train(data.X_train, data.y_train, data.X_val, data.y_val, settings,
                                   self.on_checkpoint(trial, run, settings))
                except DivergedError as e:  # a λ too large is a result, not a crash: the study goes on
                    trial.set_user_attr("diverged_at_step", e.step)
                    raise optuna.TrialPruned(str(e)) from e
                if s.after is not None:
                    s.after(trial, run, data, result)
        except BaseException:
            self.record(trial, run)
            raise
        try:  # the run FINISHED: from here to Optuna's tell, a Ctrl-C hands it to the next worker
            self.record(trial, run)
            value = run.final_val_accuracy
            if result.averaged is not None:  # train.average_cycles: the averaged network is the one trained
                trial.set_user_attr("last_weights_val_accuracy", value)
                value = result.final()
            fault("tell")
            return value
        except KeyboardInterrupt:  # the slot stays held (by the adoption) while Optuna fails this trial
            hand_over(trial.study, next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number))
            raise

    def adopt(self, trial: optuna.Trial) -> float:
        """Take over the FINISHED run of a trial killed before Optuna was told: its result, without training."""
        s, run_id, dead = self.context, trial.user_attrs[RUN_ATTR], trial.user_attrs[ADOPT_ATTR]
        run = s.tracker.client.get_run(run_id)
        s.tracker.set_tags(run_id, {TRIAL_TAG: trial.number, ADOPT_ATTR: dead})
        s.terminal.say(f"{s.name}-{trial.number}: adopts the finished run {run_id} of trial {dead}, killed before "
                       "its result was stored")
        if run.data.tags.get(tag("state")) == RESULTS[1]:
            reason = run.data.tags.get(tag("reason"), "")
            trial.set_user_attr(REASON_ATTR, reason)
            raise optuna.TrialPruned(reason)
        return run.data.metrics[OBJECTIVE]

    def tracked_run(self, trial: optuna.Trial, cfg: Settings, values: dict, steps: int, data: DataInput) -> TrackedRun:
        s = self.context
        named = {key.partition(".")[2]: value for key, value in values.items()}
        logs = {f"log10_{key.partition('.')[2]}": math.log10(v) for key, v in values.items() if key in s.log_scale}
        run = TrackedRun(
            s.tracker, f"{s.name}-{trial.number}", what=f"{s.name} trial {trial.number}", values=describe(values),
            steps=steps, tags={"study": s.study_name, "stage": s.name, TRIAL_TAG: trial.number, "role": "trial"},
            params=cfg.flat() | s.params | data_params(data.data) | named | logs | {"trial": trial.number}, data=data,
            parent_run_id=s.parent_run_id, terminal=s.terminal, outcomes=(optuna.TrialPruned,),
        )
        trial.set_user_attr(RUN_ATTR, run.run_id)
        return run

    def on_checkpoint(self, trial: optuna.Trial, run: TrackedRun, settings):
        prune = self.context.cfg.search.pruning != "none"
        cycle = 2 * settings.n_s  # the pruner judges only at ends of cycles; asking elsewhere costs a storage read

        def report(step: int, metrics: dict) -> None:
            run.checkpoint(step, metrics)
            fault("trial")
            trial.report(metrics[OBJECTIVE], step)
            if prune and step % cycle == 0 and step < settings.total_steps and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: val acc {metrics[OBJECTIVE]:.4f} "
                                         f"(by the {self.context.cfg.search.pruning} pruner)")

        return report

    @staticmethod
    def record(trial: optuna.Trial, run: TrackedRun) -> None:
        """The trial keeps what its run measured and how it ended, whatever happened."""
        trial.set_user_attr("steps_trained", run.history["step"][-1] if run.history["step"] else 0)
        if run.best_val_accuracy is not None:
            trial.set_user_attr("best_val_accuracy", run.best_val_accuracy)
            trial.set_user_attr("final_val_accuracy", run.final_val_accuracy)
        if run.reason:
            trial.set_user_attr(REASON_ATTR, run.reason)


def describe(values: dict) -> str:
    """'λ = 0.00123, hidden = 200': the values of a trial, for its progress line and run description."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{'λ' if key == 'train.lambda' else key.partition('.')[2]} = {fmt(v)}"
                     for key, v in values.items())
