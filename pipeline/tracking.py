"""The MLflow layout: one experiment, one parent run per stage, one child run per trial.

Everything here goes through MlflowClient with explicit run ids (no fluent "active run" state), so
several trials, stages or worker processes never mix up their runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

from pipeline.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
TAG = "hpsearch"  # prefix of our tags: hpsearch.study, hpsearch.stage, hpsearch.role, hpsearch.state, ...
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
TERMINAL = ("FINISHED", "FAILED", "KILLED")


@functools.cache
def code_version() -> str:
    """The git commit of this checkout ('+dirty' when it has local changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by ***: safe to print."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def absolute_uri(uri: str) -> str:
    """sqlite:///relative.db → sqlite:////abs/relative.db. MLflow caches stores by URI string, so a
    relative one would keep pointing at the folder it was first opened from."""
    db = sqlite_path(uri)
    if db is None:
        return uri
    query = uri.partition("?")[2]
    return f"sqlite:///{db.resolve()}" + (f"?{query}" if query else "")


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes on this machine (released when the process dies)."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer (MLflow would retry for minutes).

    Asks a real API route, not /health: a server started without this host in --allowed-hosts answers
    /health but refuses the API.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=hpsearch-probe"
    try:
        urllib.request.urlopen(probe, timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise UserError(f"MLflow tracking server {uri} refused the request (HTTP {e.code}); check its "
                            "--allowed-hosts and credentials") from None
        if e.code >= 500 or e.code == 404 and "RESOURCE_DOES_NOT_EXIST" not in e.read().decode(errors="replace"):
            raise UserError(f"{uri} does not answer like an MLflow tracking server (HTTP {e.code})") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it or fix --tracking-uri"
        ) from None


class Tracker:
    """The project's MLflow experiment, its stage (parent) runs and trial (child) runs."""

    def __init__(self, uri: str | None, experiment: str):
        from mlflow.tracking import MlflowClient

        # After the import: MLflow sets its own level then. Not "Creating initial MLflow database tables...".
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = uri or DEFAULT_TRACKING_URI
        check_reachable(self.uri)
        db = sqlite_path(self.uri)
        self.artifact_root = None
        if db is not None:
            self.artifact_root = _prepare_local_store(db)
            self.uri = absolute_uri(self.uri)
            db = sqlite_path(self.uri)
        lock = file_lock(db.with_name(db.name + ".lock")) if db is not None else contextlib.nullcontext()
        with lock, _as_user_error(f"MLflow tracking store {self.uri}"):
            # The client creates a new sqlite store's schema: not safe from several processes at once.
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            self.experiment_id = self._experiment(experiment)
        self.experiment = experiment

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise UserError(f"experiment {name!r} is deleted in {self.uri}; restore it or pick --experiment")
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.artifact_root)
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # ---- runs -------------------------------------------------------------------------------
    def find_runs(self, **tags) -> list:
        """Active runs of this experiment carrying all the given hpsearch.* tags, oldest first."""
        where = " and ".join(f"tags.`{TAG}.{k}` = '{v}'" for k, v in tags.items())
        return list(self.client.search_runs([self.experiment_id], where, order_by=["attributes.start_time ASC"]))

    def create_run(self, name: str, tags: Mapping[str, object], parent_run_id: str | None = None) -> str:
        all_tags = {f"{TAG}.{k}": str(v) for k, v in tags.items()}
        all_tags["mlflow.source.git.commit"] = code_version()
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id  # what nested runs carry in the UI
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id

    def run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage == "active" and run.info.experiment_id == self.experiment_id

    def children(self, parent_run_id: str, status: str | None = None) -> list:
        where = f"tags.mlflow.parentRunId = '{parent_run_id}'"
        if status:
            where += f" and attributes.status = '{status}'"
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], where, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit of params per call
            self.client.log_batch(run_id, params=items[i : i + 100])

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(f"{TAG}.{k}", str(v)[:5000]) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        buffer = self.metric_buffer(run_id)
        buffer.add(step, metrics)
        buffer.flush()

    def metric_buffer(self, run_id: str) -> MetricBuffer:
        return MetricBuffer(self.client, run_id)

    def log_figure(self, run_id: str, figure, name: str) -> None:
        self.client.log_figure(run_id, figure, name, save_kwargs={"dpi": 100})

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING (on resume) or a terminal status: FINISHED, FAILED, KILLED."""
        if status in TERMINAL:
            self.client.set_terminated(run_id, status)
        else:
            self.client.update_run(run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status


class MetricBuffer:
    """Collects metric points and sends them in few log_batch calls (flushes when large or old)."""

    def __init__(self, client, run_id: str, max_points: int = 500, max_age_s: float = 10.0):
        self.client, self.run_id = client, run_id
        self.points: list = []
        self.max_points, self.max_age_s = max_points, max_age_s
        self.last_flush = time.monotonic()

    def add(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.points.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        if len(self.points) >= self.max_points or time.monotonic() - self.last_flush > self.max_age_s:
            self.flush()

    def flush(self) -> None:
        while self.points:
            chunk, self.points = self.points[:MAX_BATCH], self.points[MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self.last_flush = time.monotonic()


def _prepare_local_store(db: Path) -> str:
    """Create the store's folder; artifacts go beside the database. Returns the artifact root URI."""
    folder = db.parent.resolve() if db.parent != Path("") else Path.cwd()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"tracking store folder {folder} is not writable ({e.strerror}); fix its permissions or "
                        "set --tracking-uri") from None
    return (folder / "artifacts").as_uri()


@contextlib.contextmanager
def _as_user_error(what: str):
    """Turn a store that cannot be opened into one line instead of a stack of SQLAlchemy frames."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} cannot be used: {first[:300]}") from None


@contextlib.contextmanager
def without_type_hint_nag():
    """MLflow warns "Add type hints to the `predict` method" whenever it logs or loads our PythonModel (its
    signature is explicit), and its own warnings.simplefilter("once") overrides any filter: drop it where
    it is shown."""
    import warnings

    with warnings.catch_warnings():
        show = warnings.showwarning

        def quiet(message, *args, **kwargs):
            if "Add type hints" not in str(message):
                show(message, *args, **kwargs)

        warnings.showwarning = quiet
        yield


def ensure_env_defaults() -> None:
    """Keep MLflow's HTTP retries short so an unreachable server fails in seconds, not minutes."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars between our lines
