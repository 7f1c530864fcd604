"""Issue #8: no command shows or stores a password of its stores, run on working stores whose URLs hold one: not in
its output, MLflow's records, the Optuna storage or any file of the project; nor does the MLflow UI server's command
line, which `ps` shows to every user. The URLs and the checks: test_security_redaction.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import hpsearch_env
from tests.servers import free_port, mlflow_server
from tests.test_security_redaction import (
    SECRET,
    TOKEN,
    assert_no_secret,
    cli,
    mlflow_records,
    optuna_records,
    sqlite_urls,
)


def files_under(folder: Path) -> list[Path]:
    """The files under folder (databases, artifacts, logs) whose bytes hold a secret."""
    return [f for f in folder.rglob("*") if f.is_file() and any(s.encode() in f.read_bytes() for s in (SECRET, TOKEN))]


# ---- whole commands on working stores with passwords ----------------------------------------------------
def run_every_command(stores: tuple[str, ...], cifar_dir: Path) -> dict[str, str]:
    """Each command that opens a store, the failing ones first (no study yet): their output."""
    commands = {
        "report before any study": (["report"], 1),
        "fine before coarse": (["search", "fine"], 1),
        "coarse": (["search", "coarse", "--n-trials", "2"], 0),
        "fine": (["search", "fine", "--n-trials", "2"], 0),
        "train": (["train", "--config", "studies/exercise-1.toml"], 0),
        "train-final": (["train-final"], 0),
        "predict": (["predict", str(cifar_dir / "test_batch")], 0),
        "report": (["report"], 0),
        "report --json": (["report", "--json"], 0),
    }
    return {name: cli(*stores, *args, code=code) for name, (args, code) in commands.items()}


@pytest.mark.slow
def test_no_command_shows_or_stores_a_password_of_sqlite_stores(project, cifar_dir, capfd):
    storage, tracking = sqlite_urls(project)
    out = run_every_command(("--storage", storage, "--tracking-uri", tracking), cifar_dir)
    assert "test accuracy" in out["train-final"] and "cifar10-lambda-fine" in out["report"], out
    assert f"sqlite:///{project}/studies/optuna.db?password=***;" in out["report before any study"]
    from pipeline.session import open_storage

    captured = capfd.readouterr()  # whatever reached the file descriptors besides typer's streams
    assert_no_secret(*out.values(), captured.out, captured.err, mlflow_records(MlflowClient(tracking, tracking)),
                     optuna_records(open_storage(storage)))
    assert files_under(project) == []


@pytest.mark.slow
def test_no_command_shows_or_stores_the_password_of_a_tracking_server(project, cifar_dir, tmp_path_factory, capfd):
    storage, _ = sqlite_urls(project)
    with mlflow_server(tmp_path_factory.mktemp("server")) as server:
        tracking = server.url.replace("http://", f"http://hp:{SECRET}@")
        stores = ("--storage", storage, "--tracking-uri", tracking)
        ui = cli(*stores, "ui")
        out = run_every_command(stores, cifar_dir)
        records = mlflow_records(MlflowClient(server.url, server.url))
    first = ui.splitlines()[0]  # the runs view on the server itself, with no credentials in the link
    assert first.startswith(f"MLflow UI: {server.url}/#/experiments/") and "hp:" not in ui, ui
    assert "test accuracy" in out["train-final"], out
    from pipeline.session import open_storage

    captured = capfd.readouterr()
    assert_no_secret(ui, *out.values(), captured.out, captured.err, records, optuna_records(open_storage(storage)))
    assert files_under(project) == []


# ---- the UI server's command line ---------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, process group) of every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return table


def process_family(root: int) -> set[int]:
    """root, its descendants, and every process in the process group of any of them."""
    table = _proc_table()
    family, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in family:
                family.add(pid)
                todo.append(pid)
    groups = {table[pid][1] for pid in family if pid in table} - {os.getpgrp()}
    return family | {pid for pid, (_, group) in table.items() if group in groups}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the command lines in /proc")
def test_the_ui_server_command_line_holds_no_password(project):
    _, tracking = sqlite_urls(project)
    port = free_port()
    env = hpsearch_env(project, MLFLOW_TRACKING_URI=tracking)  # the environment: flags would be in `ps` too
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    seen: dict[int, str] = {}
    groups: set[int] = set()  # the process groups this `hpsearch ui` started (the server leads its own)
    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("MLflow UI:") for line in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert any(line.startswith("MLflow UI:") for line in lines), lines
        watch_until = time.monotonic() + 10  # the server's job runner starts its workers a few seconds later
        while time.monotonic() < watch_until:
            family = process_family(proc.pid)
            seen |= {pid: cmd for pid in family if (cmd := cmdline(pid))}
            groups |= {group for pid, (_, group) in _proc_table().items() if pid in family}
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for group in groups - {os.getpgrp()}:  # whatever survived the stop
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    assert any("uvicorn" in cmd for cmd in seen.values()), seen  # the server itself was looked at
    assert_no_secret(*seen.values(), "".join(lines), err)
    assert files_under(project) == []  # the server's log included
