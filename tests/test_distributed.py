"""Across machines, as docs/scaling.md shows: workers share one study in PostgreSQL and
track to a real `mlflow server` over HTTP. Checked through Optuna's storage and MlflowClient.

Needs a PostgreSQL server whose role may create databases: HPSEARCH_TEST_POSTGRES, e.g.
postgresql+psycopg2://hpsearch:hpsearch@127.0.0.1:5432/hpsearch_test (.ci/run sets it up).
Each test gets fresh databases (one for Optuna, one for the MLflow server) and drops them after.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import hpsearch_env, write_fast_studies
from tests.servers import POSTGRES_ENV, fresh_postgres_db, mlflow_server, postgres_url

PG = postgres_url()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(PG is None, reason=f"no PostgreSQL server configured: set {POSTGRES_ENV} "
                       "(postgresql+psycopg2://USER:PASSWORD@HOST/DB, a role that may create databases); "
                       ".ci/run sets one up"),
]
EXPERIMENT = "cifar10-lambda"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_TIMEOUT_S = 300
# Trials long enough (seconds) that both workers get some, however their start-up times differ.
LONGER_TRIALS = ("--set", "train.n_s=600")
BAD_OUTPUT = ("database is locked", "Traceback", "error:")
# One BLAS thread per worker: several workers (and the server) share few cores; tiny matrices gain nothing.
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


@pytest.fixture
def servers(tmp_path):
    """(Optuna storage URL, mlflow server): fresh PostgreSQL databases, the server backed by one of them."""
    with (
        fresh_postgres_db(PG, "optuna") as storage,
        fresh_postgres_db(PG, "mlflow") as backend,
        mlflow_server(tmp_path / "mlflow-server", backend) as server,
    ):
        yield storage, server


@pytest.fixture
def folder(tmp_path) -> Path:
    """A worker's project folder: fast studies/*.toml, nothing else (no local stores)."""
    project = tmp_path / "project"
    write_fast_studies(project)
    return project


class Worker:
    """`python -m pipeline --storage … --tracking-uri … <args>` in the background, output to files."""

    def __init__(self, name: str, folder: Path, cifar_dir: Path, storage: str, tracking_uri: str, *args: str):
        self.name = name
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        cmd = [sys.executable, "-m", "pipeline", "--storage", storage, "--tracking-uri", tracking_uri, *args]
        env = hpsearch_env(folder, HPSEARCH_DATA=str(cifar_dir), **ONE_THREAD)
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def wait(self, deadline: float) -> int:
        try:
            return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.name} still running after {WORKER_TIMEOUT_S} s\n{self.output()}")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def output(self) -> str:
        return f"--- {self.name} stdout\n{self.stdout()}--- {self.name} stderr\n{self.stderr()}"


def run_all(workers: list[Worker]) -> None:
    """Wait for every worker; each must exit 0 without a traceback or a locked database."""
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    codes = [w.wait(deadline) for w in workers]
    everything = "\n".join(w.output() for w in workers)
    assert codes == [0] * len(workers), f"exit codes {codes}\n{everything}"
    for w in workers:
        bad = [line for line in w.stderr().splitlines() if any(b in line for b in BAD_OUTPUT)]
        assert not bad, f"{w.name}: {bad}\n{everything}"


