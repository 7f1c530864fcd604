"""The Python API (pipeline/api.py): docs/api.md's examples run, a search from Python is the CLI's search, errors
are the CLI's lines, and nothing prints unless asked."""

from __future__ import annotations

import contextlib
import io
import logging
import re

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from pipeline.api import Project
from pipeline.errors import ConfigError, UserError
from tests.conftest import ROOT, hpsearch, project_folder

# Everything of a run or a trial that says who or when ran it, not what ran.
OWN = {"host", "pid", "instance", "mlflow_run_id", "mlflow.parentRunId", "mlflow.runName", "mlflow.user",
       "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"}


def python_blocks(path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.M | re.S)


@pytest.mark.slow
def test_every_python_block_of_docs_api_md_runs(project):
    blocks = python_blocks(ROOT / "docs" / "api.md")
    assert len(blocks) >= 6
    ns: dict = {}
    printed = {}
    for i, block in enumerate(blocks):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(block, f"docs/api.md block {i + 1}", "exec"), ns)  # noqa: S102 - our own documentation
        except Exception as e:
            pytest.fail(f"docs/api.md block {i + 1} failed: {type(e).__name__}: {e}\n{block}")
        printed[block] = out.getvalue()
    # the errors block prints the line the page shows: a UserError's one line, not anything else it catches
    (errors,) = [b for b in blocks if "except UserError" in b]
    shown = re.search(r"prints one line[^\n]*\n\n```\n(.*?)\n```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert printed[errors] == shown.group(1) + "\n", printed[errors]
    trials = ns["project"].trials("coarse")
    assert len(trials) == 5 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert trials["mlflow_run_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert set(ns["project"].candidates()["chosen"]) == {True, False}
    assert 0.5 < ns["final"].test_accuracy <= 1 and ns["final"].model_version
    assert len(ns["predictions"]) == 8 and np.allclose(ns["predictions"].iloc[:, 2:].sum(axis=1), 1)
    # The same images as (n, 32, 32, 3) RGB arrays are the same predictions.
    rgb = ns["X"][:8].reshape(8, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.allclose(ns["project"].predict(rgb).iloc[:, 2:], ns["predictions"].iloc[:, 2:])


def stores_content(folder):
    """The Optuna trials and MLflow runs of a project folder, without what names the process or the time."""
    from pipeline.session import open_storage

    study = optuna.load_study(study_name="cifar10-lambda-coarse", storage=open_storage(str(folder / "studies" /
                                                                                         "optuna.journal")))
    trials = [(t.number, t.state.name, t.value, t.params, {k: v for k, v in t.user_attrs.items() if k not in OWN})
              for t in study.trials]
    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("cifar10-lambda")
    runs = sorted((r.info.run_name, r.info.status, r.data.params,
                   {k: v for k, v in r.data.tags.items() if k not in OWN},
                   {k: v for k, v in r.data.metrics.items() if k not in ("wall_time_s", "figures_s")},
                   [(d.dataset.name, d.dataset.digest, d.dataset.source, d.dataset.profile)
                    for d in r.inputs.dataset_inputs])
                  for r in client.search_runs([exp.experiment_id]))
    return trials, runs


@pytest.mark.slow
def test_a_search_from_python_records_what_the_cli_records(tmp_path, cifar_dir):
    with project_folder(tmp_path / "cli", cifar_dir):
        hpsearch("search", "coarse", "--n-trials", "3", "--set", "train.n_s=12", "--sampler", "random")
    with project_folder(tmp_path / "api", cifar_dir):
        Project().search("coarse", 3, overrides={"train.n_s": 12, "search.sampler": "random"})
    cli, api = stores_content(tmp_path / "cli"), stores_content(tmp_path / "api")
    assert len(cli[0]) == 3 and len(cli[1]) == 4  # three trials; their runs and the stage's run
    assert cli == api


def test_errors_are_the_lines_the_cli_prints(project):
    out = hpsearch("report", code=1).output
    with pytest.raises(UserError) as e:
        Project().report()
    assert out.strip() == f"error: {e.value}"

    out = hpsearch("search", "coarse", "--sampler", "nope", code=2).output
    with pytest.raises(ConfigError) as e:
        Project().search("coarse", overrides={"search.sampler": "nope"})
    assert out.strip() == f"error: {e.value}"

    with pytest.raises(UserError, match="no model registered as cifar10-mlp@champion"):
        Project().champion()
    with pytest.raises(UserError, match="unknown stage 'medium'"):
        Project().search("medium")


def test_nothing_prints_unless_asked_and_the_notebooks_logging_is_left_as_it_was(project, capfd):
    logging.getLogger("optuna").setLevel(logging.INFO)
    project_ = Project()
    project_.search("coarse", 2)
    assert len(project_.trials("coarse")) == 2
    assert capfd.readouterr() == ("", "")
    assert logging.getLogger("optuna").level == logging.INFO

    Project(progress=True).search("coarse", 3)
    assert "[coarse-2]" in capfd.readouterr().err


def test_the_stores_come_from_the_arguments_then_the_environment_then_the_defaults(monkeypatch, tmp_path):
    from pipeline.api import stores

    for var in ("HPSEARCH_DATA", "HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "HPSEARCH_EXPERIMENT"):
        monkeypatch.delenv(var, raising=False)
    assert stores() == stores(None, "studies/optuna.journal", None, "cifar10-lambda")
    monkeypatch.setenv("HPSEARCH_DATA", str(tmp_path))
    monkeypatch.setenv("HPSEARCH_STORAGE", "sqlite:///x.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///y.db")
    monkeypatch.setenv("HPSEARCH_EXPERIMENT", "exp")
    assert stores() == stores(tmp_path, "sqlite:///x.db", "sqlite:///y.db", "exp")
    assert stores(experiment="mine").experiment == "mine"
    monkeypatch.setenv("HPSEARCH_DATA", "")  # empty is unset, as on the command line
    assert stores().data_dir is None
