"""--jobs N: this process and N − 1 more share a stage; each gets its share of the cores; secrets stay out of argv."""

from __future__ import annotations

import os
import threading

import optuna
import pytest
from mlflow.tracking import MlflowClient

from pipeline.session import Stores, open_storage
from pipeline.workers.local import THREAD_VARS, worker_env
from tests.conftest import hpsearch, started_by_this_test

# Seconds per trial (4,800 update steps). This process works from the start, while the worker it starts first
# imports MLflow and Optuna and loads the data (seconds): the five trials must outlast that, or this process
# takes them all. With n_s = 600 it sometimes did on an idle machine.
LONGER_TRIALS = ("--set", "train.n_s=1200")
STORE_VARS = ("HPSEARCH_DATA", "HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "HPSEARCH_EXPERIMENT")


def test_each_worker_gets_its_share_of_the_cores_and_the_stores_by_environment(monkeypatch, tmp_path):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    for var in STORE_VARS:  # what the workers get must come from the stores, not from our own environment
        monkeypatch.delenv(var, raising=False)
    stores = Stores(data_dir=tmp_path / "cifar", storage_url="postgresql://u:SECRET@h/db",
                    tracking_uri="http://u:SECRET@h:5000", experiment="x")
    env = worker_env(stores, 4)
    assert all(env[v] == "2" for v in THREAD_VARS)
    assert env["HPSEARCH_STORAGE"] == stores.storage_url
    assert env["MLFLOW_TRACKING_URI"] == stores.tracking_uri
    assert env["HPSEARCH_EXPERIMENT"] == "x"
    assert env["HPSEARCH_DATA"] == str(tmp_path / "cifar")
    defaults = worker_env(Stores(), 16)  # nothing given: each worker finds the same defaults itself
    assert defaults["OPENBLAS_NUM_THREADS"] == "1"
    assert "HPSEARCH_DATA" not in defaults and "MLFLOW_TRACKING_URI" not in defaults


class Watch:
    """Every process this test starts, with its argv and its environment, recorded while a command runs."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[list[str], dict[str, str]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, found in started_by_this_test().items():
                self.seen.setdefault(pid, found)
            self._stop.wait(0.2)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_jobs_2_finish_exactly_n_trials_with_one_run_each(project, cifar_dir):
    other = project / "elsewhere"  # not the default stores: a worker that missed them would not find them
    storage, tracking = str(other / "optuna.journal"), f"sqlite:///{other}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp, Watch() as watch:
        mp.delenv("HPSEARCH_DATA")  # the data reaches the workers only through --data-dir
        out = hpsearch("--data-dir", str(cifar_dir), "--storage", storage, "--tracking-uri", tracking,
                       "--experiment", "jobs", "search", "coarse", "--n-trials", "5", "--jobs", "2",
                       *LONGER_TRIALS).output
    assert "coarse: 5/5 trials finished, complete" in out
    study = optuna.load_study(study_name="jobs-coarse", storage=open_storage(storage))
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5
    assert all(t.state.name in ("COMPLETE", "PRUNED") or t.user_attrs.get("surplus") for t in study.trials)
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("jobs").experiment_id
    (parent,) = client.search_runs([exp], "tags.`hpsearch.role` = 'stage'")
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in finished)
    assert parent.info.status == "FINISHED"

    workers = {t.user_attrs["pid"] for t in finished}
    assert len(workers) == 2, "both workers ran trials"
    started = workers - {os.getpid()}  # this process is one of the two; the other was started for the command
    assert len(started) == 1 and started <= watch.seen.keys()
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    for pid in started:
        argv, env = watch.seen[pid]
        assert not [a for a in argv if storage in a or tracking in a or "elsewhere" in a], argv
        assert env["HPSEARCH_STORAGE"] == storage
        assert env["MLFLOW_TRACKING_URI"] == tracking
        assert env["HPSEARCH_EXPERIMENT"] == "jobs"
        assert env["HPSEARCH_DATA"] == str(cifar_dir)
        assert all(env[v] == threads for v in THREAD_VARS)


def test_workers_start_before_the_stores_check_but_open_nothing_when_it_refuses(project, capfd):
    """The others start before this process opens the stores (their imports overlap it) but wait for its go:
    when the check refuses, they exit quietly, and its error is the one line, with nothing recorded."""
    import time

    from pipeline.errors import UserError
    from pipeline.session import Stores
    from pipeline.workers.local import worker_processes as workers

    seen = []

    def refuse():
        seen.extend(started_by_this_test())  # the worker runs already, while the stores are checked
        time.sleep(5)  # a worker that did not wait would have opened the stores and begun a trial by now
        raise UserError("the stores were refused")

    before = sorted(p.name for p in project.iterdir())
    with pytest.raises(UserError, match="refused"):
        with workers(Stores(data_dir=None), ["search", "coarse", "--n-trials", "1"], 2, check=refuse):
            pytest.fail("the body must not run when the check refuses")
    assert len(seen) == 1, seen  # one other worker, started before the check
    assert sorted(p.name for p in project.iterdir()) == before  # no mlruns/, no studies journal
    assert sorted(p.name for p in (project / "studies").iterdir() if not p.name.endswith(".toml")) == []
    err = capfd.readouterr().err
    assert "error" not in err and "Traceback" not in err, err