def stage_runs(client: MlflowClient, stage: str) -> tuple:
    """The stage's parent run and its children, all runs of the experiment considered."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    every = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in every if r.data.tags.get("hpsearch.role") == "stage"
               and r.data.tags.get("hpsearch.stage") == stage]
    assert len(parents) == 1, f"{len(parents)} parent runs for {stage}"
    children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def check_stage(storage: str, client: MlflowClient, stage: str, n: int) -> dict:
    """n finished trials, one parent run, one FINISHED child run per finished trial; returns the figures."""
    study = optuna.load_study(study_name=f"{EXPERIMENT}-{stage}", storage=storage)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    extra = [t for t in trials if t.state not in FINISHED]
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    for t in extra:  # a worker that lost the race for the last slot: FAIL, marked surplus, no run
        assert t.state == TrialState.FAIL and t.user_attrs.get("surplus") is True, (t.number, t.state, t.user_attrs)
        assert "mlflow_run_id" not in t.user_attrs

    parent, children = stage_runs(client, stage)
    assert parent.info.status == "FINISHED"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert parent.data.tags["hpsearch.study"] == study.study_name
    assert {"accuracy_vs_lambda.png", "trials.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

    by_run = {c.info.run_id: c for c in children}
    assert len(by_run) == len(children) == n, f"{len(children)} child runs for {n} finished trials"
    assert sorted(int(c.data.tags["hpsearch.trial"]) for c in children) == sorted(t.number for t in finished)
    for t in finished:
        run = by_run[t.user_attrs["mlflow_run_id"]]
        assert int(run.data.tags["hpsearch.trial"]) == t.number
        assert run.info.run_name == f"{stage}-{t.number}"
        assert run.info.status == "FINISHED"
        assert run.data.tags["hpsearch.state"] == t.state.name
        assert float(run.data.params["lambda"]) == pytest.approx(t.params["lambda"])
        assert client.get_metric_history(run.info.run_id, "val_accuracy")
    return {
        "study": study, "finished": finished, "surplus": len(extra), "parent": parent, "children": children,
        "errors": sum(t.state == TrialState.FAIL and not t.user_attrs.get("surplus") for t in trials)
        + sum(c.info.status != "FINISHED" for c in children),
    }


def test_two_workers_share_one_study_on_postgres_and_an_mlflow_server(servers, folder, cifar_dir):
    storage, server = servers
    started = time.monotonic()
    workers = [
        Worker(f"worker-{i}", folder, cifar_dir, storage, server.url, "search", "coarse", "--n-trials", "4",
               *LONGER_TRIALS)
        for i in (1, 2)
    ]
    run_all(workers)
    took = time.monotonic() - started

    client = MlflowClient(tracking_uri=server.url)
    figures = check_stage(storage, client, "coarse", 4)
    pids = {int(t.user_attrs["pid"]) for t in figures["finished"]}
    assert pids <= {w.proc.pid for w in workers}
    assert len(pids) == 2, f"one worker ran every trial: pids {pids}\n" + "\n".join(w.output() for w in workers)
    per_worker = [sum(f"[coarse-{t.number}] " in w.stderr() for t in figures["finished"]) for w in workers]
    assert all(per_worker), per_worker
    assert any("coarse: 4/4 trials finished, complete" in w.stdout() for w in workers)

    firsts = [min(t.datetime_start for t in figures["finished"] if t.user_attrs["pid"] == pid) for pid in pids]
    lag = abs((firsts[0] - firsts[1]).total_seconds())
    states = [t.state.name for t in figures["finished"]]
    print(f"\ndistributed coarse (2 workers, PostgreSQL + mlflow server): trials {len(states)} finished "
          f"({states.count('COMPLETE')} COMPLETE, {states.count('PRUNED')} PRUNED, {figures['surplus']} surplus), "
          f"runs 1 parent + {len(figures['children'])} children, errors {figures['errors']}, "
          f"pids {sorted(pids)} with {per_worker} trials (first ones {lag:.1f} s apart), workers took {took:.1f} s")
    assert figures["errors"] == 0


def test_fine_takes_its_bounds_from_coarse_on_postgres_and_an_mlflow_server(servers, folder, cifar_dir):
    storage, server = servers
    for stage, n in (("coarse", "3"), ("fine", "2")):
        run_all([Worker(stage, folder, cifar_dir, storage, server.url, "search", stage, "--n-trials", n)])

    client = MlflowClient(tracking_uri=server.url)
    coarse = check_stage(storage, client, "coarse", 3)
    fine = check_stage(storage, client, "fine", 2)
    done = [t for t in coarse["finished"] if t.state == TrialState.COMPLETE]
    lams = sorted(t.params["lambda"] for t in sorted(done, key=lambda t: t.value, reverse=True)[:2])
    lo, hi = lams[0] / 10**0.25, lams[1] * 10**0.25
    assert fine["study"].user_attrs["lambda_min"] == pytest.approx(lo)
    assert fine["study"].user_attrs["lambda_max"] == pytest.approx(hi)
    assert all(lo <= t.params["lambda"] <= hi for t in fine["finished"])
    (logged,) = json.loads(fine["parent"].data.params["space"])  # the derived space, as the parent run logged it
    assert (logged["key"], logged["low"], logged["high"]) == ("train.lambda", pytest.approx(lo), pytest.approx(hi))
    print(f"\ncoarse → fine on PostgreSQL + mlflow server: trials 3 + 2, runs 2 parents + "
          f"{len(coarse['children']) + len(fine['children'])} children, "
          f"errors {coarse['errors'] + fine['errors']}, fine λ in [{lo:.3g}, {hi:.3g}]")
    assert coarse["errors"] == fine["errors"] == 0
