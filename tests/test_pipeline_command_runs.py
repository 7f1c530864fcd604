"""`hpsearch pipeline` end to end on tiny data, as a user runs it, checked from outside: its output lines and
exit code, the Optuna studies and their trials, the MLflow runs and the registered model versions. (`train-final
--force`, and a worker that finds every trial of a stage taken: test_final_force_and_surplus_worker.py.)"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from pipeline.names import MODEL_ALIAS, MODEL_NAME
from pipeline.session import open_storage
from tests.conftest import hpsearch_env, write_fast_studies

EXPERIMENT = "cifar10-lambda"
FINISHED = ("COMPLETE", "PRUNED")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its tables made. Making them runs MLflow's migrations, one commit (and
    fsync) each: seconds of wall time on a busy disk, in every test that starts from nothing."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def project(project, empty_store) -> Path:
    """The project folder (see conftest), its MLflow store already made: still no experiment, run or model."""
    (project / "mlruns").mkdir()
    shutil.copy(empty_store, project / "mlruns" / "mlflow.db")
    return project


# ---- helpers: the project's stores, read as any other program would ------------------------------------
def tiny(folder: Path, trials: int = 2, **changes: str) -> None:
    """Fast stage files: `trials` trials in each search stage, 2 candidates × 1 seed in confirm (a grid: a race's
    rounds each need a holdout block of their own, more than the tiny data holds)."""
    write_fast_studies(folder, **({"n_trials": str(trials), "k": "2", "seeds": "1", "strategy": '"grid"'} | changes))


def change(folder: Path, stage: str, key: str, value: str) -> None:
    """Set `key = value` in studies/<stage>.toml."""
    path = folder / "studies" / f"{stage}.toml"
    text, n = re.subn(rf"^{key} = [^#\n]*", f"{key} = {value} ", path.read_text(), flags=re.M)
    assert n == 1, (stage, key)
    path.write_text(text)


def studies(folder: Path) -> dict[str, optuna.Study]:
    storage = open_storage(str(folder / "studies/optuna.journal"))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def client(folder: Path) -> MlflowClient:
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs(folder: Path, where: str, experiment: str = EXPERIMENT) -> list:
    c = client(folder)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id], where)


def stage_run(folder: Path, stage: str, experiment: str = EXPERIMENT):
    """The stage's one parent run."""
    found = runs(folder, f"tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = '{stage}'", experiment)
    assert len(found) == 1, (stage, [r.info.run_id for r in found])
    return found[0]


def children(folder: Path, parent, experiment: str = EXPERIMENT) -> dict[str, object]:
    return {r.info.run_id: r for r in runs(folder, f"tags.mlflow.parentRunId = '{parent.info.run_id}'", experiment)}


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.name in FINISHED]


def versions(folder: Path) -> list:
    return client(folder).search_model_versions(f"name = '{MODEL_NAME}'")


def check_stage(folder: Path, study: optuna.Study, stage: str, n: int, experiment: str = EXPERIMENT) -> dict:
    """Exactly n finished trials, each with its own FINISHED run under the stage's one FINISHED parent run."""
    done = finished(study)
    assert len(done) == n, (stage, [(t.number, t.state.name) for t in study.trials])
    parent = stage_run(folder, stage, experiment)
    assert parent.info.status == "FINISHED"
    runs_by_id = children(folder, parent, experiment)
    assert {t.user_attrs["mlflow_run_id"] for t in done} <= runs_by_id.keys()
    assert all(runs_by_id[t.user_attrs["mlflow_run_id"]].info.status == "FINISHED" for t in done)
    return runs_by_id


def the_final(folder: Path, experiment: str = EXPERIMENT):
    """The one final run, FINISHED, and the one registered model version, made from it and holding the alias."""
    (final,) = runs(folder, "tags.`hpsearch.role` = 'final'", experiment)
    assert final.info.status == "FINISHED"
    (version,) = versions(folder)
    assert version.run_id == final.info.run_id
    assert client(folder).get_model_version_by_alias(MODEL_NAME, MODEL_ALIAS).version == version.version
    return final


