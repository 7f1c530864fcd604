"""Stage mechanics without training: the pruner's schedule, storage URLs, orphan detection."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import optuna
import pytest

from pipeline.errors import UserError
from pipeline.search.sampling import make_pruner
from pipeline.session import open_storage
from pipeline.settings import config
from pipeline.urls import redact
from pipeline.workers import pid_alive


def test_pruner_judges_only_at_the_end_of_the_second_to_last_cycle():
    cfg = config.load("coarse", overrides={"train.n_s": 10, "train.checkpoints_per_cycle": 4, "train.cycles": 3})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    steps = cfg.train_settings().checkpoint_steps()  # 5, 10, ..., 20 (cycle 1), ..., 40 (cycle 2), ..., 60
    for _ in range(3):  # good trials that set the median
        t = study.ask()
        for s in steps:
            t.report(0.8, s)
        study.tell(t, 0.8)
    bad = study.ask()
    decisions = {}
    for s in steps:
        bad.report(0.1, s)
        decisions[s] = bool(bad.should_prune())
    # Not mid-cycle (η high), not after the first cycle (regularised networks still lag there).
    assert not any(decisions[s] for s in steps if s < 40)
    assert decisions[40] is True  # the end of the second-to-last cycle


def test_no_prune_means_no_pruning():
    cfg = config.load("coarse", overrides={"search.prune": False})
    assert isinstance(make_pruner(cfg), optuna.pruners.NopPruner)


def test_storage_urls(tmp_path):
    assert isinstance(open_storage(str(tmp_path / "s" / "optuna.journal")), optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/o.db"), optuna.storages.RDBStorage)
    with pytest.raises(UserError, match="unknown storage scheme 'ftp'"):
        open_storage("ftp://host/x")
    assert redact("postgresql+psycopg2://u:pw@h/db") == "postgresql+psycopg2://u:***@h/db"


def test_a_journal_lock_left_by_a_killed_writer_can_be_judged_stale(tmp_path, monkeypatch):
    """Optuna's journal lock is a symlink to the journal. A process killed while writing leaves it behind, and
    the next writer releases it once the journal has been still for the grace period, judged by stat() through
    the link. With a relative journal path the link dangled (it resolves from its own folder): stat failed, and
    every later command spun at full CPU forever."""
    from optuna.storages.journal import JournalFileSymlinkLock

    monkeypatch.chdir(tmp_path)
    study = optuna.create_study(study_name="s", storage=open_storage("studies/optuna.journal"))
    monkeypatch.setattr(JournalFileSymlinkLock, "release", lambda self: None)  # killed while holding the lock
    study.set_user_attr("written", True)
    lock = tmp_path / "studies/optuna.journal.lock"
    assert lock.is_symlink(), "the lock is where Optuna's writer left it"
    assert lock.resolve() == (tmp_path / "studies/optuna.journal").resolve() and lock.stat().st_mtime > 0


def test_pid_alive_tells_dead_and_zombie_processes():
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert not pid_alive(zombie.pid)
    finally:
        zombie.wait()


def test_random_sampler_is_reproducible_per_trial_and_differs_between_studies():
    from pipeline.search.sampling import TrialSeededRandomSampler

    def lambdas(name, seed=0, n=5):
        study = optuna.create_study(study_name=name, sampler=TrialSeededRandomSampler(seed), direction="maximize")
        out = []
        for _ in range(n):
            t = study.ask()
            out.append(t.suggest_float("lambda", 1e-5, 1e-1, log=True))
            study.tell(t, 0.0)
        return out

    a = lambdas("x-coarse")
    assert a == lambdas("x-coarse")  # a rerun draws the same λ for the same trial numbers
    assert len(set(a)) == 5 and all(1e-5 <= v <= 1e-1 for v in a)
    assert a != lambdas("x-fine") and a != lambdas("x-coarse", seed=1)


def test_stratified_draws_cover_every_slice_of_the_log_range():
    from pipeline.search.sampling import TrialSeededRandomSampler

    study = optuna.create_study(sampler=TrialSeededRandomSampler(0, strata=8), direction="maximize")
    lams = []
    for _ in range(8):
        t = study.ask()
        lams.append(t.suggest_float("lambda", 1e-5, 1e-1, log=True))
        study.tell(t, 0.0)
    import math

    slices = sorted(int((math.log10(v) + 5) / 0.5) for v in lams)  # eight half-decades
    assert slices == list(range(8))



def test_stratified_draws_skip_slices_held_by_live_trials_after_failures():
    """Trial 2 fails and is redrawn; two trials are still running elsewhere; a surplus trial draws and
    yields. The finished and running trials still cover the eight slices, one each."""
    import math

    from optuna.trial import TrialState

    from pipeline.search.sampling import TrialSeededRandomSampler

    study = optuna.create_study(sampler=TrialSeededRandomSampler(0, strata=8), direction="maximize")

    def draw() -> optuna.Trial:
        trial = study.ask()
        trial.suggest_float("lambda", 1e-5, 1e-1, log=True)
        return trial

    for _ in range(8):
        trial = draw()
        if trial.number == 2:
            study.tell(trial, state=TrialState.FAIL)  # its slice is free again
        elif trial.number not in (5, 6):  # 5 and 6 keep running, holding their slices
            study.tell(trial, 0.5)
    study.tell(draw(), 0.5)  # trial 8, the redraw of trial 2
    surplus = draw()  # every slice is taken now; it yields its place
    study._storage.set_trial_user_attr(surplus._trial_id, "surplus", True)
    study.tell(surplus, state=TrialState.FAIL)
    live = study.get_trials(states=(TrialState.COMPLETE, TrialState.RUNNING))
    assert sorted(t.number for t in live) == [0, 1, 3, 4, 5, 6, 7, 8]
    slices = sorted(int((math.log10(t.params["lambda"]) + 5) / 0.5) for t in live)  # eight half-decades
    assert slices == list(range(8))


# ---- the stage's parent run: exactly one, whatever the races -----------------------------------------------
@pytest.fixture
def stage(tmp_path):
    """A coarse study (no parent run yet) and the MLflow store beside it; `session()` opens them as a new
    worker would."""
    from pipeline.session import Session, Stores

    stores = Stores(storage_url=str(tmp_path / "optuna.journal"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")

    def session() -> Session:
        return Session(stores)

    optuna.create_study(study_name="cifar10-lambda-coarse", storage=session().storage, direction="maximize")
    return session


def parent_runs(session) -> list:
    return session.tracker.find_runs(study="cifar10-lambda-coarse", role="stage")


def _ensure(session):
    from pipeline.search.stages import ensure_parent_run

    return ensure_parent_run(session, session.load_study("coarse"), "coarse")


def test_two_workers_creating_the_parent_run_at_once_end_with_one(stage):
    sessions = [stage() for _ in range(2)]
    for s in sessions:
        assert s.tracker.experiment_id  # open the stores first, so the two calls below overlap
    start, results = threading.Barrier(2), []

    def worker(session):
        start.wait()
        results.append(_ensure(session))

    threads = [threading.Thread(target=worker, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (run_id,) = {r for r, _ in results}
    assert sorted(new for _, new in results) == [False, True]
    assert [r.info.run_id for r in parent_runs(sessions[0])] == [run_id]


def test_workers_without_a_shared_lock_keep_the_oldest_parent_run(stage, monkeypatch):
    """Two machines on one tracking server: no file lock. Both look and find nothing, both create a run,
    then both look again: each keeps the older run, and the newer one is deleted."""
    import contextlib

    sessions = [stage() for _ in range(2)]
    for s in sessions:
        assert s.tracker.experiment_id  # open the stores first, so the calls below overlap
    both_looked, both_created = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)
    first_created, created = threading.Event(), {}
    for i, s in enumerate(sessions):
        monkeypatch.setattr(s.tracker, "lock", contextlib.nullcontext, raising=False)
        find, create, looked = s.tracker.find_runs, s.tracker.create_run, []

        def find_then_wait(*args, _find=find, _looked=looked, **kwargs):
            runs = _find(*args, **kwargs)
            if not _looked:  # the race: neither creates before both have looked once
                _looked.append(runs)
                both_looked.wait()
            return runs

        def create_then_wait(*args, _create=create, _i=i, **kwargs):
            if _i == 1:  # strictly after the other (start times are in ms), so "oldest" is known
                first_created.wait(30)
                time.sleep(0.01)
            created[_i] = _create(*args, **kwargs)
            first_created.set()
            both_created.wait()
            return created[_i]

        monkeypatch.setattr(s.tracker, "find_runs", find_then_wait)
        monkeypatch.setattr(s.tracker, "create_run", create_then_wait)

    results, errors = [], []

    def worker(session):
        try:
            results.append(_ensure(session))
        except BaseException as e:  # a thread's exception only warns: make it fail the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert len(results) == 2 and len(created) == 2, "both looked, both created: the race happened"
    assert sorted(results) == sorted([(created[0], True), (created[0], False)]), "both keep the oldest run"
    assert [r.info.run_id for r in parent_runs(sessions[0])] == [created[0]]


def test_an_existing_parent_run_is_found_when_the_study_lost_its_id(stage):
    session = stage()
    existing = session.tracker.create_run("coarse", {"study": "cifar10-lambda-coarse", "role": "stage",
                                                     "stage": "coarse"})
    assert _ensure(session) == (existing, False)
    assert [r.info.run_id for r in parent_runs(session)] == [existing]
    assert session.load_study("coarse").user_attrs["mlflow_parent_run_id"] == existing


def test_of_two_parent_runs_the_oldest_is_kept_with_every_trial_run(stage):
    """Left by an earlier race: the newer run is deleted, and its trials' runs move to the kept one."""
    session = stage()
    tags = {"study": "cifar10-lambda-coarse", "role": "stage", "stage": "coarse"}
    oldest = session.tracker.create_run("coarse", tags)
    time.sleep(0.01)  # start times in ms
    newer = session.tracker.create_run("coarse", tags)
    trial_run = session.tracker.create_run("coarse-3", {"trial": 3, "role": "trial"}, parent_run_id=newer)
    assert _ensure(session) == (oldest, False)
    assert [r.info.run_id for r in parent_runs(session)] == [oldest]
    assert [r.info.run_id for r in session.tracker.children(oldest)] == [trial_run]


def test_one_se_rule_prefers_the_largest_lambda_tied_with_the_best(tmp_path):
    from pipeline.search.results import best_trial
    from pipeline.session import Session, Stores

    session = Session(Stores(storage_url=str(tmp_path / "optuna.journal")))
    study = optuna.create_study(study_name="cifar10-lambda-coarse", storage=session.storage, direction="maximize")
    for lam, acc in [(1e-5, 0.497), (3e-3, 0.492), (1e-2, 0.485), (5e-2, 0.42)]:
        study.enqueue_trial({"lambda": lam}, user_attrs={"n_val": 5000})  # SE at 0.497 is 0.0071
        t = study.ask()
        t.suggest_float("lambda", 1e-5, 1e-1, log=True)
        study.tell(t, acc)
    assert best_trial(session, "best").params["lambda"] == 1e-5
    assert best_trial(session, "one-se").params["lambda"] == 3e-3
