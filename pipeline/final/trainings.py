"""Single tracked trainings outside a study: `train` (the report's exercises) and `train-final`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.cifar10 import CLASSES
from model.network import evaluate
from model.train import DivergedError, train
from pipeline.errors import UserError
from pipeline.names import DIGEST_ATTR, LAMBDA, MODEL_ALIAS, MODEL_NAME, MODEL_VERSION_TAG
from pipeline.search.objective import data_params
from pipeline.session import Session
from pipeline.settings.config import Settings
from pipeline.tracking import registry
from pipeline.tracking.data_input import DataInput
from pipeline.tracking.run import TrackedRun
from pipeline.tracking.tracker import code_version
from pipeline.workers import fault


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
        tags={"stage": name, "role": role, DIGEST_ATTR: cfg.digest(), "data_digest": data.digest, **(tags or {})},
        params=cfg.flat() | ({f"log10_{LAMBDA}": math.log10(lam)} if lam > 0 else {}) | data_params(data) | {
            LAMBDA: lam, "code_version": code_version(), "config": cfg.source},
        data=DataInput(data, cfg.data.val_fold, session.data_origin), terminal=session.terminal,
    )
    try:
        with run:
            result = train(data.X_train, data.y_train, data.X_val, data.y_val, settings, checkpoint(run, role))
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
                session.tracker.set_tags(run.run_id, {MODEL_VERSION_TAG: version})
    except DivergedError as e:
        raise UserError(f"{name}: {e}") from None
    session.terminal.trial_end(name, "COMPLETE", result.final(), 1, 1, None)
    return RunResult(run.run_id, name, lam, test["accuracy"], result.final(), version)


def checkpoint(run: TrackedRun, role: str):
    """The run's checkpoint; in the final, also a test's fault point."""
    if role != "final":
        return run.checkpoint

    def final_checkpoint(step: int, metrics: dict) -> None:
        run.checkpoint(step, metrics)
        fault("final")

    return final_checkpoint


def model_line(result: RunResult) -> str:
    return f"models:/{MODEL_NAME}/{result.model_version} (alias {MODEL_ALIAS})"