def local(ms: int) -> datetime:
    """An MLflow time (ms since the epoch) as Optuna records its times (naive local datetime)."""
    return datetime.fromtimestamp(ms / 1000)


class Command:
    """`python -m pipeline <args>` in the background, in its own process group, output to files."""

    def __init__(self, folder: Path, *args: str, name: str = "pipeline"):
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=folder,
                                         env=hpsearch_env(folder), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)

    def finish(self, timeout: float = TIMEOUT_S) -> str:
        """Wait for it to end with exit code 0; returns its standard output."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s\n{self.err.read_text()[-3000:]}")
        assert code == 0, self.err.read_text()[-3000:]
        assert "Traceback" not in self.err.read_text()
        return self.out.read_text()

    def kill(self) -> None:
        """kill -9 of everything the command started, as when its machine dies."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def pipeline(folder: Path, *args: str, name: str = "pipeline") -> str:
    return Command(folder, "pipeline", *args, name=name).finish()


def in_order(text: str, *lines: str) -> bool:
    at = [text.find(line) for line in lines]
    return -1 not in at and at == sorted(at)


# ---- the command ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_full_run_does_coarse_fine_confirm_and_final_in_order_once_each(project):
    tiny(project)
    out = pipeline(project, "--jobs", "1")
    assert in_order(out, "coarse: 2/2 trials finished, complete", "fine: 2/2 trials finished, complete",
                    "confirm: 2 trainings in 1 round(s), complete", "final: λ = "), out
    found = studies(project)
    stages = [found[f"{EXPERIMENT}-{stage}"] for stage in ("coarse", "fine", "confirm")]
    for stage, study, n in zip(("coarse", "fine", "confirm"), stages, (2, 2, 2), strict=True):
        check_stage(project, study, stage, n)
    for before, after in itertools.pairwise(stages):  # each stage settled before the next began
        assert max(t.datetime_complete for t in before.trials) <= min(t.datetime_start for t in after.trials)
    final = the_final(project)
    assert max(t.datetime_complete for t in stages[-1].trials) <= local(final.info.start_time)
    assert "confirm stage's choice" in final.data.tags["hpsearch.lambda_source"]
    assert final.info.run_id in out


@pytest.mark.slow
def test_kill_9_mid_fine_then_the_same_command_completes_without_retraining(project):
    tiny(project)
    change(project, "fine", "n_s", "500")  # fine trials of a second or more, so the kill lands inside one
    args = ("pipeline", "--jobs", "1")
    first = Command(project, *args, name="killed")
    deadline, journal, storage = time.monotonic() + TIMEOUT_S, project / "studies/optuna.journal", None
    while True:  # until one fine trial has finished and the next is training
        assert first.proc.poll() is None and time.monotonic() < deadline, first.err.read_text()[-3000:]
        time.sleep(0.2)
        if storage is None and journal.exists():
            storage = open_storage(str(journal))  # kept: it reads only what was appended since
        try:
            fine = optuna.load_study(study_name=f"{EXPERIMENT}-fine", storage=storage).trials if storage else []
        except KeyError:  # not created yet
            continue
        if [t for t in fine if t.state.name in FINISHED] and [t for t in fine if t.state.name == "RUNNING"
                                                               and "mlflow_run_id" in t.user_attrs]:
            break
    first.kill()
    before = {name: s.trials for name, s in studies(project).items()}
    (killed,) = [t for t in before[f"{EXPERIMENT}-fine"] if t.state.name == "RUNNING"]
    assert f"{EXPERIMENT}-confirm" not in before and not versions(project)

    out = Command(project, *args, name="resumed").finish()
    assert in_order(out, "coarse: 2/2 trials finished, complete", "fine: 2/2 trials finished, complete",
                    "confirm: 2 trainings in 1 round(s), complete", "final: λ = "), out
    after = studies(project)
    coarse, fine = after[f"{EXPERIMENT}-coarse"], after[f"{EXPERIMENT}-fine"]
    assert coarse.trials == before[f"{EXPERIMENT}-coarse"], "coarse was complete: nothing retrained"
    assert len(check_stage(project, coarse, "coarse", 2)) == 2
    kept = [t for t in before[f"{EXPERIMENT}-fine"] if t.state.name in FINISHED]
    assert [fine.trials[t.number] for t in kept] == kept, "finished fine trials untouched"
    assert fine.trials[killed.number].state.name == "FAIL"
    assert len(fine.trials) == 3, "the 2 finished ones: the one done before the kill, one after; and the killed one"
    fine_runs = check_stage(project, fine, "fine", 2)
    assert len(fine_runs) == 3 and fine_runs[killed.user_attrs["mlflow_run_id"]].info.status == "KILLED"
    check_stage(project, after[f"{EXPERIMENT}-confirm"], "confirm", 2)
    the_final(project)


