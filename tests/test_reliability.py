"""Interrupts, kills, divergence and parallel workers: nothing recorded is lost, duplicated or left RUNNING."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import hpsearch_env

LONG = ["--set", "train.n_s=200000", "--set", "train.cycles=1"]  # a trial far longer than the test waits


def start(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], cwd=project, env=hpsearch_env(project),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def load(project: Path, stage: str = "coarse") -> optuna.Study:
    from pipeline.session import open_storage

    storage = open_storage(str(project / "studies/optuna.journal"))
    return optuna.load_study(study_name=f"cifar10-lambda-{stage}", storage=storage)


def client(project: Path) -> MlflowClient:
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    return MlflowClient(tracking_uri=uri)


def wait_for_running_trial(project: Path, proc: subprocess.Popen, timeout: float = 120) -> optuna.trial.FrozenTrial:
    """Until a trial is RUNNING with its MLflow run created (the process is mid-trial)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (project / "studies/optuna.journal").exists():
            try:
                running = load(project).get_trials(states=(optuna.trial.TrialState.RUNNING,))
            except KeyError:
                running = []
            ready = [t for t in running if "mlflow_run_id" in t.user_attrs]
            if ready:
                time.sleep(1.0)  # let it train a little
                return ready[0]
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"no running trial within {timeout} s: {proc.communicate()}")


def runs_of(project: Path, where: str):
    c = client(project)
    exp = c.get_experiment_by_name("cifar10-lambda")
    return c.search_runs([exp.experiment_id], where)


