"""Issue #8: parallel TPE and QMC workers draw distinct λ; a trial's owner is a process instance, so a repeated pid
is not taken for a live owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import hpsearch_env
from tests.test_security_redaction import cli

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


# ---- parallel workers draw distinct λ ---------------------------------------------------------------------
def _workers_draw(kind: str, folder: Path, n_workers: int = 3, rounds: int = 3) -> list[list[float]]:
    """Workers started at once, each with its own sampler on one study: round r is every worker's r-th
    trial, each sampled before any λ of that round is stored (as processes starting together do: Optuna
    settles a trial's relative search space at its first suggest). λ per round, per worker."""
    from pipeline.search.sampling import make_sampler
    from pipeline.session import open_storage
    from pipeline.settings import config

    cfg = config.load("coarse", overrides={"search.sampler": kind, "search.n_trials": n_workers * rounds})
    studies = [optuna.create_study(study_name="cifar10-lambda-coarse", storage=open_storage(str(folder / "o.journal")),
                                   sampler=make_sampler(cfg), direction="maximize", load_if_exists=True)
               for _ in range(n_workers)]
    drawn = []
    for _ in range(rounds):
        trials = [study.ask() for study in studies]
        for trial in trials:
            assert trial.relative_params is not None  # sampled now, while no trial of the round holds a λ
        drawn.append([t.suggest_float("lambda", 1e-5, 1e-1, log=True) for t in trials])
        for study, trial in zip(studies, trials, strict=True):
            study.tell(trial, 0.4 + 0.01 * trial.number)
    return drawn


@pytest.mark.parametrize("kind", ["tpe", "qmc"])
def test_workers_with_their_own_sampler_never_repeat_each_other(kind, tmp_path):
    drawn = _workers_draw(kind, tmp_path)
    assert len(set(drawn[0])) == 3, f"{kind}: the workers' first trials drew the same λ: {drawn[0]}"
    assert len({lam for row in drawn for lam in row}) == 9, drawn


def start_worker(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=project,
                            env=hpsearch_env(project, **ONE_THREAD), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tpe", "qmc"])
def test_three_processes_on_one_study_draw_distinct_lambdas(project, kind):
    procs = [start_worker(project, "search", "coarse", "--n-trials", "9", "--sampler", kind) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    from pipeline.session import open_storage

    study = optuna.load_study(study_name="cifar10-lambda-coarse",
                              storage=open_storage(str(project / "studies/optuna.journal")))
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 9
    firsts = {}  # each process's first trial
    for t in sorted(finished, key=lambda t: t.number):
        firsts.setdefault(t.user_attrs["pid"], t)
    assert len(firsts) >= 2, "one process ran every trial: nothing shared"
    assert len({t.params["lambda"] for t in firsts.values()}) == len(firsts), firsts
    if kind == "tpe":  # QMC's later points come from a study-wide counter that Optuna does not lock
        assert len({t.params["lambda"] for t in finished}) == 9, [t.params["lambda"] for t in finished]


# ---- a trial's owner is a process instance, not (host, pid) ---------------------------------------------------
def running_trial(study: optuna.Study, **attrs) -> optuna.Trial:
    trial = study.ask()
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    return trial


def test_a_running_trial_of_this_pid_but_another_process_instance_is_recovered():
    """As after a container restart: pid 1 again, but not the process that ran the trial."""
    from pipeline.workers import instance_of, owner, recover_orphans

    me = owner()
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process whose pid the trials below claim
    try:
        study = optuna.create_study(direction="maximize")
        earlier = running_trial(study, host=me["host"], pid=os.getpid(), instance="another-boot:4242")
        mine = running_trial(study, **me)
        reused = running_trial(study, host=me["host"], pid=sleeper.pid, instance="another-boot:4242")
        live = running_trial(study, host=me["host"], pid=sleeper.pid, instance=instance_of(sleeper.pid))
        remote = running_trial(study, host="another-machine", pid=os.getpid(), instance="another-boot:4242")
        assert sorted(recover_orphans(study)) == [earlier.number, reused.number]
    finally:
        sleeper.kill()
        sleeper.wait()
    states = {t.number: t.state for t in study.trials}
    assert states[earlier.number] == states[reused.number] == TrialState.FAIL
    assert states[mine.number] == states[live.number] == states[remote.number] == TrialState.RUNNING


def test_a_trial_whose_owner_is_half_written_is_not_an_orphan():
    """Another worker is writing the owner of its new trial, one user attr at a time: a reader that sees the host
    but not yet the pid must not fail the trial (CI saw "Cannot tell a FAIL trial" from three QMC workers)."""
    from pipeline.workers import owner, recover_orphans

    study = optuna.create_study(direction="maximize")
    running_trial(study, host=owner()["host"])
    running_trial(study, host=owner()["host"], instance="another-boot:4242")
    assert recover_orphans(study) == []
    assert {t.state for t in study.trials} == {TrialState.RUNNING}


def test_waiting_for_other_workers_ignores_a_trial_of_this_pid_from_another_instance():
    from pipeline.workers import owner, wait_until_settled

    study = optuna.create_study(direction="maximize")
    running_trial(study, host=owner()["host"], pid=os.getpid(), instance="another-boot:4242")
    settled = threading.Event()
    waiter = threading.Thread(target=lambda: (wait_until_settled(study, print, poll_s=0.05), settled.set()),
                              daemon=True)
    waiter.start()
    assert settled.wait(10), "waits for a trial whose process is long gone"


def test_search_fine_does_not_wait_for_a_dead_instance_of_its_own_pid(project):
    from pipeline.session import open_storage
    from pipeline.workers import owner

    storage = open_storage("studies/optuna.journal")
    coarse = optuna.create_study(study_name="cifar10-lambda-coarse", storage=storage, direction="maximize")
    dist = {"lambda": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    for lam, acc in [(1e-4, 0.40), (1e-2, 0.45)]:
        coarse.add_trial(optuna.trial.create_trial(params={"lambda": lam}, distributions=dist, value=acc))
    coarse.set_user_attr("n_trials", 2)
    running_trial(coarse, host=owner()["host"], pid=os.getpid(), instance="another-boot:4242")

    def too_slow(signum, frame):
        raise TimeoutError("search fine still waits after 30 s")

    before = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(30)  # a wait for the dead instance would last until the alarm: it never ends by itself
    try:
        out = cli("search", "fine", "--n-trials", "1")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert "fine: 1/1 trials finished, complete" in out
    assert [t.state.name for t in coarse.get_trials()] == ["COMPLETE", "COMPLETE", "FAIL"]  # failed, not waited for
