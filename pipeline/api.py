"""The Python API: what the `hpsearch` commands do, for notebooks and scripts. The CLI goes through it too.

    from pipeline.api import Project

    project = Project()                       # the CLI's stores: its defaults and environment variables
    project.search("coarse", n_trials=4)      # a StageSummary; run the stage until it holds 4 finished trials
    project.trials("coarse")                  # a DataFrame: settings, values, states, MLflow run ids

Each method calls the function the command calls (stages.run_search, confirm.run_confirm, final.train_final,
...) and adds nothing of its own. Nothing prints unless `progress=True`. An error a user can cause raises
UserError (ConfigError for settings) whose message is the line the CLI prints after "error: ".

The module imports nothing heavy at its top: the command line imports it before parsing its options.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

from pipeline import names
from pipeline.errors import UserError
from pipeline.terminal.quiet import quietly

STAGES = (*names.SEARCH_STAGES, "confirm")
FINAL_TAGS = (names.MODEL_VERSION_TAG, names.LAMBDA_SOURCE_TAG)  # the finals table shows them


def stores(data_dir=None, storage: str | None = None, tracking_uri: str | None = None,
           experiment: str | None = None):
    """Where data, studies and runs live, as the CLI finds them: the argument, else its environment variable
    (HPSEARCH_DATA, HPSEARCH_STORAGE, MLFLOW_TRACKING_URI, HPSEARCH_EXPERIMENT; the heartbeat's
    HPSEARCH_HEARTBEAT_S and HPSEARCH_GRACE_S), else the default (session.Stores.from_env)."""
    from pipeline.session import Stores

    return Stores.from_env(data_dir, storage, tracking_uri, experiment)


def load_settings(stage: str, config=None, overrides: dict | None = None, sets: list[str] | None = None):
    """A stage's settings: its file (default studies/<stage>.toml) with "key=value" strings as --set takes
    them, then typed values ({"train.n_s": 300}; None leaves the file's value) applied, and validated."""
    from pipeline.settings import config as cfgmod

    values = dict(cfgmod.parse_override(item) for item in sets or [])
    values |= {key: value for key, value in (overrides or {}).items() if value is not None}
    return cfgmod.load(stage, config, values)


@contextlib.contextmanager
def naming_the_tracking_server(session):
    """A request that an MLflow tracking server failed (an HTTP error, a proxy's page) says which server."""
    from mlflow.exceptions import MlflowException

    from pipeline.urls import is_http

    try:
        yield
    except MlflowException as e:
        if not is_http(session.tracking_uri):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"MLflow tracking server {session.shown_tracking} failed a request: {first[:300]}") from None


