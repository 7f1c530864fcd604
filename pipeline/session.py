"""The one owner of the three stores a command uses: the data, the Optuna storage and MLflow.

Every default and every URL fix-up happens here, once. Nothing here changes process-global state
(MLflow's fluent URIs, environment variables, logging levels): the CLI's entry point does that.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import optuna

from model.whiten import WhitenSpec
from pipeline import names
from pipeline.data import sources
from pipeline.errors import UserError
from pipeline.names import (
    DEFAULT_EXPERIMENT,
    DEFAULT_GRACE_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
)
from pipeline.terminal.lines import Lines
from pipeline.tracking.tracker import Tracker
from pipeline.urls import absolute_uri, redact, redact_text

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


@dataclass(frozen=True)
class Stores:
    """Where data, studies and runs live: the global options of every command."""

    data_dir: Path | None = None
    storage_url: str = DEFAULT_STORAGE
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    heartbeat_s: int = DEFAULT_HEARTBEAT_S  # Optuna's heartbeat on a database storage (seconds)
    grace_s: int = DEFAULT_GRACE_S  # a trial whose heartbeat is older than this is failed

    @classmethod
    def from_env(cls, data_dir=None, storage: str | None = None, tracking_uri: str | None = None,
                 experiment: str | None = None) -> Stores:
        """Where data, studies and runs live, as the CLI finds them: the argument, else its environment variable
        (HPSEARCH_DATA, HPSEARCH_STORAGE, MLFLOW_TRACKING_URI, HPSEARCH_EXPERIMENT; the heartbeat's
        HPSEARCH_HEARTBEAT_S and HPSEARCH_GRACE_S), else the default."""

        def env(name: str) -> str | None:
            return os.environ.get(name) or None  # an empty variable counts as unset, as on the command line

        data = data_dir if data_dir is not None else env(names.DATA_ENV)
        return cls(None if data is None else Path(data),
                   storage or env(names.STORAGE_ENV) or DEFAULT_STORAGE, tracking_uri or env(names.TRACKING_ENV),
                   experiment or env(names.EXPERIMENT_ENV) or DEFAULT_EXPERIMENT,
                   int(env(names.HEARTBEAT_ENV) or DEFAULT_HEARTBEAT_S), int(env(names.GRACE_ENV) or DEFAULT_GRACE_S))

    def to_env(self) -> dict[str, str]:
        """The environment variables that make from_env (and the CLI's global options) find these stores."""
        env = {names.STORAGE_ENV: self.storage_url, names.EXPERIMENT_ENV: self.experiment,
               names.HEARTBEAT_ENV: str(self.heartbeat_s), names.GRACE_ENV: str(self.grace_s)}
        if self.data_dir is not None:
            env[names.DATA_ENV] = str(self.data_dir)
        if self.tracking_uri is not None:
            env[names.TRACKING_ENV] = self.tracking_uri
        return env

    def heartbeat_params(self) -> dict:
        """What a stage run records of how dead workers are found."""
        return {"heartbeat_s": self.heartbeat_s, "grace_s": self.grace_s}


class Session:
    """Opens each store once, on first use, and answers every question about where things are."""

    def __init__(self, stores: Stores | None = None, terminal: Lines | None = None):
        self.stores = stores or Stores()
        self.terminal = terminal or Lines()

    @property
    def experiment(self) -> str:
        return self.stores.experiment

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking (and registry) URI, a sqlite path made absolute."""
        return absolute_uri(self.stores.tracking_uri or DEFAULT_TRACKING_URI)

    @property
    def shown_storage(self) -> str:
        return redact(self.stores.storage_url)

    @property
    def shown_tracking(self) -> str:
        return redact(self.tracking_uri)

    @cached_property
    def storage(self) -> optuna.storages.BaseStorage:
        return open_storage(self.stores.storage_url, self.stores.heartbeat_s, self.stores.grace_s)

    @cached_property
    def tracker(self) -> Tracker:
        """The experiment in the tracking store, created on first use."""
        return Tracker(self.tracking_uri, self.experiment)

    def check_tracking(self) -> None:
        """Open the tracking store before anything is recorded: one that cannot keep the runs is refused first."""
        self.tracker  # noqa: B018 - opening it is the check

    def study_name(self, stage: str) -> str:
        return names.study_name(self.experiment, stage)

    def load_study(self, stage: str) -> optuna.Study | None:
        try:
            return optuna.load_study(study_name=self.study_name(stage), storage=self.storage)
        except KeyError:
            return None

    @property
    def data_origin(self) -> str:
        """The data folder given, or the URL the data is downloaded from (what runs record as their source)."""
        return sources.origin(self.stores.data_dir)

    def dataset(self, split: str, val_size: int, val_fold: int = 0, whitening: WhitenSpec = sources.NO_WHITENING):
        """The split, loaded and normalised (and whitened) once per process (the coarse and fine stages share it)."""
        folder = sources.resolve(self.stores.data_dir, self.terminal.say)
        return sources.dataset(folder, split, val_size, val_fold, whitening)


def open_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S,
                 grace_s: int = DEFAULT_GRACE_S) -> optuna.storages.BaseStorage:
    """A file path is a journal file (safe for parallel processes on one machine); a URL is a database."""
    if "://" not in url:
        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as e:
            raise UserError(f"Optuna storage file {path} cannot be written ({e.strerror})") from None
        from optuna.storages.journal import JournalFileBackend

        # Absolute: Optuna's lock is a symlink to this path, resolved from its own folder; a relative one dangles,
        # and a lock left by a killed process then spins the next writer forever instead of expiring.
        return optuna.storages.JournalStorage(JournalFileBackend(str(path.resolve())))
    scheme = url.split("://", 1)[0].lower()
    if scheme.split("+")[0] not in RDB_SCHEMES:
        raise UserError(
            f"unknown storage scheme {scheme!r} in {redact(url)}; use a file path (journal), "
            "sqlite:///FILE or postgresql+psycopg2://USER:PASSWORD@HOST/DB"
        )
    if not 1 <= heartbeat_s < grace_s:  # a live worker between two heartbeats would be taken for dead
        raise UserError(f"--heartbeat-s ({heartbeat_s}) must be at least 1 and shorter than --grace-s ({grace_s})")
    engine_kwargs = {}
    if scheme.startswith("sqlite"):
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for a busy database instead of failing
    return _with_retries(
        lambda: optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s, grace_period=grace_s),
        f"Optuna storage {redact(url)}",
    )


def _with_retries(make, what: str, attempts: int = 4):
    """Workers starting together may race to create the schema: the loser retries once it exists.
    A server that refuses the connection is reported at once."""
    from sqlalchemy.exc import OperationalError

    for i in range(attempts):
        try:
            return make()
        except ModuleNotFoundError as e:
            raise UserError(f"{what} needs the {e.name} package: pip install 'hpsearch[postgres]'") from None
        except Exception as e:  # SQLAlchemy's and the driver's errors
            unreachable = isinstance(e, OperationalError) and "connect" in str(e).lower()
            if unreachable or i == attempts - 1:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(f"{what} is unreachable or unusable: {redact_text(first)[:300]}") from None
            time.sleep(0.5 + i)
