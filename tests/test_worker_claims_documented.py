"""What the docs say about workers and had no test (issue 25): one worker per core by default, the final on every
core, a worker's failure and Ctrl-C with --jobs, a failed final elsewhere, the waiting line, and the heartbeat
settings on every stage run."""

from __future__ import annotations

import os
import re
import threading
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import hpsearch, started_by_this_test

EXPERIMENT = "cifar10-lambda"


class Started(Exception):
    """Raised by a stub in place of the work: what was asked is all a test needs."""


def test_pipeline_without_jobs_starts_one_worker_per_core(project, monkeypatch):
    import pipeline.workers.local as local

    asked = []

    def workers(stores, args, jobs, **options):  # check=, env=
        asked.append(jobs)
        raise Started

    monkeypatch.setattr(local.os, "cpu_count", lambda: 3)
    monkeypatch.setattr(local, "worker_processes", workers)
    hpsearch("pipeline", code=1)
    hpsearch("pipeline", "--jobs", "2", code=1)
    assert asked == [3, 2]


def test_the_final_trains_with_every_core(project, cifar_dir, monkeypatch):
    import pipeline.final.claim as claim
    from pipeline.session import Session, Stores
    from pipeline.settings.config import load

    threads = []

    def train_run(*args, **kwargs):
        threads.append(asked[-1])
        raise Started

    asked = []
    real = claim.blas_threads

    def blas_threads(n):
        asked.append(n)
        return real(n)

    monkeypatch.setattr(claim.os, "cpu_count", lambda: 5)
    monkeypatch.setattr(claim, "blas_threads", blas_threads)
    monkeypatch.setattr(claim, "train_run", train_run)
    with pytest.raises(Started):
        claim.train_final(Session(Stores(data_dir=cifar_dir)), load("final"), lam=0.01)
    assert threads == [5]


def test_a_jobs_worker_that_exits_non_zero_is_reported(project):
    from pipeline.errors import UserError
    from pipeline.session import Stores
    from pipeline.workers.local import worker_processes as workers

    with pytest.raises(UserError, match=r"worker 1 of 2 exited with code 2 \(its error line is above\)"):
        with workers(Stores(), ["search", "no-such-stage"], 2):
            pass


def test_ctrl_c_with_jobs_stops_the_other_workers(project):
    from pipeline.session import Stores
    from pipeline.workers.local import worker_processes as workers

    with pytest.raises(KeyboardInterrupt), workers(Stores(), ["search", "coarse", "--set", "train.n_s=200000"], 3):
        deadline = time.monotonic() + 60
        while len(started_by_this_test()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(started_by_this_test()) == 2  # the two others run
        raise KeyboardInterrupt
    assert started_by_this_test() == {}  # stopped (and waited for) before Ctrl-C left the block


def foreign_final_claim(study: optuna.Study, digest: str) -> optuna.Trial:
    trial = study.ask()
    for key, value in {"host": "elsewhere", "namespace": "elsewhere-ns", "pid": 7, "instance": "x",
                       "config_digest": digest, "claim": f"final {digest}"}.items():
        trial.set_user_attr(key, value)
    return trial


def test_a_failed_final_on_another_worker_is_reported(project, cifar_dir):
    from pipeline.errors import UserError
    from pipeline.final.claim import train_final
    from pipeline.session import Session, Stores
    from pipeline.settings.config import load

    session = Session(Stores(data_dir=cifar_dir))
    cfg = load("final")
    study = optuna.create_study(study_name=f"{EXPERIMENT}-final", storage=session.storage, direction="maximize")
    other = foreign_final_claim(study, cfg.replace({"train.lambda": 0.01}).digest())

    waiting, say = threading.Event(), session.terminal.say
    session.terminal.say = lambda line: (say(line), line.startswith("final: trained by") and waiting.set())

    def fails():  # once this worker waits for it
        waiting.wait(120)
        other.set_user_attr("reason", "DivergedError: the loss is NaN at step 12")
        study.tell(other, state=TrialState.FAIL)

    threading.Thread(target=fails, daemon=True).start()
    with pytest.raises(UserError, match=r"the final training \(trial 0 of cifar10-lambda-final, on elsewhere\) "
                                        r"failed: DivergedError: the loss is NaN at step 12"):
        train_final(session, cfg, lam=0.01)


def test_a_wait_for_another_hosts_trial_says_for_what_and_how_long():
    from pipeline.workers import wait_until_settled

    study = optuna.create_study(study_name="s-coarse", direction="maximize")
    trial = study.ask()
    for key, value in {"host": "host-b", "namespace": "other", "pid": 40, "instance": "x"}.items():
        trial.set_user_attr(key, value)
    threading.Timer(1.2, lambda: study.tell(trial, 0.5)).start()
    said = []
    wait_until_settled(study, said.append, poll_s=0.05, report_s=0.5)
    line = re.compile(r"waiting \d s so far for 1 trial\(s\) of s-coarse still running: 0 on host-b pid 40")
    assert said and all(line.fullmatch(x) for x in said), said
    assert len(said) <= 3  # every report_s seconds, not every poll


def test_heartbeat_and_grace_are_used_and_recorded_on_every_stage_run(project, monkeypatch):
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_S", "7")
    monkeypatch.setenv("HPSEARCH_GRACE_S", "40")
    storage = f"sqlite:///{project}/studies/optuna.db"  # a database: Optuna's heartbeat is on
    hpsearch("--storage", storage, "search", "coarse", "--n-trials", "2")
    hpsearch("--storage", storage, "search", "fine", "--n-trials", "1")
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlruns/mlflow.db")
    parents = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                 "tags.`hpsearch.role` = 'stage'")
    assert sorted(p.data.tags["hpsearch.stage"] for p in parents) == ["coarse", "fine"]
    for parent in parents:
        assert (parent.data.params["heartbeat_s"], parent.data.params["grace_s"]) == ("7", "40")
    from pipeline.api import stores
    from pipeline.session import Session

    used = Session(stores(storage=storage)).storage
    assert (used.heartbeat_interval, used.grace_period) == (7, 40)
    assert os.environ["HPSEARCH_HEARTBEAT_S"] == "7"