def child_runs(project: Path, stage: str = "coarse"):
    parents = runs_of(project, f"tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = '{stage}'")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    return parents[0], runs_of(project, f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_fails_the_trial_kills_the_runs_and_says_how_to_resume(project, sig, code):
    proc = start(project, "search", "coarse", "--n-trials", "2", *LONG)
    trial = wait_for_running_trial(project, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error:") and "run the same command to resume" in last
    assert load(project).trials[trial.number].state.name == "FAIL"
    parent, children = child_runs(project)
    assert parent.info.status == "KILLED"
    (child,) = children
    assert child.info.run_id == trial.user_attrs["mlflow_run_id"]
    assert child.info.status == "KILLED"
    assert child.data.tags["hpsearch.state"] == "FAIL"


@pytest.mark.slow
def test_kill_9_mid_trial_then_resume_completes_the_stage_exactly(project):
    proc = start(project, "search", "coarse", "--n-trials", "3", *LONG)
    orphan = wait_for_running_trial(project, proc)
    proc.kill()  # SIGKILL: no handler runs, the trial and its run stay RUNNING
    proc.wait()
    assert load(project).trials[orphan.number].state.name == "RUNNING"

    resumed = start(project, "search", "coarse", "--n-trials", "3")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    study = load(project)
    assert study.trials[orphan.number].state.name == "FAIL"
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    parent, children = child_runs(project)
    by_id = {r.info.run_id: r for r in children}
    assert len(by_id) == len(children) == 4, "3 finished trials + the killed one, each exactly one run"
    assert by_id[orphan.user_attrs["mlflow_run_id"]].info.status == "KILLED"
    for t in finished:
        assert by_id[t.user_attrs["mlflow_run_id"]].info.status == "FINISHED"
    assert sorted(int(r.data.tags["hpsearch.trial"]) for r in children) == sorted(t.number for t in study.trials)
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_three_workers_share_one_study_on_the_default_storage(project):
    procs = [start(project, "search", "coarse", "--n-trials", "6") for _ in range(3)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "database is locked" not in err and "Traceback" not in err
    study = load(project)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    extra = [t for t in study.trials if t not in finished]
    assert len(finished) == 6
    assert all(t.state.name == "FAIL" and t.user_attrs.get("surplus") for t in extra)
    assert len({t.user_attrs["pid"] for t in finished}) >= 2, "the workers shared the trials"
    parent, children = child_runs(project)
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in finished)
    assert all(r.info.status == "FINISHED" for r in children)
    print(f"\nparallel: {len(finished)} trials, {len(children)} runs, {len(extra)} surplus, errors: 0")


def test_a_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(project):
    result = CliRunner().invoke(app, [
        "search", "coarse", "--n-trials", "4", "--no-prune", "--sampler", "qmc",
        "--set", "space.train.lambda={ low = 1e-4, high = 1e4, log = true }",
    ])
    assert result.exit_code == 0, result.output
    study = load(project)
    diverged = [t for t in study.trials if "diverged" in t.user_attrs.get("reason", "")]
    assert diverged and all(t.state.name == "PRUNED" for t in diverged)
    assert any(t.state.name == "COMPLETE" for t in study.trials)
    assert len(study.trials) == 4
    _, children = child_runs(project)
    by_id = {r.info.run_id: r for r in children}
    for t in diverged:  # a result (λ too large), not a crash: FINISHED, with the state and the reason
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["hpsearch.state"] == "PRUNED"
        assert run.data.tags["hpsearch.reason"] == t.user_attrs["reason"]
        step = t.user_attrs["diverged_at_step"]
        assert step >= 0 and run.data.tags["hpsearch.reason"].startswith(f"training diverged at step {step}:")


def test_fine_waits_for_coarse_trials_still_running_elsewhere():
    """`search fine` must not derive its bounds while another worker's coarse trial may still win."""
    import os
    import threading

    from pipeline.workers import wait_until_settled

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, "host", "another-machine")
    study._storage.set_trial_user_attr(trial._trial_id, "pid", os.getpid())
    done = threading.Timer(1.0, lambda: study.tell(trial, 0.5))
    done.start()
    said = []
    t0 = time.monotonic()
    wait_until_settled(study, said.append, poll_s=0.1, report_s=0.5)
    assert time.monotonic() - t0 >= 0.9 and study.trials[0].state.name == "COMPLETE"
    assert said and "still running" in said[0]


def test_a_wait_for_a_live_worker_of_this_host_says_nothing_more():
    """The final a local --jobs worker trains shows its own progress: the others' wait for it, checked by process
    identity, adds no 'waiting N s so far' line every report_s (a trial of another host still gets them, above)."""
    import socket
    import threading

    from pipeline.workers import instance_of, wait_until_settled

    worker = subprocess.Popen(["sleep", "30"])
    try:
        study = optuna.create_study(direction="maximize")
        trial = study.ask()
        for key, value in {"host": socket.gethostname(), "pid": worker.pid,
                           "instance": instance_of(worker.pid)}.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
        threading.Timer(1.5, lambda: study.tell(trial, 0.5)).start()
        said = []
        wait_until_settled(study, said.append, poll_s=0.1, report_s=0.3)
        assert said == [] and study.trials[0].state.name == "COMPLETE"
    finally:
        worker.kill()
        worker.wait()

def test_a_round_is_over_when_its_own_trials_are_though_the_next_round_runs():
    """A confirm race's worker waits for its round's pairs only: a faster worker that already trains the next
    round's pair must not keep it waiting (it would then train nothing of that round, one training idle)."""
    import os
    import threading

    from pipeline.workers import wait_until_settled

    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.6):  # round 1: two pairs, finished
        study.tell(study.ask(), value)
    nxt = study.ask()  # round 2's first pair, on another worker
    study._storage.set_trial_user_attr(nxt._trial_id, "host", "another-machine")
    study._storage.set_trial_user_attr(nxt._trial_id, "pid", os.getpid())
    waiters = [threading.Thread(target=wait_until_settled, args=(study, print), kwargs={"poll_s": 0.1} | n,
                                daemon=True) for n in ({"n": 2}, {})]  # without n: every trial of the study
    for waiter in waiters:
        waiter.start()
    time.sleep(1.0)
    assert [w.is_alive() for w in waiters] == [False, True] and study.trials[2].state.name == "RUNNING"
    study.tell(nxt, 0.7)
    waiters[1].join(5.0)
    assert not waiters[1].is_alive()
