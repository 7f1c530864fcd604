"""Single tracked trainings outside a study: `train` (the report's exercises) and `train-final`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.cifar10 import CLASSES
from model.network import evaluate
from model.train import DivergedError, train
from pipeline import registry
from pipeline.config import Settings
from pipeline.confirm import chosen_settings
from pipeline.data_input import DataInput
from pipeline.errors import UserError
from pipeline.names import LAMBDA, MODEL_ALIAS, MODEL_NAME, SEARCH_STAGES
from pipeline.objective import data_params
from pipeline.results import best_trial, trial_settings
from pipeline.session import Session
from pipeline.stages import settled_study
from pipeline.tracking import TrackedRun, code_version


@dataclass
class RunResult:
    run_id: str
    name: str
    lam: float
    test_accuracy: float
    val_accuracy: float
    model_version: str | None = None
    reused: bool = False


def train_run(session: Session, cfg: Settings, name: str, role: str, register: bool = False,
              tags: dict | None = None) -> RunResult:
    """One training with its own MLflow run: params, curves, test accuracy (and the registered model)."""
    data = session.dataset(cfg.data.split, cfg.data.val_size, cfg.data.val_fold, cfg.data.whitening)
    settings = cfg.train_settings()
    lam = settings.lam
    run = TrackedRun(
        session.tracker, name, what=name, values=f"λ = {lam:.3g}", steps=settings.total_steps,
        tags={"stage": name, "role": role, "config_digest": cfg.digest(), "data_digest": data.digest, **(tags or {})},
        params=cfg.flat() | ({f"log10_{LAMBDA}": math.log10(lam)} if lam > 0 else {}) | data_params(data) | {
            LAMBDA: lam, "code_version": code_version(), "config": cfg.source},
        data=DataInput(data, cfg.data.val_fold, session.data_origin), terminal=session.terminal,
    )
    try:
        with run:
            result = train(data.X_train, data.y_train, data.X_val, data.y_val, settings, run.checkpoint)
            test = evaluate(result.params, data.X_test, data.y_test, lam, tta_flip=settings.tta_flip)
            run.log_final({f"test_{k}": v for k, v in test.items()})
            if settings.tta_flip:  # the setting's worth, measured: the same model without the mirror average
                plain = evaluate(result.params, data.X_test, data.y_test, lam)
                run.log_final({"test_accuracy_without_tta": plain["accuracy"]})
            if result.last is not None:  # averaging's worth, measured: the last weights alone, same test
                last = evaluate(result.last, data.X_test, data.y_test, lam, tta_flip=settings.tta_flip)
                run.log_final({"test_accuracy_last_weights": last["accuracy"],
                               "val_accuracy_averaged": result.final()})
            version = None
            if register:
                version = registry.register(session.tracker, run.run_id, result.params, data, CLASSES,
                                            f"{name} run {run.run_id}", settings.tta_flip)
                session.tracker.set_tags(run.run_id, {"model_version": version})
    except DivergedError as e:
        raise UserError(f"{name}: {e}") from None
    session.terminal.trial_end(name, "COMPLETE", result.final(), 1, 1, None)
    return RunResult(run.run_id, name, lam, test["accuracy"], result.final(), version)


def final_settings(session: Session, cfg: Settings, lam: float | None, confirmed: bool = True) -> tuple[dict, str]:
    """What the final trains with, and a line saying where it came from: --lambda if given, else the confirm
    stage's choice when that stage exists (and `confirmed`), else the searched trial cfg's rule picks."""
    if lam is not None:
        if lam < 0:
            raise UserError(f"--lambda must be ≥ 0; got {lam}")
        return {"train.lambda": lam}, "--lambda"
    if confirmed and (choice := chosen_settings(session)) is not None:
        return choice
    for stage in SEARCH_STAGES:  # every worker promotes from the same settled trials
        settled_study(session, stage)
    best = best_trial(session, cfg.search.select)
    if best is None:
        raise UserError("no finished trial in the coarse or fine study: run `hpsearch search coarse` first, "
                        "or pass --lambda")
    top = best_trial(session, "best")
    why = "best" if best is top else f"largest λ within one standard error of the best ({top.value:.4f})"
    stage = best.user_attrs.get("stage", "search")
    return trial_settings(best), f"{stage} trial {best.number}, val acc {best.value:.4f}: {why}"


def previous_final(session: Session, cfg: Settings):
    """A finished final run with the same settings (λ included), so `pipeline` reruns don't retrain."""
    runs = session.tracker.find_runs(role="final", config_digest=cfg.digest())
    return next((r for r in reversed(runs) if r.info.status == "FINISHED"), None)


def model_line(result: RunResult) -> str:
    return f"models:/{MODEL_NAME}/{result.model_version} (alias {MODEL_ALIAS})"
