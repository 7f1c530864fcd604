"""Shared fixtures: small generated CIFAR data and a project folder with fast stage settings."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import uuid
from pathlib import Path

import pytest

from tests.cifar_fixtures import make_cifar

ROOT = Path(__file__).resolve().parents[1]
# Small, fast stage settings: same keys as the real files, tiny numbers.
FAST = {"n_s": "10", "batch_size": "50", "val_size": "200", "hidden": "8", "cycles": "2", "checkpoints_per_cycle": "4"}


TOKEN_VAR = "PYTEST_HPSEARCH_TOKEN"  # not HPSEARCH_*: hpsearch_env passes it on to every subprocess


@pytest.fixture(autouse=True)
def _stop_what_the_test_started(monkeypatch):
    """Every process a test starts carries the test's token in its environment; whatever still runs when the
    test ends (a server whose parent was killed, a worker a failed assertion left behind) is killed here,
    process group and all, even after it was re-parented to init."""
    token = uuid.uuid4().hex
    monkeypatch.setenv(TOKEN_VAR, token)
    yield
    for pid in _carrying(f"{TOKEN_VAR}={token}".encode()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != os.getpgid(0):  # its own group (a server and its workers): all of it
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def started_by_this_test() -> dict[int, tuple[list[str], dict[str, str]]]:
    """The processes this test started that run now: pid -> (argv, environment at start), read from /proc."""
    found = {}
    for pid in _carrying(f"{TOKEN_VAR}={os.environ[TOKEN_VAR]}".encode()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # it ended meanwhile
            continue
        found[pid] = argv, dict(kv.split("=", 1) for kv in pairs if "=" in kv)
    return found


def _carrying(marker: bytes) -> list[int]:
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """A learnable CIFAR-layout data set: 5 × 100 training images, 100 test images."""
    return make_cifar(tmp_path_factory.mktemp("cifar"), n_per_batch=100)


def write_fast_studies(dest: Path, **changes: str) -> Path:
    """Copy studies/*.toml with FAST numbers (and any other key = value changes)."""
    out = dest / "studies"
    out.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "studies").glob("*.toml"):
        text = src.read_text()
        for key, value in (FAST | changes).items():
            if key == "val_size" and src.stem == "final":
                value = "100"
            text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, flags=re.M)
        (out / src.name).write_text(text)
    return out


@contextlib.contextmanager
def project_folder(folder: Path, cifar_dir: Path):
    """Work in `folder` as in a fresh clone: fast studies/, data via HPSEARCH_DATA, default stores."""
    write_fast_studies(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("HPSEARCH_DATA", str(cifar_dir))
        for var in ("HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "HPSEARCH_EXPERIMENT"):
            mp.delenv(var, raising=False)
        yield folder


@pytest.fixture
def project(tmp_path, cifar_dir) -> Path:
    with project_folder(tmp_path, cifar_dir):
        yield tmp_path


def hpsearch_env(project: Path, **extra) -> dict:
    """Environment for running `python -m pipeline` in a subprocess from the project folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPSEARCH_", "MLFLOW_"))}
    env.update({"HPSEARCH_DATA": os.environ.get("HPSEARCH_DATA", ""), "PYTHONPATH": str(ROOT)}, **extra)
    return env


def hpsearch(*args: str, code: int = 0):
    """Run the CLI in-process (typer's CliRunner) and check its exit code."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (rep_setup, rep_call): fixtures look at it in teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
