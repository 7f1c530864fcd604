"""The command line itself: help, README coverage, lazy imports, the smaller commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import ROOT

runner = CliRunner()


def commands(group, prefix: str = ""):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a sub-group such as `search`
            yield from commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


ALL = list(commands(get_command(app)))


def test_every_command_has_help_with_an_example_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert len(ALL) >= 7
    for name, cmd in ALL:
        assert cmd.help and ("Example: hpsearch" in cmd.help or "Example: HPSEARCH" in cmd.help), name
        assert f"hpsearch {name}" in readme, f"`hpsearch {name}` is not in the README"
        result = runner.invoke(app, [*name.split(), "--help"])
        assert result.exit_code == 0, result.output
        for param in cmd.params:
            if param.param_type_name == "option" and not param.hidden:
                assert param.opts[0] in result.output, (name, param.opts[0])


def test_help_shows_defaults_and_environment_variables():
    out = runner.invoke(app, ["--help"], terminal_width=200).output
    for text in ("HPSEARCH_DATA", "HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "HPSEARCH_EXPERIMENT",
                 "studies/optuna.journal", "sqlite:///mlruns/mlflow.db", "cifar10-lambda"):
        assert text in out, text


def test_help_does_not_import_optuna_or_mlflow():
    """`hpsearch --help` must stay fast: the heavy libraries load inside the commands."""
    code = ("import sys, pipeline.cli; print(sorted(m for m in ('optuna', 'mlflow', 'numpy', 'matplotlib', "
            "'optuna_dashboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_python_dash_m_pipeline_works():
    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "search" in result.stdout and "train-final" in result.stdout


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["search", "coarse", "--n-trails", "3"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_train_runs_exercise_1_and_tracks_it(project):
    from mlflow.tracking import MlflowClient

    result = runner.invoke(app, ["train", "--config", "studies/exercise-1.toml", "--lambda", "0.02"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10-lambda").experiment_id])
    assert run.info.run_name == "exercise-1" and run.info.status == "FINISHED"
    assert run.data.params["data.split"] == "exercise" and float(run.data.params["lambda"]) == 0.02
    assert run.data.metrics["test_accuracy"] > 0.3  # learnable data, far above chance
    assert "curves.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_gradcheck_prints_table_1(project):
    result = runner.invoke(app, ["gradcheck", "--samples", "3", "--dims", "10", "--hidden", "6"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"W1", "b1", "W2", "b2"}
    assert all(float(r[2]) < 1e-6 for r in rows.values())


def test_report_without_studies_is_one_line(project):
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 1 and result.stderr.startswith("error: no search study")


def test_plain_progress_when_not_a_terminal(capsys, monkeypatch):
    import io

    import rich.console

    from pipeline.terminal.lines import Bars, Lines, open_terminal

    assert type(open_terminal()) is Lines  # pytest captures stderr: not a terminal
    assert type(open_terminal(interactive=True)) is Bars
    p = Lines()
    p.stage("coarse", 8, 0)
    p.trial_start("coarse-0", "λ = 0.001", 100)
    p.checkpoint(50, {"val_accuracy": 0.3})
    p.trial_end("coarse-0", "COMPLETE", 0.42, 1, 8, 0.42)
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["[coarse] 0/8 trials finished", "[coarse-0] λ = 0.001, 100 steps"]
    assert lines[2].startswith("[coarse-0] COMPLETE val acc 0.4200 in ") and lines[2].endswith(
        " s (1/8 finished, best so far 0.4200)") and len(lines) == 3

    # The interactive bars, drawn on a recording console: the trial lines and both bars' last state.
    screen = rich.console.Console(file=io.StringIO(), width=100, record=True)
    monkeypatch.setattr(rich.console, "Console", lambda **kwargs: screen)
    with Bars() as bars:
        bars.stage("coarse", 8, 0)
        bars.trial_start("coarse-0", "λ = 0.001", 100)
        bars.checkpoint(50, {"val_accuracy": 0.3})
        bars.trial_end("coarse-0", "COMPLETE", 0.42, 1, 8, 0.42)
    shown = screen.export_text().splitlines()
    assert shown[0] == "[coarse-0] λ = 0.001, 100 steps"
    assert shown[1].startswith("[coarse-0] COMPLETE val acc 0.4200 in ") and shown[1].endswith(
        " s (1/8 finished, best so far 0.4200)")
    trials_bar, steps_bar = shown[2].split(), shown[3].split()
    assert trials_bar[:2] == ["coarse", "trials"] and trials_bar[-4:-1] == ["1/8", "best", "0.4200"]
    assert steps_bar[:3] == ["coarse-0", "λ", "="] and steps_bar[-5:-1] == ["50/100", "val", "acc", "0.3000"]
    assert len(shown) == 4 and capsys.readouterr().err == ""  # nothing bypassed the console


STUDY_FILES = sorted(p.stem for p in (ROOT / "studies").glob("*.toml"))


@pytest.mark.parametrize("stage", STUDY_FILES)
def test_shipped_settings_files_are_valid_and_documented(stage):
    from pipeline.settings import config

    cfg = config.load(stage, ROOT / "studies" / f"{stage}.toml")
    text = (ROOT / "studies" / f"{stage}.toml").read_text()
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"{stage}.toml: undocumented key: {line}"
    if not stage.startswith("wide"):  # the report's network; the wide study searches its width
        assert cfg.model.hidden == 50


def test_searches_and_the_final_measure_train_metrics_on_a_subset_the_exercises_on_everything():
    """train_eval_size only changes which training rows the train_* curves are computed on: searches use a
    fixed seeded 5,000-image subset, and so does the pipeline's final (evaluating all 49,000 images 30 times made
    it 30 % slower), as does the wide final; the report's exercises' curves use every training image."""
    from pipeline.settings import config

    def size(stage):
        return config.load(stage, ROOT / "studies" / f"{stage}.toml").train.train_eval_size

    assert [size(s) for s in ("coarse", "fine", "confirm", "final", "wide-final")] == [5000] * 5
    assert [size(s) for s in ("exercise-1", "exercise-2")] == [0] * 2



@pytest.mark.parametrize("user, expected", [(None, False), ("1", True)])
def test_numpy_asks_for_no_huge_pages_unless_the_user_says_so(user, expected):
    """NumPy's madvise(MADV_HUGEPAGE) made loading CIFAR-10 6× slower on kernels that compact memory on each fault;
    the command line turns it off before NumPy loads (workers inherit it), and a user's setting wins."""
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if user is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = user
    code = ("import pipeline.cli, numpy; from numpy._core.multiarray import _get_madvise_hugepage as get; "
            "print(get())")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(expected)
