"""The model registry: the final model saved as an MLflow pyfunc, registered, and loaded back for predict.

Everything goes through MlflowClient and explicit URIs: no process-global tracking or registry URI.
The model ships only what `predict` needs: the network's forward pass and the normalisation (in its
weights file; a whitening is folded into the first layer), not the data loader or the trainer.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np

from model.network import Params
from pipeline.errors import UserError
from pipeline.names import MODEL_ALIAS, MODEL_NAME, MODEL_URI
from pipeline.settings import legacy
from pipeline.urls import check_reachable, redact, redact_text, sqlite_path

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
MODEL = Path(__file__).resolve().parents[2] / "model"
SHIPPED = ("network.py", "augment.py")  # the forward pass and the mirror image test-time averaging needs
ARTIFACT = "model"


def register(tracker, run_id: str, params: Params, data, classes, description: str, tta_flip: bool = False) -> str:
    """Log the pyfunc model on the run, register it and move the champion alias to the new version.

    A whitened run's whitening is folded into the first layer (model.whiten.Whitening.fold), so the registered
    model still takes raw pixels, standardises them and is 3072 → m → 10. Its whitening commutes with mirroring,
    so mirror averaging on the folded model is the mirror averaging the run was tested with.
    """
    whitening = getattr(data, "whitening", None)
    if whitening is not None:
        params = whitening.fold(params)
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import ModelSignature
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, data.mean.shape[0]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classes)))]),
    )
    client = tracker.client
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.npz"
        np.savez(weights, **dict(params.items()), mean=data.mean, std=data.std, classes=np.array(classes),
                 tta_flip=np.array(tta_flip))
        code = Path(tmp) / "code" / "model"  # importable as model.network, like in this repository
        code.mkdir(parents=True)
        (code / "__init__.py").write_text("")
        for name in SHIPPED:
            shutil.copy(MODEL / name, code / name)
        saved = Path(tmp) / ARTIFACT
        with without_type_hint_nag():
            mlflow.pyfunc.save_model(
                saved, python_model=str(PYFUNC_CODE), artifacts={"weights": str(weights)}, code_paths=[str(code)],
                signature=signature, input_example=np.rint(data.mean[None, :]).astype(np.float32),  # the mean image
                pip_requirements=[f"numpy=={np.__version__}"],
                metadata={"classes": list(classes), "data_digest": data.digest} | (
                    {"whiten_digest": whitening.digest} if whitening is not None else {}),
            )
        client.log_artifacts(run_id, str(saved), ARTIFACT)
    try:
        client.create_registered_model(MODEL_NAME)
    except MlflowException as e:  # it exists after the first final training; any other refusal is the error
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT}"
    version = client.create_model_version(MODEL_NAME, source, run_id=run_id, tags={"run_id": run_id},
                                          description=description)
    client.set_registered_model_alias(MODEL_NAME, MODEL_ALIAS, version.version)
    return version.version


def load_champion(tracking_uri: str):
    """The pyfunc model registered as cifar10-mlp@champion; one UserError line when there is none."""
    missing = UserError(f"no model registered as {MODEL_NAME}@{MODEL_ALIAS} in {redact(tracking_uri)}; "
                        "run `hpsearch train-final` first")
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise missing  # don't create an empty store just to find nothing in it
    check_reachable(tracking_uri)

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tmp = tempfile.mkdtemp(prefix="hpsearch-model-")
    try:
        version = client.get_model_version_by_alias(MODEL_NAME, MODEL_ALIAS)
        with without_type_hint_nag():
            if legacy.logged_model(version.source):
                local = mlflow.artifacts.download_artifacts(version.source, dst_path=tmp, tracking_uri=tracking_uri,
                                                            registry_uri=tracking_uri)
            else:
                local = client.download_artifacts(version.run_id, ARTIFACT, tmp)
            path = list(sys.path)
            try:
                model = mlflow.pyfunc.load_model(local)
            finally:
                sys.path[:] = path  # its code folder served the load; this process's imports stay its own
        weakref.finalize(model, shutil.rmtree, tmp, ignore_errors=True)  # the folder lives as long as the model
        return model
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, MlflowException):
            raise
        if e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise missing from None
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"cannot load {MODEL_URI} from {redact(tracking_uri)}: {redact_text(first)[:300]}") from None


@contextlib.contextmanager
def without_type_hint_nag():
    """MLflow warns "Add type hints to the `predict` method" whenever it saves or loads our PythonModel (its
    signature is explicit), and its own warnings.simplefilter("once") overrides any filter: drop it where
    it is shown."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def quiet(message, *args, **kwargs):
            if "Add type hints" not in str(message):
                show(message, *args, **kwargs)

        warnings.showwarning = quiet
        yield
