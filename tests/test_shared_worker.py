"""The pipeline is the worker: waits fail dead workers by their heartbeat, the final is claimed once, and with an
http(s) tracking URI artifacts go through the server or nothing starts.

The heartbeat tests need a PostgreSQL server (HPSEARCH_TEST_POSTGRES, as tests/test_distributed.py); a dead worker
is a real process, killed with SIGKILL mid-trial, that said it ran on another machine (so only its heartbeat can
tell it is gone).
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import ROOT, hpsearch, hpsearch_env
from tests.servers import POSTGRES_ENV, fresh_postgres_db, mlflow_server, postgres_url

PG = postgres_url()
needs_postgres = pytest.mark.skipif(PG is None, reason=f"no PostgreSQL server configured: set {POSTGRES_ENV}")
HEARTBEAT_S, GRACE_S = 1, 5  # not Optuna's default grace (2 heartbeats): the wait must use ours
EXPERIMENT = "cifar10-lambda"

# A worker on "another machine": it runs one trial of the study with Optuna's heartbeat on, until it is killed.
DEAD_WORKER = textwrap.dedent("""
    import json, sys, time
    import optuna
    from pipeline.session import open_storage

    url, name, attrs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    study = optuna.create_study(study_name=name, storage=open_storage(url, {hb}, {grace}), direction="maximize",
                                load_if_exists=True)

    def objective(trial):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        print("running", flush=True)
        time.sleep(600)

    study.optimize(objective, n_trials=1)
