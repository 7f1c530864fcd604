"""Every error a user can cause: one line on stderr naming the problem, a non-zero exit, no traceback,
and nothing already recorded is lost."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import shutil
import tarfile
import threading
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def fails(*args: str, code: int | None = None, match: str = "") -> str:
    result = runner.invoke(app, list(args))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert len(lines) >= 1 and lines[-1].startswith("error: "), result.stderr
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert match.lower() in errors[0].lower(), errors[0]
    return errors[0]


def copy_data(cifar_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bad" / "cifar-10-batches-py"
    shutil.copytree(cifar_dir, dest)
    return dest


# ---- data --------------------------------------------------------------------------------------
def test_missing_data_folder(project, monkeypatch):
    monkeypatch.setenv("HPSEARCH_DATA", str(project / "nowhere"))
    line = fails("search", "coarse", match="nowhere")
    assert "--data-dir or HPSEARCH_DATA" in line  # the CLI names its options; model/ does not


def test_missing_batch_file(project, cifar_dir, tmp_path, monkeypatch):
    folder = copy_data(cifar_dir, tmp_path)
    (folder / "data_batch_3").unlink()
    monkeypatch.setenv("HPSEARCH_DATA", str(folder))
    fails("search", "coarse", match="data_batch_3")


def test_truncated_batch(project, cifar_dir, tmp_path, monkeypatch):
    folder = copy_data(cifar_dir, tmp_path)
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    monkeypatch.setenv("HPSEARCH_DATA", str(folder))
    fails("search", "coarse", match="data_batch_2")


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(project, cifar_dir, tmp_path, monkeypatch):
    folder = copy_data(cifar_dir, tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}))
    monkeypatch.setenv("HPSEARCH_DATA", str(folder))
    fails("search", "coarse", match="data_batch_1")
    assert not marker.exists()


def test_archive_with_path_escaping_member(project, tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setenv("HPSEARCH_DATA", str(archive))
    fails("search", "coarse", match="escaped")
    assert not (tmp_path.parent / "escaped.txt").exists()


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_checksum_mismatch_on_download(project, http_server, monkeypatch):
    from model.cifar10 import fetch

    served, base = http_server
    (served / "cifar-10-python.tar.gz").write_bytes(b"not the archive you are looking for")
    monkeypatch.delenv("HPSEARCH_DATA")
    monkeypatch.setattr(fetch, "URL", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setattr(fetch, "MD5", hashlib.md5(b"the real thing").hexdigest())
    fails("search", "coarse", match="checksum")
    assert not list((project / "data").glob("*.part"))


# ---- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, match", [
    (["--set", "space.train.lambda={ low = 0.0, high = 0.1, log = true }"],
     "train.lambda: a log-scale range needs low > 0"),
    (["--set", "space.train.lambda={ low = 0.1, high = 0.01, log = true }"], "train.lambda: low must be < high"),
    (["--set", "space.train.learning_rate={ low = 0.1, high = 1.0 }"], "train.learning_rate: unknown setting"),
    (["--set", "space.data.val_size={ low = 100, high = 1000 }"], "data.val_size: unknown setting"),
    (["--set", "space.model.hidden={ choices = [] }"], "model.hidden: choices must be a non-empty list"),
    (["--set", "space.model.hidden={ low = 0.5, high = 2.0 }"], "model.hidden: bound 0.5 is not a int"),
    (["--set", "space.model.hidden={ choices = [50, 0.5] }"], "model.hidden: choice 0.5 is not a int"),
    (["--set", "space.train.lambda={ low = 1e-5 }"], "train.lambda: needs low and high"),
    (["--set", "search.lambda_min=1e-5"], "search.lambda_min moved to the λ line of [space]"),
    (["--set", "search.widen=0.5"], "search.widen moved to [fine] widen"),
    (["--set", 'search.pruner="sha"'], "search.pruner must be one of median, asha, hyperband, none"),
    (["--set", 'fine.rule="top3"'], "fine.rule must be one of top2, region"),
    (["--n-trials", "0"], "n_trials must be ≥ 1"),
    (["--set", "train.nsteps=3"], "unknown key train.nsteps"),
    (["--set", "train.n_s=\"many\""], "train.n_s must be int"),
    (["--set", "train.n_s"], "section.key=value"),
    (["--sampler", "grid"], "search.sampler must be one of"),
])
def test_bad_settings_are_usage_errors(project, args, match):
    fails("search", "coarse", *args, code=2, match=match)


def test_config_file_not_toml_names_the_line(project):
    bad = project / "bad.toml"
    bad.write_text("[train]\nn_s = 200\nbatch_size = = 4\n")
    assert "line 3" in fails("search", "coarse", "--config", str(bad), code=2)


def test_config_file_unknown_key_and_type(project):
    bad = project / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 0.1\n")
    fails("search", "coarse", "--config", str(bad), code=2, match="unknown key train.learning_rate")
    bad.write_text("[train]\nn_s = 1.5\n")
    fails("search", "coarse", "--config", str(bad), code=2, match="train.n_s must be int")
    fails("search", "coarse", "--config", str(project / "missing.toml"), code=2, match="not found")


# ---- studies -----------------------------------------------------------------------------------
def test_fine_without_a_coarse_study(project):
    fails("search", "fine", code=1, match="no coarse study")


def test_train_final_without_a_finished_trial(project):
    fails("train-final", code=1, match="no finished trial")


def test_bad_input_after_real_work_loses_nothing(project):
    """Every command fails cleanly, and nothing recorded changes. (A fine stage after a coarse stage with no
    completed trial is one line too: test_pipeline_fine_bounds.py; with one, it refines around it.)"""
    assert runner.invoke(app, ["search", "coarse", "--n-trials", "1"]).exit_code == 0
    before = snapshot(project)
    fails("search", "coarse", "--set", "space.train.lambda={ low = -1.0, high = 1.0, log = true }", code=2)
    fails("--storage", "foo://bar", "search", "coarse", match="unknown storage scheme")
    fails("--tracking-uri", "http://127.0.0.1:9", "search", "coarse", match="unreachable")
    assert snapshot(project) == before


def snapshot(project: Path):
    from pipeline.session import open_storage

    storage = open_storage(str(project / "studies/optuna.journal"))
    trials = [(s.study_name, t.number, t.state.name, t.params)
              for s in optuna.get_all_study_summaries(storage) for t in optuna.load_study(
                  study_name=s.study_name, storage=storage).trials]
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("cifar10-lambda")
    runs = sorted((r.info.run_id, r.info.status) for r in client.search_runs([exp.experiment_id]))
    return trials, runs


# ---- stores ------------------------------------------------------------------------------------
def test_unknown_storage_scheme(project):
    fails("--storage", "redis2://127.0.0.1/0", "search", "coarse", match="unknown storage scheme 'redis2'")


def test_unreachable_storage(project):
    fails("--storage", "postgresql+psycopg2://u:secret@127.0.0.1:9/db", "search", "coarse", match="unreachable")
    assert "secret" not in runner.invoke(
        app, ["--storage", "postgresql+psycopg2://u:secret@127.0.0.1:9/db", "search", "coarse"]).stderr


def test_unreachable_tracking_server(project):
    fails("--tracking-uri", "http://127.0.0.1:9", "search", "coarse", match="127.0.0.1:9")


def test_tracking_store_folder_not_writable(project):
    (project / "mlruns").write_text("a file where the store's folder should be")
    fails("search", "coarse", match="not writable")



def test_fine_refuses_an_incomplete_coarse_stage(project):
    assert runner.invoke(app, ["search", "coarse", "--n-trials", "2"]).exit_code == 0
    from pipeline.session import open_storage

    study = optuna.load_study(study_name="cifar10-lambda-coarse", storage=open_storage("studies/optuna.journal"))
    study.set_user_attr("n_trials", 3)  # as if a run aiming at 3 trials was killed after 2
    fails("search", "fine", code=1, match="coarse stage is incomplete (2 of 3")
