"""Single tracked trainings: `train` (the report's exercises) and `train-final` (the promoted λ)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.cifar10 import CLASSES
from model.network import Params, evaluate
from model.train import DivergedError, train
from pipeline import plots
from pipeline.config import StageConfig
from pipeline.errors import UserError
from pipeline.stages import Session, best_trial
from pipeline.tracking import code_version, without_type_hint_nag

MODEL_NAME = "cifar10-mlp"
ALIAS = "champion"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
MODEL_PACKAGE = Path(__file__).resolve().parents[1] / "model"


@dataclass
class RunResult:
    run_id: str
    name: str
    lam: float
    test_accuracy: float
    val_accuracy: float
    model_version: str | None = None
    reused: bool = False


def final_lambda(session: Session, lam: float | None, rule: str = "best") -> tuple[float, str]:
    """--lambda if given, else the completed trial over the coarse and fine studies that `rule` picks."""
    if lam is not None:
        if lam < 0:
            raise UserError(f"--lambda must be ≥ 0; got {lam}")
        return lam, "--lambda"
    best = best_trial(session, rule)
    if best is None:
        raise UserError(
            "no finished trial in the coarse or fine study: run `hpsearch search coarse` first, or pass --lambda"
        )
    top = best_trial(session, "best")
    why = "best" if best is top else f"largest λ within one standard error of the best ({top.value:.4f})"
    return best.params["lambda"], f"trial {best.number}, val acc {best.value:.4f}: {why}"


def train_run(
    session: Session, cfg: StageConfig, name: str, lam: float, role: str, register: bool = False,
    extra_tags: dict | None = None,
) -> RunResult:
    """One training with its own MLflow run: params, curves, test accuracy (and the model, when final)."""
    data = session.dataset(cfg["data.split"], cfg["data.val_size"])
    tracker = session.tracker
    settings = cfg.train_settings(lam)
    digest = cfg.with_values(train__lambda=lam).digest()
    tags = {"stage": name, "role": role, "config_digest": digest, "data_digest": data.digest, **(extra_tags or {})}
    run_id = tracker.create_run(name, tags)
    tracker.log_params(run_id, cfg.flat() | {
        "lambda": lam, "train.lambda": lam, "data.digest": data.digest, "data.n_train": len(data.y_train),
        "data.n_val": len(data.y_val), "code_version": code_version(), "config": cfg.source,
    })
    metrics = tracker.metric_buffer(run_id)

    def on_checkpoint(step, m):
        metrics.add(step, m)
        session.progress.checkpoint(step, m)

    session.progress.trial_start(name, lam, settings.total_steps)
    status = "FAILED"
    try:
        result = train(data.X_train, data.y_train, data.X_val, data.y_val, settings, on_checkpoint)
        test = evaluate(result.params, data.X_test, data.y_test, lam)
        metrics.add(settings.total_steps, {f"test_{k}": v for k, v in test.items()})
        metrics.flush()
        title = f"{name}: λ = {lam:.3g}, test acc {test['accuracy']:.4f}"
        tracker.log_figure(run_id, plots.curves(result.history, title), "curves.png")
        version = log_model(session, run_id, result.params, data, name) if register else None
        status = "FINISHED"
    except DivergedError as e:
        tracker.set_tags(run_id, {"reason": str(e)})
        raise UserError(f"{name}: {e}") from None
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated
        status = "KILLED"
        raise
    finally:
        metrics.flush()
        tracker.set_status(run_id, status)
    session.progress.trial_end(name, "COMPLETE", result.final(), 1, 1, None)
    return RunResult(run_id, name, lam, test["accuracy"], result.final(), version)


def log_model(session: Session, run_id: str, params: Params, data, name: str) -> str:
    """Log the pyfunc model on the run, register it and move the champion alias to the new version."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, data.mean.shape[0]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(CLASSES)))]),
    )
    client = session.tracker.client
    mlflow.set_tracking_uri(session.tracker.uri)  # pyfunc.log_model logs through the fluent API
    mlflow.set_registry_uri(session.tracker.uri)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.npz"
        np.savez(weights, **dict(params.items()), mean=data.mean, std=data.std, classes=np.array(CLASSES))
        with mlflow.start_run(run_id=run_id), without_type_hint_nag():
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_CODE), artifacts={"weights": str(weights)},
                code_paths=[str(MODEL_PACKAGE)], signature=signature,
                input_example=np.rint(data.mean[None, :]).astype(np.float32),  # the mean image, as pixels
                pip_requirements=[f"numpy=={np.__version__}"],
                metadata={"classes": list(CLASSES), "data_digest": data.digest},
            )
    version = mlflow.register_model(info.model_uri, MODEL_NAME, tags={"run_id": run_id})
    client.set_registered_model_alias(MODEL_NAME, ALIAS, version.version)
    client.update_model_version(MODEL_NAME, version.version, description=f"{name} run {run_id}")
    return version.version


def previous_final(session: Session, cfg: StageConfig, lam: float):
    """A finished final run with the same settings and λ, so `pipeline` reruns don't retrain."""
    digest = cfg.with_values(train__lambda=lam).digest()
    runs = session.tracker.find_runs(role="final", config_digest=digest)
    return next((r for r in reversed(runs) if r.info.status == "FINISHED"), None)


def train_final(session: Session, cfg: StageConfig, lam: float | None, force: bool = False) -> RunResult:
    lam, source = final_lambda(session, lam, cfg["search.select"])
    if not force:
        run = previous_final(session, cfg, lam)
        if run is not None:
            m = run.data.metrics
            version = run.data.tags.get("hpsearch.model_version")
            return RunResult(run.info.run_id, "final", lam, m.get("test_accuracy", float("nan")),
                             m.get("val_accuracy", float("nan")), version, reused=True)
    session.progress.say(f"final training with λ = {lam:.4g} ({source})")
    result = train_run(session, cfg, "final", lam, role="final", register=True, extra_tags={"lambda_source": source})
    session.tracker.set_tags(result.run_id, {"model_version": result.model_version})
    return result