def _call(method):
    """A public method: quiet libraries, and a failing tracking server named in one line."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with quietly(), naming_the_tracking_server(self.session):
            return method(self, *args, **kwargs)

    return call


@dataclass
class Report:
    tables: dict  # stage -> its trial table (a DataFrame)
    json: dict  # what `hpsearch report --json` prints
    importance: dict  # stage -> Project.importance(stage)


class Project:
    """One project's stores (data, Optuna storage, MLflow), opened on first use, and what runs on them.

    Arguments left out come from the environment variables the CLI reads, else the CLI's defaults, relative
    to the working folder: studies/optuna.journal, sqlite:///mlruns/mlflow.db, the cifar10-lambda experiment,
    and the stage files studies/<stage>.toml. progress=True prints the CLI's plain progress lines on stderr.
    """

    def __init__(self, data_dir=None, storage: str | None = None, tracking_uri: str | None = None,
                 experiment: str | None = None, *, progress: bool = False):
        from pipeline.session import Session
        from pipeline.terminal.lines import Lines, Silent

        self.session = Session(stores(data_dir, storage, tracking_uri, experiment), Lines() if progress else Silent())

    @classmethod
    def of(cls, session) -> Project:
        """The project of a Session already open: the command line's, with its options and its terminal."""
        project = cls.__new__(cls)
        project.session = session
        return project

    def __repr__(self) -> str:
        s = self.session
        return (f"Project(experiment={s.experiment!r}, storage={s.shown_storage!r}, "
                f"tracking_uri={s.shown_tracking!r}, data_dir={s.stores.data_dir!r})")

    @_call
    def data_folder(self) -> Path:
        """The cifar-10-batches-py folder the trainings read (downloaded first when no data folder is set)."""
        from pipeline.data.sources import resolve

        return resolve(self.session.stores.data_dir, self.session.terminal.say)

    # ---- running ------------------------------------------------------------------------------------
    @_call
    def search(self, stage: str, n_trials: int | None = None, *, config=None, overrides: dict | None = None,
               settings=None, timeout: float | None = None, deadline=None, enqueue=None,
               from_experiment: str | None = None):
        """Run a stage (coarse, fine or confirm) until its study holds n_trials finished trials; a rerun
        completes it. overrides: {"train.n_s": 300, "search.sampler": "tpe"}; settings: a prepared Settings
        instead of config and overrides. timeout: seconds after which no trial starts (or deadline, a
        budget.Deadline shared by several calls). enqueue: a TOML file of settings tried first; from_experiment:
        another experiment whose finished trials of this stage the sampler learns from. Returns a StageSummary
        (a ConfirmResult for confirm)."""
        if stage not in STAGES:
            raise UserError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
        if stage == "confirm":
            return self.confirm(config=config, overrides=overrides, settings=settings)
        from pipeline.search.budget import Deadline
        from pipeline.search.stages import run_search

        cfg = settings or load_settings(stage, config, (overrides or {}) | {"search.n_trials": n_trials})
        deadline = deadline or (Deadline.after(timeout) if timeout is not None else None)
        return run_search(self.session, stage, cfg, deadline, enqueue, from_experiment)

    @_call
    def warm_start(self, stage: str, settings, enqueue=None, from_experiment: str | None = None) -> None:
        """What search(enqueue=..., from_experiment=...) adds to the study first, alone: before --jobs workers
        start, so that their first trials are the enqueued ones."""
        from pipeline.search.stages import prepare

        prepare(self.session, stage, settings, enqueue, from_experiment)

    @_call
    def confirm(self, *, config=None, overrides: dict | None = None, settings=None):
        """The confirm stage: k λ over the searches' tie retrained in rounds; returns a ConfirmResult (its
        decision: scores, paired differences, the fit, the chosen settings); `candidates()` shows it as a table."""
        from pipeline.search.confirm import run_confirm

        return run_confirm(self.session, settings or load_settings("confirm", config, overrides))

    @_call
    def train_final(self, lam: float | None = None, *, select: str | None = None, force: bool = False,
                    confirmed: bool = True, config=None, overrides: dict | None = None, settings=None):
        """The final training on 49,000 images with the promoted λ (lam overrides it), registered as the
        champion. confirmed=False ignores the confirm stage. Returns a RunResult (test accuracy, run id)."""
        from pipeline.final.claim import train_final

        cfg = settings or load_settings("final", config, (overrides or {}) | {"search.select": select})
        return train_final(self.session, cfg, lam, force, confirmed)

    @_call
    def train(self, config, lam: float | None = None, *, overrides: dict | None = None, sets: list[str] | None = None):
        """One tracked training with a study file's settings (e.g. studies/exercise-1.toml), lam instead of its λ;
        sets: "key=value" strings as --set takes them. Returns a RunResult."""
        from pipeline.final.trainings import train_run

        if lam is not None and lam < 0:
            raise UserError(f"--lambda must be ≥ 0; got {lam}")
        name = Path(config).stem
        cfg = load_settings(name, config, (overrides or {}) | {"train.lambda": lam}, sets)
        return train_run(self.session, cfg, name, role="single")

    # ---- results ------------------------------------------------------------------------------------
    @_call
    def trials(self, stage: str):
        """A stage's trials: number, settings, value, best and final validation accuracy, state, duration,
        reason and MLflow run id, one row a trial."""
        from pipeline.search.results import trial_table

        study = self._study(stage)
        table = trial_table(study)
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        at = table.columns.get_loc("best_val_accuracy")
        table.insert(at, "value", [trials[n].value for n in table["trial"]])
        table[names.RUN_ATTR] = [trials[n].user_attrs.get(names.RUN_ATTR) for n in table["trial"]]
        return table

    @_call
    def importance(self, stage: str):
        """Which searched settings mattered in a stage, computed now from its completed trials (PED-ANOVA): one row
        per setting, most important first; for fine, a second column over the coarse and fine trials together.
        Searching one setting, or with fewer than 4 completed trials, the table is empty (.attrs["note"] says why)."""
        from pipeline.search.importance import importance_of

        return importance_of(self.session, stage, self._study(stage))

    @_call
    def candidates(self):
        """The confirm stage's candidates with their mean ± SE over seeds and the chosen one, as its stage run
        recorded them (candidates.csv) when the stage completed."""
        import tempfile

        import pandas as pd

        study = self._study("confirm")
        run_id = study.user_attrs.get(names.PARENT_ATTR)
        if run_id is None or self.session.tracker.status(run_id) != "FINISHED":
            raise UserError(f"the confirm stage {study.study_name!r} is incomplete: run `hpsearch search confirm` "
                            "to complete it")
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_csv(self.session.tracker.client.download_artifacts(run_id, "candidates.csv", tmp))

    @_call
    def finals(self):
        """The final trainings, oldest first: run id, λ, test and validation accuracy, registered version."""
        import pandas as pd

        lam = names.LAMBDA
        rows = [{"run_id": r.info.run_id, "status": r.info.status, lam: float(r.data.params.get(lam, "nan")),
                 "test_accuracy": r.data.metrics.get("test_accuracy"),
                 "val_accuracy": r.data.metrics.get("val_accuracy"),
                 **{key: r.data.tags.get(names.tag(key)) for key in FINAL_TAGS},
                 "start_time": pd.Timestamp(r.info.start_time, unit="ms")}
                for r in self.session.tracker.find_runs(role="final")]
        return pd.DataFrame(rows, columns=["run_id", "status", lam, "test_accuracy", "val_accuracy",
                                           *FINAL_TAGS, "start_time"])

    @_call
    def report(self, stages=names.SEARCH_STAGES) -> Report:
        """Each named stage's trial table and `hpsearch report --json`'s document."""
        from pipeline.search.importance import importance_of
        from pipeline.search.results import report_json, stage_tables

        tables = stage_tables(self.session, stages)
        if not tables:
            raise UserError(f"no search study in {self.session.shown_storage}; run `hpsearch search coarse` first")
        ranked = {stage: importance_of(self.session, stage, self._study(stage)) for stage in tables}
        doc = report_json(self.session, tables) | {"importance": {
            stage: frame.attrs.get("note") or frame.to_dict(orient="records") for stage, frame in ranked.items()}}
        return Report(tables, doc, ranked)

    # ---- the champion -------------------------------------------------------------------------------
    @_call
    def champion(self):
        """The registered model cifar10-mlp@champion, as an MLflow pyfunc model (predict: (n, 3072) raw pixels)."""
        from pipeline.tracking.registry import load_champion

        return load_champion(self.session.tracking_uri)

    @_call
    def predict(self, images, model=None):
        """Classify images: (n, 3072) CIFAR rows (R, G, B planes) or (n, 32, 32, 3) RGB, raw pixels 0..255.
        Returns one row an image: class, probability, and every class's probability. model: a loaded champion."""
        import numpy as np
        import pandas as pd

        from model.cifar10 import CLASSES, D

        X = np.asarray(images)
        if X.ndim == 4 and X.shape[1:] == (32, 32, 3):
            X = X.transpose(0, 3, 1, 2).reshape(len(X), D)
        if X.ndim != 2 or X.shape[1] != D:
            raise UserError(f"images must be (n, {D}) CIFAR rows or (n, 32, 32, 3) RGB arrays; got shape {X.shape}")
        P = np.asarray((model or self.champion()).predict(X.astype(np.float32)), np.float64)
        table = pd.DataFrame(P, columns=list(CLASSES))
        table.insert(0, "probability", P.max(axis=1))
        table.insert(0, "class", [CLASSES[i] for i in P.argmax(axis=1)])
        return table

    @_call
    def predict_files(self, paths):
        """`hpsearch predict`: PNG/JPEG images or CIFAR-10 batch files; a file that fails is named in .errors."""
        from pipeline.views.predict import predict_files

        return predict_files(self.session.tracking_uri, paths)

    # -------------------------------------------------------------------------------------------------
    def _study(self, stage: str):
        study = self.session.load_study(stage)
        if study is None:
            raise UserError(f"no {stage} study {self.session.study_name(stage)!r} in {self.session.shown_storage}; "
                            f"run `hpsearch search {stage}` first")
        return study
