"""The defects of issue 25 in what is recorded: errors that hid errors, names in filter strings, the race planner,
the loaded model, and a run that FINISHED before its worker could tell Optuna (a rerun adopts it)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import optuna
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import hpsearch, hpsearch_env

EXPERIMENT = "cifar10-lambda"


@pytest.fixture
def tracker(project):
    from pipeline.tracking.tracker import Tracker

    return Tracker(f"sqlite:///{project}/mlruns/mlflow.db", EXPERIMENT)


# ---- 6: errors that hide errors ---------------------------------------------------------------------------------
def test_a_tracking_error_while_closing_leaves_a_pruned_trial_pruned(tracker, cifar_dir, monkeypatch):
    from pipeline.session import Session, Stores
    from pipeline.tracking.data_input import DataInput
    from pipeline.tracking.run import TrackedRun

    data = Session(Stores(data_dir=cifar_dir)).dataset("holdout", 200)
    run = TrackedRun(tracker, "t", what="t", values="", steps=1, tags={"role": "trial"}, params={},
                     data=DataInput(data, 0, "here"), outcomes=(optuna.TrialPruned,))

    def refused(*args, **kwargs):
        raise MlflowException("the artifact store is full")

    monkeypatch.setattr(tracker, "log_figure", refused)
    with pytest.raises(optuna.TrialPruned), run:
        run.checkpoint(1, {"val_accuracy": 0.3})
        raise optuna.TrialPruned("pruned at step 1")
    assert tracker.status(run.run_id) == "FINISHED"


def test_an_experiment_the_store_refuses_to_create_says_why(project, monkeypatch):
    from pipeline.errors import UserError
    from pipeline.tracking.tracker import Tracker

    def refused(self, *args, **kwargs):
        raise MlflowException("attempt to write a readonly database")

    monkeypatch.setattr(MlflowClient, "create_experiment", refused)
    with pytest.raises(UserError, match="could not be created .*: attempt to write a readonly database"):
        Tracker(f"sqlite:///{project}/mlruns/mlflow.db", "never-made")


@pytest.mark.parametrize("error, calls", [("INVALID_PARAMETER_VALUE: the dataset's digest is too long", 1),
                                          ("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets", 2)])
def test_logging_a_dataset_retries_only_the_race_it_was_written_for(tracker, monkeypatch, error, calls):
    made = []

    def log_inputs(run_id, datasets):
        made.append(run_id)
        if len(made) == 1:
            raise MlflowException(error)

    monkeypatch.setattr(tracker.client, "log_inputs", log_inputs)
    if calls == 1:
        with pytest.raises(MlflowException, match="too long"):
            tracker.log_input("r", object())
    else:
        tracker.log_input("r", object())
    assert len(made) == calls


# ---- 7: names in filter strings -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["it's", 'say "hi"', "it's \"both\""])
def test_names_with_quotes_are_found_by_their_tags(tracker, name):
    made = tracker.create_run("x", {"study": name, "role": "stage"})
    tracker.create_run("y", {"study": name.replace("'", "_").replace('"', "_"), "role": "stage"})  # LIKE's _
    assert [r.info.run_id for r in tracker.find_runs(study=name, role="stage")] == [made]


# ---- 8: the race planner ------------------------------------------------------------------------------------
def test_planning_a_race_of_forty_trainings_takes_no_time():
    from pipeline.search.confirm.racing import Training, plan
    from pipeline.settings.config import ConfirmSection

    c = ConfirmSection(k=2, strategy="race", budget=40, z=100.0)  # nobody is ever a clear loser: every round runs
    trainings = [Training(i, r, 0.5 + 0.01 * i * (-1) ** r, None) for r in range(c.max_rounds) for i in range(2)]
    out, started = {}, time.monotonic()
    thread = threading.Thread(target=lambda: out.update(p=plan(c.max_rounds - 1, 2, c, trainings)), daemon=True)
    thread.start()
    thread.join(10)
    assert "p" in out, f"planning round {c.max_rounds - 1} still runs after 10 s"
    assert out["p"] == [1, 0] and time.monotonic() - started < 10


def test_a_race_budget_beyond_reason_is_refused():
    from pipeline.settings.config import ConfirmSection

    with pytest.raises(ValueError, match="confirm.budget must be at most"):
        ConfirmSection(k=3, strategy="race", budget=100_000)


# ---- 9: the loaded model ------------------------------------------------------------------------------------
def test_the_champion_loads_from_a_folder_that_lives_with_it_and_leaves_sys_path_alone(project, cifar_dir):
    from model.cifar10.batch import load_batch
    from pipeline.tracking.registry import load_champion

    hpsearch("train-final", "--lambda", "0.01")
    before = list(sys.path)
    model = load_champion(f"sqlite:///{project}/mlruns/mlflow.db")
    assert sys.path == before
    gc.collect()
    X = load_batch(cifar_dir / "test_batch")[0][:3].astype(np.float32)
    assert model.predict(X).shape == (3, 10)


# ---- 10: a run that FINISHED before its trial was told ------------------------------------------------------
KILLED_AFTER_ITS_RUN = textwrap.dedent("""
    import os, signal
    import pipeline.search.objective as objective
    record = objective.Objective.record

    def record_then_die(trial, run):
        record(trial, run)
        if trial.number == 0:
            os.kill(os.getpid(), signal.{sig})

    objective.Objective.record = staticmethod(record_then_die)
    from pipeline.cli import app
    app(["search", "coarse", "--n-trials", "2"])
""")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [("SIGKILL", -9), ("SIGINT", 130)])
def test_a_rerun_adopts_the_finished_run_of_a_trial_killed_before_its_tell(project, sig, code):
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_ITS_RUN.format(sig=sig)], cwd=project,
                          env=hpsearch_env(project), capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr[-2000:]
    from pipeline.session import open_storage

    study = optuna.load_study(study_name=f"{EXPERIMENT}-coarse", storage=open_storage("studies/optuna.journal"))
    first_run = study.trials[0].user_attrs["mlflow_run_id"]
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(first_run).info.status == "FINISHED"

    hpsearch("search", "coarse", "--n-trials", "2")
    finished = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    trial_runs = client.search_runs([exp], "tags.`hpsearch.role` = 'trial'")
    done = sorted(r.info.run_id for r in trial_runs if r.info.status == "FINISHED")
    assert len(finished) == 2 and done == sorted(t.user_attrs["mlflow_run_id"] for t in finished)
    assert first_run in done  # adopted, not trained again
