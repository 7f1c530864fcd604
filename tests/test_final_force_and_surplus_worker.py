"""`train-final --force` trains a new run and registers a new version; a worker that finds every trial of a stage
taken waits, then takes over a dead worker's trial. Checked from outside, as in test_pipeline_command_runs.py, with
its helpers and the same project fixture (the MLflow store already made)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from pipeline.names import MODEL_ALIAS, MODEL_NAME
from tests import test_pipeline_command_runs
from tests.conftest import hpsearch
from tests.test_pipeline_command_runs import (
    EXPERIMENT,
    FINISHED,
    client,
    runs,
    stage_run,
    studies,
    versions,
)
from tests.test_reliability import LONG, start, wait_for_running_trial

# The same fixtures as there: the project folder with its MLflow store made once per module.
empty_store, project = test_pipeline_command_runs.empty_store, test_pipeline_command_runs.project


# ---- train-final --force, and the surplus worker ------------------------------------------------------
def test_train_final_force_trains_a_new_run_and_registers_a_new_version(project):
    first = hpsearch("train-final", "--lambda", "0.001").output
    again = hpsearch("train-final", "--lambda", "0.001").output
    forced = hpsearch("train-final", "--lambda", "0.001", "--force").output
    assert "already trained" not in first and "already trained" in again and "already trained" not in forced
    finals = {r.info.run_id: r for r in runs(project, "tags.`hpsearch.role` = 'final'")}
    assert len(finals) == 2 and all(r.info.status == "FINISHED" for r in finals.values())
    (old,) = [run_id for run_id in finals if run_id in first]
    (new,) = [run_id for run_id in finals if run_id in forced]
    assert old != new and old in again
    by_version = {str(v.version): v.run_id for v in versions(project)}
    assert by_version == {"1": old, "2": new}
    assert str(client(project).get_model_version_by_alias(MODEL_NAME, MODEL_ALIAS).version) == "2"
    assert "models:/cifar10-mlp/2" in forced


@pytest.mark.slow
def test_a_worker_that_finds_every_trial_taken_waits_and_takes_over_a_dead_workers_trial(project):
    other = start(project, "search", "coarse", "--n-trials", "1", *LONG)
    try:
        running = wait_for_running_trial(project, other)
        other.send_signal(signal.SIGSTOP)  # alive, its trial RUNNING, and no CPU taken from this test
        waiter = start(project, "search", "coarse", "--n-trials", "1")
        said = []  # its lines, read as they come: proof that it started and looked at the stage
        reader = threading.Thread(target=lambda: said.extend(iter(waiter.stderr.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while "[coarse] 0/1 trials finished\n" not in said and time.monotonic() < deadline:
            assert waiter.poll() is None, said  # it must not exit
            time.sleep(0.1)
        assert "[coarse] 0/1 trials finished\n" in said, said  # started, found the stage full
        time.sleep(3)
        assert waiter.poll() is None, said  # and it waits for the other's trial, it does not exit
        (trial,) = studies(project)[f"{EXPERIMENT}-coarse"].trials
        assert trial.number == running.number and trial.state.name == "RUNNING", "it took no trial"
        other.kill()  # the other worker dies: its trial is failed and its slot taken over
        out = waiter.communicate(timeout=300)[0]
        reader.join(10)
        assert waiter.returncode == 0, said
        assert "coarse: 1/1 trials finished, complete" in out
        trials = studies(project)[f"{EXPERIMENT}-coarse"].trials
        assert [t.state.name for t in trials][:1] == ["FAIL"] and trials[-1].state.name in FINISHED
        assert stage_run(project, "coarse").info.status == "FINISHED"
    finally:
        if other.poll() is None:
            other.send_signal(signal.SIGINT)
            other.send_signal(signal.SIGCONT)
        other.communicate(timeout=60)
