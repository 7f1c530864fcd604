"""The MLflow layout: one experiment, one parent run per stage, one child run per training.

Everything goes through MlflowClient with explicit run ids (no fluent "active run" state), so trials, stages
and workers never mix up their runs. `TrackedRun` is the one lifecycle every training shares.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from pipeline import urls
from pipeline.errors import UserError
from pipeline.names import TAG_PREFIX
from pipeline.tracking import links, plots
from pipeline.tracking.data_input import DataInput
from pipeline.urls import absolute_uri, check_reachable, redact, redact_text, sqlite_path

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MAX_PARAMS = 100  # MLflow's limit of params per log_batch call
TERMINAL = ("FINISHED", "FAILED", "KILLED")
NOTE = "mlflow.note.content"  # the run description the MLflow UI shows


@functools.cache
def code_version() -> str:
    """The git commit of this checkout ('+dirty' when it has local changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[2]
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


class Tracker:
    """The project's MLflow experiment, its stage (parent) runs and training (child) runs."""

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        check_reachable(uri)
        db = sqlite_path(uri)
        self.artifact_root = None
        if db is not None:
            self.artifact_root = _prepare_local_store(db)
            uri = absolute_uri(uri)
            db = sqlite_path(uri)
        self.uri = uri
        self.lock_path = db.with_name(db.name + ".lock") if db is not None else None
        with self.lock(), _as_user_error(f"MLflow tracking store {redact(uri)}"):
            # The client creates a new sqlite store's schema: not safe from several processes at once.
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            self.experiment_id = self._experiment(experiment)
        self.experiment = experiment

    def lock(self):
        """A lock between local processes sharing a sqlite store (a no-op for a server)."""
        from filelock import FileLock  # flock on POSIX: released when the process dies

        return FileLock(self.lock_path) if self.lock_path is not None else contextlib.nullcontext()

    def _experiment(self, name: str) -> str:
        """The experiment's id, created when missing, with the tags the MLflow UI opens its runs view from."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            urls.check_artifacts_served(self.uri)  # before creating it: on a server, artifacts go through the server
            try:
                self.client.create_experiment(name, artifact_location=self.artifact_root)
            except MlflowException:  # another worker created it first
                pass
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise UserError(f"experiment {name!r} could not be created in {redact(self.uri)}")
        if found.lifecycle_stage == "deleted":
            raise UserError(f"experiment {name!r} is deleted in {redact(self.uri)}; restore it or pick --experiment")
        urls.check_artifact_location(self.uri, name, found.artifact_location)
        for key, value in links.experiment_tags(found.creation_time).items():
            if found.tags.get(key) != value:
                with contextlib.suppress(MlflowException):  # workers starting together race to set the same tag
                    self.client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id

    # ---- runs -------------------------------------------------------------------------------
    def find_runs(self, **tags) -> list:
        """Active runs of this experiment carrying all the given hpsearch.* tags, oldest first."""
        where = " and ".join(f"tags.`{TAG_PREFIX}.{k}` = '{v}'" for k, v in tags.items())
        return list(self.client.search_runs([self.experiment_id], where, order_by=["attributes.start_time ASC"]))

    def create_run(self, name: str, tags: Mapping[str, object], parent_run_id: str | None = None) -> str:
        all_tags = {f"{TAG_PREFIX}.{k}": str(v) for k, v in tags.items()}
        all_tags["mlflow.source.git.commit"] = code_version()
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id  # what nested runs carry in the UI
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage == "active" and run.info.experiment_id == self.experiment_id

    def children(self, parent_run_id: str, status: str | None = None) -> list:
        where = f"tags.mlflow.parentRunId = '{parent_run_id}'"
        where += f" and attributes.status = '{status}'" if status else ""
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], where, max_results=1000, page_token=token)
            runs.extend(page)
            if not (token := page.token):
                return runs

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact_text(str(v))) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS])

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        """hpsearch.* tags (the mlflow.* ones, such as the description, pass through as they are)."""
        from mlflow.entities import RunTag

        named = {(k if k.startswith("mlflow.") else f"{TAG_PREFIX}.{k}"): v for k, v in tags.items()}
        self.client.log_batch(run_id, tags=[RunTag(k, redact_text(str(v))[:5000]) for k, v in named.items()])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        buffer = MetricBuffer(self.client, run_id)
        buffer.add(step, metrics)
        buffer.flush()

    def log_figure(self, run_id: str, figure, name: str) -> None:
        self.client.log_figure(run_id, figure, name, save_kwargs={"dpi": 100})

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_input(self, run_id: str, dataset) -> None:
        """The runs view's Datasets column; of two workers inserting one dataset at once, the loser's retry finds it."""
        from mlflow.exceptions import MlflowException
        try:
            self.client.log_inputs(run_id, datasets=[dataset])
        except MlflowException:
            self.client.log_inputs(run_id, datasets=[dataset])

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING (on resume) or a terminal status: FINISHED, FAILED, KILLED."""
        if status in TERMINAL:
            self.client.set_terminated(run_id, status)
        else:
            self.client.update_run(run_id, status=status)


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


class TrackedRun:
    """One training's MLflow run from creation to a terminal status, whatever ends it.

    Created with its params and its data as an MLflow dataset input (data_input.py). Use as a context manager
    around the training and pass `checkpoint` as its callback. On exit:
    no exception → FINISHED, state COMPLETE; an exception listed in `outcomes` (a pruned trial) →
    FINISHED, state PRUNED with the reason; Ctrl-C or SIGTERM → KILLED; anything else → FAILED with the
    reason. In every case the buffered metrics, best/final validation accuracy, the curves figure, the
    state tags and a one-line description are written first. The exception itself propagates.
    """

    def __init__(self, tracker: Tracker, name: str, *, what: str, values: str, steps: int,
                 tags: Mapping[str, object], params: Mapping[str, object], data: DataInput,
                 parent_run_id: str | None = None, terminal=None, outcomes: tuple[type[BaseException], ...] = ()):
        self.tracker, self.name, self.terminal, self.outcomes = tracker, name, terminal, outcomes
        self.describe, self.values, self.steps = f"{what}, {values}", values, steps
        self.run_id = tracker.create_run(name, {**tags, "state": "RUNNING"}, parent_run_id=parent_run_id)
        tracker.set_tags(self.run_id, {NOTE: f"{self.describe}: running"})
        tracker.log_params(self.run_id, params)
        tracker.log_input(self.run_id, data.entity())
        self.metrics = MetricBuffer(tracker.client, self.run_id)
        self.history: dict[str, list] = {"step": []}
        self.state = self.reason = None

    def __enter__(self) -> TrackedRun:
        if self.terminal is not None:
            self.terminal.trial_start(self.name, self.values, self.steps)
        return self

    def checkpoint(self, step: int, metrics: Mapping[str, float]) -> None:
        """The training's callback: buffer the metrics, keep them for the figure, move the progress bar."""
        self.metrics.add(step, metrics)
        self.history["step"].append(step)
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v)
        if self.terminal is not None:
            self.terminal.checkpoint(step, metrics)

    def log_final(self, metrics: Mapping[str, float]) -> None:
        """Metrics measured after training (test accuracy), at the last step."""
        self.metrics.add(self.history["step"][-1] if self.history["step"] else 0, metrics)

    @property
    def best_val_accuracy(self) -> float | None:
        return max(self.history.get("val_accuracy", []), default=None)

    @property
    def final_val_accuracy(self) -> float | None:
        return (self.history.get("val_accuracy") or [None])[-1]

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            state, status, reason = "COMPLETE", "FINISHED", ""
        elif isinstance(exc, self.outcomes):
            state, status, reason = "PRUNED", "FINISHED", str(exc)
        elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM as Terminated
            state, status, reason = "FAIL", "KILLED", f"interrupted ({type(exc).__name__})"
        else:
            state, status, reason = "FAIL", "FAILED", f"{type(exc).__name__}: {exc}"
        reason = redact_text(reason)  # the trial keeps it too, and `report --json` prints it
        self.state, self.reason = state, reason
        try:
            self._close(state, reason)
        finally:
            self.tracker.set_status(self.run_id, status)
        return False

    def _close(self, state: str, reason: str) -> None:
        best, final = self.best_val_accuracy, self.final_val_accuracy
        if best is not None:
            self.metrics.add(self.history["step"][-1], {"best_val_accuracy": best})
        self.metrics.flush()
        if self.history["step"]:
            title = f"{self.describe}: {state.lower()}" + ("" if final is None else f", val acc {final:.4f}")
            self.tracker.log_figure(self.run_id, plots.curves(self.history, title), "curves.png")
        outcome = state + ("" if best is None else f", best val acc {best:.4f}") + (f" ({reason})" if reason else "")
        self.tracker.set_tags(self.run_id, {"state": state, **({"reason": reason} if reason else {}),
                                            NOTE: f"{self.describe}: {outcome}"})


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
        raise UserError(f"{what} cannot be used: {redact_text(first)[:300]}") from None
