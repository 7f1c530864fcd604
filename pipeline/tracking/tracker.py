"""The MLflow layout: one experiment, one parent run per stage, one child run per training.

Everything here goes through MlflowClient with explicit run ids (no fluent "active run" state), so
several trials, stages or worker processes never mix up their runs. `TrackedRun` (run.py) is the one
lifecycle every training shares: create, log params, buffer metrics per checkpoint (buffer.py), and on
every exit path the curves, the outcome and a terminal status.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pipeline import urls
from pipeline.errors import UserError
from pipeline.names import PARENT_RUN_TAG, tag
from pipeline.tracking import links
from pipeline.tracking.buffer import MetricBuffer
from pipeline.tracking.filters import duplicate_key, equals, first_line
from pipeline.urls import absolute_uri, check_reachable, redact, redact_text, sqlite_path

MAX_PARAMS = 100  # MLflow's limit of params per log_batch call
TERMINAL = ("FINISHED", "FAILED", "KILLED")


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
            refused = None
            try:
                self.client.create_experiment(name, artifact_location=self.artifact_root)
            except MlflowException as e:  # another worker created it first, or the store refused it (said below)
                refused = e
            found = self.client.get_experiment_by_name(name)
            if found is None:
                why = f": {redact_text(first_line(refused))[:300]}" if refused is not None else ""
                raise UserError(f"experiment {name!r} could not be created in {redact(self.uri)}{why}")
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
        where = " and ".join(equals(f"tags.`{tag(k)}`", v) for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], where, order_by=["attributes.start_time ASC"])
        return [r for r in runs if all(r.data.tags.get(tag(k)) == str(v) for k, v in tags.items())]

    def create_run(self, name: str, tags: Mapping[str, object], parent_run_id: str | None = None) -> str:
        all_tags = {tag(k): str(v) for k, v in tags.items()}
        all_tags["mlflow.source.git.commit"] = code_version()
        if parent_run_id is not None:
            all_tags[PARENT_RUN_TAG] = parent_run_id
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
        where = equals(f"tags.{PARENT_RUN_TAG}", parent_run_id)
        where += f" and {equals('attributes.status', status)}" if status else ""
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

        named = {(k if k.startswith("mlflow.") else tag(k)): v for k, v in tags.items()}
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
        except MlflowException as e:
            if not duplicate_key(e):
                raise
            self.client.log_inputs(run_id, datasets=[dataset])

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING (on resume) or a terminal status: FINISHED, FAILED, KILLED."""
        if status in TERMINAL:
            self.client.set_terminated(run_id, status)
        else:
            self.client.update_run(run_id, status=status)


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
