"""The Optuna objective: sample λ, train with a tracked child run, report checkpoints, prune."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from model.cifar10 import Dataset
from model.train import DivergedError, train
from pipeline import plots
from pipeline.config import StageConfig
from pipeline.progress import Progress
from pipeline.tracking import Tracker

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class SurplusTrial(Exception):
    """Another worker took the stage's last slot while this trial was being created."""


def owner() -> dict:
    """Who runs a trial: lets a later run tell an orphan (its process died) from a live one."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


@dataclass
class StageRun:
    """What every trial of one stage shares."""

    stage: str
    study_name: str
    cfg: StageConfig
    data: Dataset
    tracker: Tracker
    parent_run_id: str
    bounds: tuple[float, float]
    progress: Progress
    params: dict = field(default_factory=dict)  # logged on every child run besides λ


class Objective:
    """Callable objective: returns the final validation accuracy of a training with the sampled λ."""

    def __init__(self, run: StageRun):
        self.run = run

    def __call__(self, trial: optuna.Trial) -> float:
        r = self.run
        self._claim(trial)
        for key, value in (owner() | {"stage": r.stage}).items():
            trial.set_user_attr(key, value)
        lam = trial.suggest_float("lambda", *r.bounds, log=True)
        settings = r.cfg.train_settings(lam)
        name = f"{r.stage}-{trial.number}"
        run_id = r.tracker.create_run(
            name, {"study": r.study_name, "stage": r.stage, "trial": trial.number, "role": "trial", "state": "RUNNING"},
            parent_run_id=r.parent_run_id,
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("n_val", len(r.data.y_val))  # the accuracy's standard error needs it
        r.tracker.log_params(run_id, r.params | {"lambda": lam, "trial": trial.number})
        history = {"step": []}
        metrics = r.tracker.metric_buffer(run_id)
        prune = r.cfg["search.prune"]
        cycle = 2 * settings.n_s  # the pruner judges only at ends of cycles; asking elsewhere costs a storage read

        def on_checkpoint(step: int, m: dict) -> None:
            metrics.add(step, m)
            history["step"].append(step)
            for k, v in m.items():
                history.setdefault(k, []).append(v)
            r.progress.checkpoint(step, m)
            trial.report(m["val_accuracy"], step)
            if prune and step % cycle == 0 and step < settings.total_steps and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: val acc {m['val_accuracy']:.4f} below the median")

        r.progress.trial_start(name, lam, settings.total_steps)
        state, status, reason = "FAIL", "FAILED", ""
        try:
            train(r.data.X_train, r.data.y_train, r.data.X_val, r.data.y_val, settings, on_checkpoint)
            state, status = "COMPLETE", "FINISHED"
        except optuna.TrialPruned as e:
            state, status, reason = "PRUNED", "FINISHED", str(e)
            raise
        except DivergedError as e:
            # The study goes on: a diverged λ is a result (too large), not a crash.
            state, reason = "PRUNED", str(e)
            trial.set_user_attr("diverged_at_step", e.step)
            raise optuna.TrialPruned(reason) from e
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as Terminated
            status, reason = "KILLED", f"interrupted ({type(e).__name__})"
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            raise
        finally:
            self._close(trial, run_id, history, metrics, state, status, reason)
        return history["val_accuracy"][-1]

    def _claim(self, trial: optuna.Trial) -> None:
        """Exactly n_trials: when racing workers created one trial too many, the later number yields."""
        study, n = trial.study, self.run.cfg["search.n_trials"]
        earlier = [t for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number]
        if len(earlier) >= n:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the stage already has {n} trials")

    def _close(self, trial, run_id, history, metrics, state, status, reason) -> None:
        """Whatever happened, the child run gets its metrics, figure, final state and a terminal status."""
        r = self.run
        try:
            if history["step"]:
                best, final = max(history["val_accuracy"]), history["val_accuracy"][-1]
                trial.set_user_attr("best_val_accuracy", best)
                trial.set_user_attr("final_val_accuracy", final)
                metrics.add(history["step"][-1], {"best_val_accuracy": best})
                metrics.flush()  # the buffer holds only checkpoints, so nothing is left when there were none
                fig = plots.curves(history, f"{r.study_name} trial {trial.number}: λ = {trial.params['lambda']:.3g}")
                r.tracker.log_figure(run_id, fig, "curves.png")
            if reason:
                trial.set_user_attr("reason", reason)
            r.tracker.set_tags(run_id, {"state": state, **({"reason": reason} if reason else {})})
        finally:
            r.tracker.set_status(run_id, status)