""").format(hb=HEARTBEAT_S, grace=GRACE_S)


def kill_mid_trial(storage: str, study_name: str, **attrs) -> float:
    """Start a worker of another host on the study and SIGKILL it once its trial runs: its trial stays RUNNING.
    Returns when it was killed (time.monotonic())."""
    import json

    attrs = {"host": "another-machine", "pid": 1} | attrs
    proc = subprocess.Popen([sys.executable, "-c", DEAD_WORKER, storage, study_name, json.dumps(attrs)],
                            env=hpsearch_env(ROOT), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running", "the worker did not start its trial"
    finally:
        proc.kill()
        killed = time.monotonic()
        proc.wait()
    return killed


def within(seconds: float, fn, *args, **kwargs):
    """fn's result, or a failure (not a hung test) when it has not returned within `seconds`."""
    import threading

    out = {}

    def run():
        try:
            out["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: a dead worker hangs the wait"
    if "error" in out:
        raise out["error"]
    return out["result"]


@pytest.fixture
def pg_storage():
    with fresh_postgres_db(PG, "optuna") as url:
        yield url


@needs_postgres
def test_waiting_for_a_stage_fails_a_trial_whose_heartbeat_is_stale(pg_storage):
    from pipeline.session import open_storage
    from pipeline.workers import wait_until_settled

    t0 = kill_mid_trial(pg_storage, "s-coarse")  # at most one heartbeat after its last one
    study = optuna.load_study(study_name="s-coarse", storage=open_storage(pg_storage, HEARTBEAT_S, GRACE_S))
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    failed, said = [], []
    within(GRACE_S + 30, wait_until_settled, study, said.append, poll_s=0.2, report_s=0.5, on_failed=failed.extend)
    took = time.monotonic() - t0
    assert [t.state for t in study.trials] == [TrialState.FAIL] and failed == [0]
    assert GRACE_S - HEARTBEAT_S - 0.5 <= took <= GRACE_S + 5, f"the dead worker cost {took:.1f} s, grace {GRACE_S} s"
    # while it waited, it said for what, every report_s
    assert said and all("0 on another-machine pid 1" in line for line in said), said


@needs_postgres
def test_the_final_claim_fails_a_dead_claimer_and_trains_once(pg_storage, project, cifar_dir):
    from pipeline.final.claim import DIGEST_ATTR, train_final
    from pipeline.session import Session, Stores
    from pipeline.settings.config import load
    from pipeline.terminal.lines import Lines

    cfg = load("final")
    digest = cfg.replace({"train.lambda": 0.01}).digest()
    kill_mid_trial(pg_storage, f"{EXPERIMENT}-final", **{DIGEST_ATTR: digest, "claim": f"final {digest}"})
    said = io.StringIO()
    stores = Stores(data_dir=cifar_dir, storage_url=pg_storage, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S)
    result = within(GRACE_S + 60, train_final, Session(stores, Lines(said)), cfg, lam=0.01)

    study = optuna.load_study(study_name=f"{EXPERIMENT}-final", storage=pg_storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs["mlflow_run_id"] == result.run_id and result.model_version == "1"
    lines = said.getvalue().splitlines()
    assert lines[0] == f"final: trained by another-machine (pid 1, trial 0 of {EXPERIMENT}-final); waiting for it"
    assert any(line.startswith("final training with λ = 0.01") for line in lines)
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'final'")] == [
        result.run_id]


def start_worker(project: Path, tracking_uri: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--tracking-uri", tracking_uri, *args], cwd=project,
                            env=hpsearch_env(project, OPENBLAS_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_pipeline_workers_train_one_final_through_the_server_and_predict_reads_it(project, cifar_dir):
    with mlflow_server(project / "server") as server:
        procs = [start_worker(project, server.url, "pipeline", "--jobs", "1", "--n-trials", "3") for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        finals = [r for r in runs if r.data.tags.get("hpsearch.role") == "final"]
        versions = client.search_model_versions("name = 'cifar10-mlp'")
        predicted = hpsearch("--tracking-uri", server.url, "predict", str(cifar_dir / "test_batch")).stdout

    assert len(finals) == 1 and len(versions) == 1 and versions[0].run_id == finals[0].info.run_id
    for out, _ in outs:  # both print the one final's result
        assert f"  MLflow run     {finals[0].info.run_id}" in out and "  model          models:/cifar10-mlp/1" in out
    # one trained it; the other said who trains it while it waited, or (when it came after) that it was trained
    trainer = [err for _, err in outs if "final training with" in err]
    assert len(trainer) == 1, [err[-600:] for _, err in outs]
    assert all("final: trained by" in err or "already trained" in out for out, err in outs if err not in trainer)
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    assert len(predicted.splitlines()) == 100  # a line per image of the batch
    study = optuna.load_study(study_name=f"{EXPERIMENT}-final", storage=journal(project))
    assert [t.state for t in study.trials if not t.user_attrs.get("surplus")] == [TrialState.COMPLETE]


def journal(project: Path):
    from pipeline.session import open_storage

    return open_storage(str(project / "studies/optuna.journal"))


def refused(project: Path, url: str, *args: str) -> str:
    """The command's stderr, which must be exactly one error line, after a non-zero exit."""
    proc = start_worker(project, url, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and len(err.splitlines()) == 1 and err.startswith("error: "), (out, err)
    return err


def nothing_recorded(project: Path, client: MlflowClient, experiment: str) -> None:
    if (project / "studies/optuna.journal").exists():
        assert optuna.get_all_study_names(storage=journal(project)) == []
    exp = client.get_experiment_by_name(experiment)
    assert exp is None or client.search_runs([exp.experiment_id]) == []


@pytest.mark.slow
def test_an_http_store_keeping_artifacts_on_a_local_path_is_refused_before_anything_is_recorded(project):
    with mlflow_server(project / "server") as server:
        client = MlflowClient(tracking_uri=server.url)
        client.create_experiment("made-locally", artifact_location=str(project / "elsewhere"))
        err = refused(project, server.url, "--experiment", "made-locally", "pipeline", "--jobs", "2")
        nothing_recorded(project, client, "made-locally")
    assert "keeps its artifacts at" in err and "--artifacts-destination" in err


@pytest.mark.slow
def test_a_server_that_does_not_serve_artifacts_is_refused_before_the_experiment_is_made(project):
    with mlflow_server(project / "server", serve_artifacts=False) as server:
        err = refused(project, server.url, "search", "coarse", "--n-trials", "1")
        client = MlflowClient(tracking_uri=server.url)
        assert client.get_experiment_by_name(EXPERIMENT) is None
        nothing_recorded(project, client, EXPERIMENT)
    assert "does not serve artifacts" in err and "--artifacts-destination" in err


def test_a_grace_period_within_one_heartbeat_is_one_line(project):
    result = hpsearch("--storage", "sqlite:///studies/s.db", "--heartbeat-s", "30", "--grace-s", "30", "search",
                      "coarse", code=1)
    assert result.stderr == "error: --heartbeat-s (30) must be at least 1 and shorter than --grace-s (30)\n"


def test_a_claim_that_finds_an_earlier_live_claim_of_the_same_final_yields_without_training(project, cifar_dir):
    """Two workers that reach the final at the same moment: the later trial number yields (surplus), untrained."""
    from pipeline.final.claim import Claim
    from pipeline.session import Session, Stores
    from pipeline.settings.config import load
    from pipeline.workers import SurplusTrial, claim

    session = Session(Stores(data_dir=cifar_dir))
    cfg = load("final").replace({"train.lambda": 0.01})
    study = optuna.create_study(study_name=f"{EXPERIMENT}-final", storage=session.storage, direction="maximize")
    first = study.ask()  # the other worker's claim, alive: it is this process
    claim(first, f"final {cfg.digest()}")
    study.optimize(Claim(session, cfg, {"train.lambda": 0.01}, "--lambda", first=0), n_trials=1,
                   catch=(SurplusTrial,))
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.FAIL]
    assert study.trials[1].user_attrs["surplus"] is True
    assert study.trials[1].user_attrs["pid"] == first.user_attrs["pid"]  # it said who it was before yielding
    assert session.tracker.find_runs(role="final") == [], "the later claim trained too"


def test_a_pair_enqueued_twice_or_a_trial_the_queue_did_not_fill_yields():
    """Two workers enqueuing confirm's pairs at once: each pair still trains once."""
    from types import SimpleNamespace

    from pipeline.search.objective import Objective
    from pipeline.workers import SurplusTrial

    class Trains(Exception):
        pass

    def trains(values):
        raise Trains

    study = optuna.create_study(direction="maximize")
    for _ in range(2):
        study.enqueue_trial({"lambda": 0.001, "seed": 0}, user_attrs={"claim": "pair 0/0"}, skip_if_exists=False)
    stage = SimpleNamespace(name="confirm", enqueued=True, suggest=lambda trial: {},
                            cfg=SimpleNamespace(search=SimpleNamespace(n_trials=10), replace=trains))
    outcomes = []
    for _ in range(3):  # the pair, its duplicate, then a trial with nothing enqueued for it
        try:
            Objective(stage)(study.ask())
        except (Trains, SurplusTrial) as e:
            outcomes.append("trains" if isinstance(e, Trains) else "yields")
    assert outcomes == ["trains", "yields", "yields"]
