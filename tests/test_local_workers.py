"""--jobs N: this process and N − 1 more share a stage; each gets its share of the cores; secrets stay out of argv."""

from __future__ import annotations

import pytest

from pipeline.local_workers import THREAD_VARS, worker_env
from pipeline.session import Stores
from tests.conftest import hpsearch
from tests.test_confirm import study_of
from tests.test_reliability import child_runs


def test_each_worker_gets_its_share_of_the_cores_and_the_stores_by_environment(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    stores = Stores(storage_url="postgresql://u:SECRET@h/db", tracking_uri="http://u:SECRET@h:5000", experiment="x")
    env = worker_env(stores, 4)
    assert all(env[v] == "2" for v in THREAD_VARS)
    assert env["HPSEARCH_STORAGE"] == stores.storage_url and env["MLFLOW_TRACKING_URI"] == stores.tracking_uri
    assert env["HPSEARCH_EXPERIMENT"] == "x" and "HPSEARCH_DATA" not in env or env["HPSEARCH_DATA"]
    assert worker_env(stores, 16)["OPENBLAS_NUM_THREADS"] == "1"


@pytest.mark.slow
def test_jobs_2_finish_exactly_n_trials_with_one_run_each(project):
    # trials long enough that the worker this process starts (imports, data) gets some
    out = hpsearch("search", "coarse", "--n-trials", "5", "--jobs", "2", "--set", "train.n_s=600").output
    assert "coarse: 5/5 trials finished, complete" in out
    study = study_of(project, "coarse")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5
    assert all(t.state.name in ("COMPLETE", "PRUNED") or t.user_attrs.get("surplus") for t in study.trials)
    parent, children = child_runs(project)
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in finished)
    assert parent.info.status == "FINISHED"
    assert len({t.user_attrs["pid"] for t in finished}) == 2, "both workers ran trials"
