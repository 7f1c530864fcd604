"""The Optuna objective: suggest λ, train inside a tracked child run, report checkpoints, return."""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna

from model.train import DivergedError, train
from pipeline.config import Settings
from pipeline.names import LAMBDA, OBJECTIVE
from pipeline.tracking import TrackedRun, Tracker, log10
from pipeline.workers import claim_slot, owner


@dataclass
class Stage:
    """What every trial of one stage shares."""

    name: str
    study_name: str
    cfg: Settings
    data: object  # the Dataset
    tracker: Tracker
    parent_run_id: str
    bounds: tuple[float, float]
    terminal: object
    params: dict = field(default_factory=dict)  # logged on every trial's run besides its settings


class Objective:
    """Callable objective: the final validation accuracy of a training with the suggested λ."""

    def __init__(self, stage: Stage):
        self.stage = stage

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.stage
        claim_slot(trial, s.cfg.search.n_trials)
        for key, value in (owner() | {"stage": s.name, "n_val": len(s.data.y_val)}).items():
            trial.set_user_attr(key, value)
        lam = trial.suggest_float(LAMBDA, *s.bounds, log=True)
        settings = s.cfg.replace({"train.lambda": lam}).train_settings()
        run = self.tracked_run(trial, lam, settings.total_steps)
        try:
            with run:
                try:
                    train(s.data.X_train, s.data.y_train, s.data.X_val, s.data.y_val, settings,
                          self.on_checkpoint(trial, run, settings))
                except DivergedError as e:  # a λ too large is a result, not a crash: the study goes on
                    trial.set_user_attr("diverged_at_step", e.step)
                    raise optuna.TrialPruned(str(e)) from e
        finally:
            self.record(trial, run)
        return run.final_val_accuracy

    def tracked_run(self, trial: optuna.Trial, lam: float, steps: int) -> TrackedRun:
        s = self.stage
        run = TrackedRun(
            s.tracker, f"{s.name}-{trial.number}", what=f"{s.name} trial {trial.number}", values=f"λ = {lam:.3g}",
            steps=steps, tags={"study": s.study_name, "stage": s.name, "trial": trial.number, "role": "trial"},
            params=s.cfg.replace({"train.lambda": lam}).flat() | s.params | {
                LAMBDA: lam, f"log10_{LAMBDA}": log10(lam), "trial": trial.number},
            parent_run_id=s.parent_run_id, terminal=s.terminal, outcomes=(optuna.TrialPruned,),
        )
        trial.set_user_attr("mlflow_run_id", run.run_id)
        return run

    def on_checkpoint(self, trial: optuna.Trial, run: TrackedRun, settings):
        prune = self.stage.cfg.search.prune
        cycle = 2 * settings.n_s  # the pruner judges only at ends of cycles; asking elsewhere costs a storage read

        def report(step: int, metrics: dict) -> None:
            run.checkpoint(step, metrics)
            trial.report(metrics[OBJECTIVE], step)
            if prune and step % cycle == 0 and step < settings.total_steps and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: val acc {metrics[OBJECTIVE]:.4f} below the median")

        return report

    @staticmethod
    def record(trial: optuna.Trial, run: TrackedRun) -> None:
        """The trial keeps what its run measured and how it ended, whatever happened."""
        if run.best_val_accuracy is not None:
            trial.set_user_attr("best_val_accuracy", run.best_val_accuracy)
            trial.set_user_attr("final_val_accuracy", run.final_val_accuracy)
        if run.reason:
            trial.set_user_attr("reason", run.reason)
