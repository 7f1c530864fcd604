"""The defects the worker path's review found (issue 25), each shown by a test that fails where it is present.

Labels, storages, the shared stage run, claims and closers, ages and namespaces, errors hidden by errors, filter
strings, the race planner, the loaded model, and a run that finished before its trial was told.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import ROOT, hpsearch, hpsearch_env
from tests.servers import fresh_postgres_db, postgres_url

EXPERIMENT = "cifar10-lambda"
PG = postgres_url()


def client(project) -> MlflowClient:
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs(project, where: str = "") -> list:
    c = client(project)
    return c.search_runs([c.get_experiment_by_name(EXPERIMENT).experiment_id], where, max_results=1000)


def stage_run(project, stage: str):
    (run,) = runs(project, f"tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = '{stage}'")
    return run


def journal(project):
    from pipeline.session import open_storage

    return open_storage(str(project / "studies/optuna.journal"))


# ---- 1: the final's label on a database storage -------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def db_storage(request, project):
    if request.param == "sqlite":
        yield f"sqlite:///{project}/studies/optuna.db"
        return
    if PG is None:
        pytest.skip("no PostgreSQL server configured: set HPSEARCH_TEST_POSTGRES")
    with fresh_postgres_db(PG, "optuna") as url:
        yield url


def test_the_final_under_select_best_says_best_on_a_database_storage(db_storage):
    hpsearch("--storage", db_storage, "search", "coarse", "--n-trials", "2")
    out = hpsearch("--storage", db_storage, "train-final", "--no-confirm", "--select", "best").output
    (line,) = [x for x in out.splitlines() if x.startswith("final training with")]
    assert line.endswith(": best)"), line  # not "largest λ within one standard error of the best"


# ---- 2: the shared stage run's lifecycle ------------------------------------------------------------------------
def foreign_trial(study: optuna.Study, **attrs) -> optuna.Trial:
    """A RUNNING trial of a worker on another host: alive as far as this machine can tell."""
    trial = study.ask({"lambda": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)})
    for key, value in ({"host": "elsewhere", "namespace": "elsewhere-ns", "pid": 7, "instance": "x",
                        "claim": "slot 0"} | attrs).items():
        trial.set_user_attr(key, value)
    return trial


def coarse_study(project, n: int) -> optuna.Study:
    """The coarse study with its stage run, as `search coarse` makes them, before any trial."""
    from pipeline.search import stages
    from pipeline.session import Session
    from pipeline.settings.config import load

    session = Session()
    cfg = load("coarse").replace({"search.n_trials": n})
    study, _ = stages.open_study(session, "coarse", cfg)
    stages.ensure_parent_run(session, study, "coarse")
    return study


def test_a_workers_ctrl_c_leaves_the_stage_run_to_the_worker_still_training(project, monkeypatch):
    study = coarse_study(project, 3)
    foreign_trial(study)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.search.objective.train", interrupted)
    hpsearch("search", "coarse", "--n-trials", "3", code=130)
    assert stage_run(project, "coarse").info.status == "RUNNING"  # the other host still trains it
    mine = [t for t in study.get_trials() if t.user_attrs.get("host") != "elsewhere"]
    assert [t.state for t in mine] == [TrialState.FAIL]
    assert client(project).get_run(mine[0].user_attrs["mlflow_run_id"]).info.status == "KILLED"


def test_the_last_workers_ctrl_c_ends_the_stage_run(project, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.search.objective.train", interrupted)
    hpsearch("search", "coarse", "--n-trials", "3", code=130)
    assert stage_run(project, "coarse").info.status == "KILLED"


def test_a_waiting_worker_closes_the_stage_whose_completing_worker_died(project, monkeypatch):
    """The other host's trial completes the stage and its worker dies before closing the stage run: the worker
    that waited for it closes it."""
    from pipeline.api import Project
    from pipeline.search import stages

    study = coarse_study(project, 2)
    other = foreign_trial(study)
    waiting, wait = threading.Event(), stages.wait_until_settled

    def waits(*args, **kwargs):
        if kwargs.get("n") == 2:
            waiting.set()
        return wait(*args, **kwargs)

    monkeypatch.setattr(stages, "wait_until_settled", waits)
    result = {}
    worker = threading.Thread(target=lambda: result.update(s=Project().search("coarse", 2)), daemon=True)
    worker.start()
    assert waiting.wait(120), "the worker never waited for the other host's trial"
    time.sleep(0.5)
    other.study.tell(other, 0.3)  # its worker "dies" right after: nothing closes the stage run but the waiter
    worker.join(60)
    assert not worker.is_alive() and result["s"].complete
    assert stage_run(project, "coarse").info.status == "FINISHED"


def test_two_workers_closing_a_stage_at_once_log_its_summary_once(project, monkeypatch):
    from pipeline.search import stages
    from pipeline.session import Session
    from pipeline.settings.config import load
    from pipeline.tracking.tracker import Tracker

    with monkeypatch.context() as m:  # the trials finished, the stage run not closed yet
        m.setattr(Tracker, "log_metrics", lambda *a, **k: None)
        m.setattr(Tracker, "set_status", lambda self, run_id, status: None)
        hpsearch("search", "coarse", "--n-trials", "2")
    with __import__("contextlib").suppress(KeyError):
        optuna.delete_study(study_name=f"{EXPERIMENT}-once", storage=journal(project))
    parent = stage_run(project, "coarse").info.run_id
    c = client(project)
    assert c.get_run(parent).data.metrics == {}
    both = threading.Barrier(2)
    summary = stages.stage_metrics

    def slow_summary(study):  # both workers past their "is it closed?" look before either closes it
        try:
            both.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return summary(study)

    monkeypatch.setattr(stages, "stage_metrics", slow_summary)
    cfg = load("coarse").replace({"search.n_trials": 2})
    searched = cfg.space

    def close():
        session = Session()
        study = session.load_study("coarse")
        stages.finish_stage(session, "coarse", study, parent, 2, searched)

    workers = [threading.Thread(target=close) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    logged = {k: len(c.get_metric_history(parent, k)) for k in c.get_run(parent).data.metrics}
    assert logged and set(logged.values()) == {1}, logged
    assert c.get_run(parent).info.status == "FINISHED"


# ---- 3: one claim, one closer ------------------------------------------------------------------------------
def test_a_trial_that_yields_has_said_who_ran_it():
    """The owner is recorded before the claim: a trial that finds every slot held still names its worker."""
    from types import SimpleNamespace

    from pipeline.search.objective import Objective
    from pipeline.workers import SurplusTrial, owner

    study = optuna.create_study(direction="maximize")
    foreign_trial(study)
    stage = SimpleNamespace(name="coarse", enqueued=False, cfg=SimpleNamespace(search=SimpleNamespace(n_trials=1)))
    trial = study.ask()
    with pytest.raises(SurplusTrial):
        Objective(stage)(trial)
    assert study.trials[1].user_attrs.get("pid") == owner()["pid"], study.trials[1].user_attrs


def test_confirm_pairs_are_the_same_pair_by_their_key_not_their_float_bits():
    """Two workers enqueue one pair at once, their λ one bit apart (each worker's own arithmetic): it trains once."""
    from types import SimpleNamespace

    from pipeline.search.confirm.candidates import Candidate
    from pipeline.search.confirm.stage import pair, suggester
    from pipeline.search.objective import Objective
    from pipeline.workers import SurplusTrial

    class Trains(Exception):
        pass

    def trains(values):
        raise Trains

    a, b = Candidate({"train.lambda": 1e-3}, 0.5, 0), Candidate({"train.lambda": 1e-3 * (1 + 4e-16)}, 0.5, 0)
    assert a.settings != b.settings
    study = optuna.create_study(direction="maximize")
    for c in (a, b):
        study.enqueue_trial(*pair(c, 0, 0, 0, False), skip_if_exists=False)
    stage = SimpleNamespace(name="confirm", enqueued=True, suggest=suggester([a], 0, 1, False),
                            cfg=SimpleNamespace(search=SimpleNamespace(n_trials=10), replace=trains))
    outcomes = []
    for _ in range(2):
        try:
            Objective(stage)(study.ask())
        except (Trains, SurplusTrial) as e:
            outcomes.append(type(e).__name__)
    assert outcomes == ["Trains", "SurplusTrial"]


# ---- 4 and 5: ages across hosts, namespaces on one host -----------------------------------------------------------
NEW_TRIAL = textwrap.dedent("""
    import sys, optuna
    from pipeline.session import open_storage
    study = optuna.create_study(study_name="s", storage=open_storage(sys.argv[1]), load_if_exists=True)
    study.ask()  # RUNNING, its worker about to say who it is
""")


def test_a_trial_just_started_by_a_host_in_another_time_zone_is_not_failed(tmp_path):
    from pipeline.workers import recover_orphans

    path = str(tmp_path / "optuna.journal")
    env = hpsearch_env(ROOT, TZ="America/Los_Angeles")  # its clock reads 8 hours behind this one's
    subprocess.run([sys.executable, "-c", NEW_TRIAL, path], env=env, check=True, timeout=120)
    study = optuna.load_study(study_name="s", storage=journal_at(path))
    assert recover_orphans(study) == []
    assert study.trials[0].state == TrialState.RUNNING


def test_an_ownerless_running_trial_watched_for_120_s_is_failed():
    from pipeline.workers.owners import ORPHAN_AGE_S, Ownerless, is_orphan

    study = optuna.create_study()
    study.ask()
    now = [1000.0]
    watch = Ownerless(clock=lambda: now[0])
    (trial,) = study.trials
    assert not is_orphan("s", trial, watch)
    now[0] += ORPHAN_AGE_S - 1
    assert not is_orphan("s", trial, watch)
    now[0] += 2
    assert is_orphan("s", trial, watch)


def journal_at(path: str):
    from pipeline.session import open_storage

    return open_storage(path)


IN_ITS_OWN_PID_NAMESPACE = textwrap.dedent("""
    import sys, time, optuna
    from pipeline.session import open_storage
    from pipeline.workers import owner
    study = optuna.create_study(study_name="s", storage=open_storage(sys.argv[1]), load_if_exists=True)
    trial = study.ask()
    for key, value in owner().items():
        trial.set_user_attr(key, value)
    print("running", flush=True)
    time.sleep(600)
""")


def test_a_container_with_the_same_host_name_but_its_own_pids_is_not_taken_for_dead(tmp_path):
    from pipeline.workers import recover_orphans

    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("cannot make a pid namespace here (needs root and unshare)")
    path = str(tmp_path / "optuna.journal")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                             IN_ITS_OWN_PID_NAMESPACE, path], env=hpsearch_env(ROOT), stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        study = optuna.load_study(study_name="s", storage=journal_at(path))
        assert study.trials[0].user_attrs["pid"] < 10  # a pid of its namespace: here it is someone else's
        assert recover_orphans(study) == []
        assert study.trials[0].state == TrialState.RUNNING
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
