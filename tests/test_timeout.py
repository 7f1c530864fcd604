"""--timeout: no trial starts after the deadline, running ones finish, a rerun completes the stage; with --jobs the
deadline is one wall-clock time for every worker (pipeline/budget.py)."""

from __future__ import annotations

import time

import optuna
import pytest

from pipeline.names import DEADLINE_ENV
from pipeline.search.budget import Deadline, deadline_for
from pipeline.session import open_storage
from tests.conftest import hpsearch

N = 200  # a cap the budget never reaches on tiny data; the rerun then completes a smaller stage, k + 3 trials


def finished(project, experiment="cifar10-lambda", stage="coarse") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=f"{experiment}-{stage}", storage=open_storage(str(
        project / "studies/optuna.journal")))
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def test_a_workers_deadline_is_its_starters(monkeypatch):
    started = Deadline.after(60)
    monkeypatch.setenv(DEADLINE_ENV, started.env()[DEADLINE_ENV])
    assert deadline_for(5) == started, "a worker keeps the command's deadline, not its own --timeout from now"
    monkeypatch.delenv(DEADLINE_ENV)
    assert deadline_for(None) is None
    assert 4 < deadline_for(5).at - time.time() <= 5


def check_stopped(project, out: str, t0: float, took: float, timeout: float, n: int) -> list:
    first = finished(project)
    assert 1 <= len(first) < n, out
    last_start = max(t.datetime_start.timestamp() for t in first)
    longest = max((t.datetime_complete - t.datetime_start).total_seconds() for t in first)
    assert last_start <= t0 + timeout + 0.5, "no trial starts after the deadline"
    # + the summary and the other worker's exit: 3 s, or a trial's time where the machine is that loaded
    assert took <= timeout + longest + max(3, longest), (took, longest)
    return first


@pytest.mark.slow
def test_timeout_stops_within_one_trial_and_a_rerun_completes_exactly_n(project):
    from pipeline.api import Project

    p = Project()
    p.session.check_tracking()  # the stores open before the clock starts: the budget is the trials'
    t0 = time.time()
    summary = p.search("coarse", N, overrides={"search.prune": False}, timeout=3)
    k = len(check_stopped(project, "", t0, time.time() - t0, 3, N))
    assert summary.stopped == "the --timeout of 3 s" and not summary.complete and summary.n_finished == k
    out = hpsearch("search", "coarse", "--n-trials", str(k + 3), "--no-prune").stdout
    assert f"coarse: {k + 3}/{k + 3} trials finished, complete" in out
    assert len(finished(project)) == k + 3


@pytest.mark.slow
def test_one_deadline_for_two_workers(project):
    from pipeline.api import Project

    n, timeout = N, 10
    Project().session.check_tracking()  # a new tracking store's schema takes seconds: made before the clock starts
    t0 = time.time()
    out = hpsearch("search", "coarse", "--n-trials", str(n), "--no-prune", "--timeout", str(timeout),
                   "--jobs", "2").stdout
    first = check_stopped(project, out, t0, time.time() - t0, timeout, n)
    assert f"coarse: {len(first)}/{n} trials finished, stopped by the --timeout of 10 s; run the same command " \
           "to continue" in out
    assert len({t.user_attrs["pid"] for t in first}) == 2, "both workers ran trials, until the same deadline"
    k = len(first) + 3
    out = hpsearch("search", "coarse", "--n-trials", str(k), "--no-prune", "--jobs", "2").stdout
    assert f"coarse: {k}/{k} trials finished, complete" in out
    assert len(finished(project)) == k


@pytest.mark.slow
def test_pipeline_stops_at_the_timeout_and_says_how_to_continue(project):
    out = hpsearch("pipeline", "--n-trials", str(N), "--jobs", "1", "--timeout", "5").stdout
    k = len(finished(project))
    assert f"coarse: {k}/{N} trials finished, stopped by the --timeout of 5 s; run the same command to continue" in out
    assert "fine:" not in out and "test accuracy" not in out
