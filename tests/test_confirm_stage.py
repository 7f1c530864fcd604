"""The confirm stage on tiny data: its trials and runs, its choice and train-final's use of it, bad settings, a kill -9
then a rerun, and racing. (Candidates and scores on hand-made searches: test_confirm_candidates.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from pipeline.session import Session, Stores
from tests.conftest import hpsearch, hpsearch_env
from tests.test_errors import fails
from tests.test_reliability import client, runs_of

STORAGE = "studies/optuna.journal"


# ---- the stage on tiny data ----------------------------------------------------------------------
GRID = ["--set", 'confirm.strategy="grid"', "--set", 'confirm.placement="top"', "--set", "confirm.k=3",
        "--set", 'confirm.select="best-mean"']  # the first confirm stage's design: its top three, two rounds each


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory, cifar_dir):
    from tests.conftest import project_folder

    with project_folder(tmp_path_factory.mktemp("confirm"), cifar_dir) as folder:
        hpsearch("search", "coarse", "--n-trials", "4", "--no-prune")
        hpsearch("search", "fine", "--n-trials", "2", "--no-prune")
        out = {"first": hpsearch("search", "confirm", *GRID).output, "again": hpsearch("search", "confirm").output,
               "final": hpsearch("train-final").output,
               # --force: a training, which names where its λ came from, even if confirm chose the same λ
               "old": hpsearch("train-final", "--no-confirm", "--force").output}
        yield folder, out


def study_of(folder: Path, stage: str) -> optuna.Study:
    from pipeline.session import open_storage

    return optuna.load_study(study_name=f"cifar10-lambda-{stage}", storage=open_storage(str(folder / STORAGE)))


def test_k_times_r_trials_one_run_each_under_one_parent_and_a_rerun_adds_nothing(confirmed):
    folder, out = confirmed
    trials = study_of(folder, "confirm").get_trials()
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    pairs = {(t.params["lambda"], t.params["seed"]) for t in trials}
    assert len(pairs) == 6 and {s for _, s in pairs} == {0, 1}
    assert all(t.params["val_fold"] == t.params["seed"] for t in trials)  # seed i validates on block i
    parents = runs_of(folder, "tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = 'confirm'")
    assert len(parents) == 1
    children = runs_of(folder, f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    digests = {(r.data.params["data.val_fold"], r.data.params["data.digest"]) for r in children}
    assert len(digests) == 2 and {fold for fold, _ in digests} == {"0", "1"}  # every candidate on the same two
    assert "6 trainings in 2 round(s), complete" in out["again"]
    artifacts = {a.path for a in client(folder).list_artifacts(parents[0].info.run_id)}
    assert {"candidates.csv", "candidates.png"} <= artifacts
    chosen = study_of(folder, "confirm").user_attrs["chosen"]["train.lambda"]
    assert parents[0].data.metrics["chosen_lambda"] == pytest.approx(chosen)
    assert f"{chosen:.3g}" in parents[0].data.tags["hpsearch.chosen"]


def test_train_final_takes_confirms_choice_and_the_old_rule_without_it(confirmed):
    folder, out = confirmed
    chosen = study_of(folder, "confirm").user_attrs["chosen"]["train.lambda"]
    assert "confirm stage's choice" in out["final"] and f"λ = {chosen:.4g}" in out["final"]
    from pipeline.search.results import best_trial

    best = best_trial(Session(Stores(storage_url=str(folder / STORAGE))))
    source = f"{best.user_attrs['stage']} trial {best.number}, val acc {best.value:.4f}: best"
    assert f"({source})" in out["old"] and "confirm" not in out["old"], out["old"]
    assert f"λ = {best.params['lambda']:.4g}" in out["old"]
    (old,) = runs_of(folder, f"tags.`hpsearch.lambda_source` = '{source}'")
    assert old.info.run_id in out["old"] and old.info.run_id not in out["final"]


# ---- bad input: one line, nothing recorded changes --------------------------------------------
def test_confirm_before_any_search(project):
    fails("search", "confirm", code=1, match="no completed coarse or fine trial to confirm")
    assert not (project / "mlruns").exists() or not runs_of(project, "")


@pytest.mark.parametrize("args, match", [
    (["--set", "confirm.k=0"], "confirm.k must be ≥ 1"),
    (["--set", "confirm.seeds=0"], "confirm.seeds must be ≥ 1"),
    (["--set", 'confirm.select="median"'], "confirm.select must be one of best-mean, one-se, fit"),
    (["--set", "confirm.min_gap=-0.1"], "confirm.min_gap must be a number of decades"),
    (["--set", 'confirm.strategy="grid"', "--set", "confirm.seeds=3"], "3 rounds need 600, the training batches"),
    (["--set", "confirm.budget=2"], "confirm.budget 2 is smaller than confirm.k 4"),
    (["--set", 'confirm.strategy="tournament"'], "confirm.strategy must be one of grid, race"),
    (["--set", "confirm.budget=8"], "3 rounds need 600, the training batches hold 500"),
])
def test_bad_confirm_settings(project, args, match):
    hpsearch("search", "coarse", "--n-trials", "2", "--no-prune")
    before = study_of(project, "coarse").get_trials()
    fails("search", "confirm", *args, code=2, match=match)
    assert study_of(project, "coarse").get_trials() == before
    from pipeline.session import open_storage

    names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(str(project / STORAGE)))]
    assert "cifar10-lambda-confirm" not in names


@pytest.mark.slow
def test_kill_9_mid_confirm_then_a_rerun_completes_it(project):
    hpsearch("search", "coarse", "--n-trials", "3", "--no-prune")
    long = ["--set", "train.n_s=200000", "--set", "train.cycles=1"]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "search", "confirm", *long], cwd=project,
                            env=hpsearch_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = kill_when_a_confirm_trial_runs(project, proc, 120)[0]
    hpsearch("search", "confirm")  # the normal, short schedule: the killed pair is trained again
    trials = study_of(project, "confirm").get_trials()
    assert trials[killed.number].state.name == "FAIL"
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 6 and len({(t.params["lambda"], t.params["seed"]) for t in done}) == 6
    assert (killed.params["lambda"], killed.params["seed"]) in {(t.params["lambda"], t.params["seed"]) for t in done}


# ---- racing on tiny data --------------------------------------------------------------------------
RACE = ["--set", "confirm.k=3", "--set", "confirm.budget=5", "--set", "data.val_size=100"]  # race, spread, fit


def test_a_race_records_per_image_correctness_and_its_decision(project):
    from pipeline.search.confirm.paired import decode

    hpsearch("search", "coarse", "--n-trials", "4", "--no-prune")
    out = hpsearch("search", "confirm", *RACE).output
    trials = study_of(project, "confirm").get_trials()
    assert 3 <= len(trials) <= 5 and all(t.state.name == "COMPLETE" for t in trials)
    assert [t.user_attrs["round"] for t in trials[:3]] == [0, 0, 0]
    for t in trials:  # the bits decode to the run's own validation accuracy
        correct = decode(t.user_attrs["val_correct"], t.user_attrs["n_val"])
        assert t.user_attrs["n_val"] == 100 and correct.mean() == pytest.approx(t.value)
    child = trials[0].user_attrs["mlflow_run_id"]
    assert "val_correct.npy" in {a.path for a in client(project).list_artifacts(child)}
    parent = runs_of(project, "tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = 'confirm'")[0]
    assert {"candidates.csv", "candidates.png", "decision.md"} <= {
        a.path for a in client(project).list_artifacts(parent.info.run_id)}
    decision = client(project).download_artifacts(parent.info.run_id, "decision.md", str(project))
    assert "## Why this λ" in Path(decision).read_text() and "chosen by fit" in out
    chosen = study_of(project, "confirm").user_attrs["chosen"]["train.lambda"]
    lams = [t.params["lambda"] for t in trials]
    assert min(lams) <= chosen <= max(lams)
    assert f"λ = {chosen:.4g}" in hpsearch("train-final").output


@pytest.mark.slow
def test_kill_9_in_round_2_then_a_rerun_completes_round_2_and_adds_nothing_to_round_1(project):
    hpsearch("search", "coarse", "--n-trials", "3", "--no-prune")
    race = [*RACE, "--set", "confirm.z=100"]  # no candidate stops: round 2 trains two
    slow = ["--set", "train.n_s=1000"]  # a second or more a training: round 2 is reached, then killed in it
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "search", "confirm", *race, *slow], cwd=project,
                            env=hpsearch_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running = kill_when_a_confirm_trial_runs(project, proc, 600, round_=1)
    assert running, "round 2 never started"
    before = [(t.number, t.state.name, t.params) for t in study_of(project, "confirm").get_trials()
              if t.user_attrs.get("round") == 0]
    hpsearch("search", "confirm", *race)  # the normal, short schedule
    trials = study_of(project, "confirm").get_trials()
    assert [(t.number, t.state.name, t.params) for t in trials if t.user_attrs.get("round") == 0] == before
    assert len(before) == 3 and trials[running[0].number].state.name == "FAIL"
    done = [t for t in trials if t.state.name == "COMPLETE"]
    second = [t for t in done if t.user_attrs["round"] == 1]
    assert len(done) <= 5 and len(second) == 2 and running[0].params in [t.params for t in second]
    assert "chosen" in study_of(project, "confirm").user_attrs


def kill_when_a_confirm_trial_runs(project, proc, timeout_s: float, round_: int | None = None) -> list:
    """kill -9 `proc` once a confirm trial (of that round) runs with its MLflow run; returns those trials."""
    deadline, running = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline and not running:
        try:
            running = [t for t in study_of(project, "confirm").get_trials() if t.state.name == "RUNNING"
                       and "mlflow_run_id" in t.user_attrs and round_ in (None, t.user_attrs.get("round"))]
        except KeyError:
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    return running