@pytest.mark.slow
def test_config_set_runs_its_own_files_in_the_experiment_named_after_it(project):
    tiny(project)
    for stage in ("coarse", "fine", "final"):  # no tiny-confirm.toml: the set skips that stage
        text = (project / "studies" / f"{stage}.toml").read_text()
        (project / "studies" / f"tiny-{stage}.toml").write_text(text)
        change(project, f"tiny-{stage}", "hidden", "6")
    out = pipeline(project, "--jobs", "1", "--config-set", "tiny")
    assert in_order(out, "coarse: 2/2 trials finished, complete", "fine: 2/2 trials finished, complete",
                    "final: λ = "), out
    found = studies(project)
    assert set(found) >= {f"{EXPERIMENT}-tiny-coarse", f"{EXPERIMENT}-tiny-fine"}
    assert not {f"{EXPERIMENT}-{s}" for s in ("coarse", "fine", "confirm")} & set(found)
    assert f"{EXPERIMENT}-tiny-confirm" not in found
    for stage in ("coarse", "fine"):
        trial_runs = check_stage(project, found[f"{EXPERIMENT}-tiny-{stage}"], stage, 2, f"{EXPERIMENT}-tiny")
        assert {r.data.params["model.hidden"] for r in trial_runs.values()} == {"6"}, "the set's own files"
    final = the_final(project, f"{EXPERIMENT}-tiny")
    assert final.data.params["model.hidden"] == "6"
    assert not runs(project, "")  # nothing in the default experiment


@pytest.mark.slow
def test_jobs_2_share_every_search_stage_and_no_confirm_promotes_the_best_searched_trial_once(project):
    tiny(project, trials=3)
    for stage in ("coarse", "fine"):  # trials of seconds: a worker that starts a little late still finds some
        change(project, stage, "n_s", "2400")
    out = pipeline(project, "--jobs", "2", "--no-confirm")
    assert in_order(out, "coarse: 3/3 trials finished, complete", "fine: 3/3 trials finished, complete",
                    "final: λ = "), out
    assert "confirm" not in out
    found = studies(project)
    for stage in ("coarse", "fine"):  # each stage shared: trials of both workers in each
        study = found[f"{EXPERIMENT}-{stage}"]
        check_stage(project, study, stage, 3)
        owners = {(t.user_attrs["host"], t.user_attrs["pid"]) for t in finished(study)}
        assert len(owners) == 2, f"{stage}: trials of {owners}, not of two workers"
        assert all(t.state.name in FINISHED or t.user_attrs.get("surplus") for t in study.trials)
    assert f"{EXPERIMENT}-confirm" not in found
    assert not runs(project, "tags.`hpsearch.stage` = 'confirm'")
    final = the_final(project)  # one final run and one model version, whatever the number of workers
    source = final.data.tags["hpsearch.lambda_source"]  # "<stage> trial <number>, val acc …: best"
    stage, _, number = source.split(",")[0].split()
    promoted = found[f"{EXPERIMENT}-{stage}"].trials[int(number)]
    searched = [t.value for s in ("coarse", "fine") for t in finished(found[f"{EXPERIMENT}-{s}"])]
    assert promoted.state.name == "COMPLETE" and promoted.value == max(searched), source
    assert float(final.data.params["train.lambda"]) == pytest.approx(promoted.params["lambda"])
