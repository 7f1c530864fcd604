"""`hpsearch ui`: a real MLflow UI on 127.0.0.1 that Ctrl-C stops with everything it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import hpsearch, hpsearch_env, write_fast_studies

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


def process_group(pgid: int) -> dict[int, str]:
    """pid → command line of every live process in a process group, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found[int(stat.parent.name)] = cmdline
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc to check sockets and processes")
def test_ui_serves_on_localhost_lean_and_ctrl_c_stops_everything(tmp_path):
    write_fast_studies(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ui", "--port", str(port)], cwd=tmp_path, env=hpsearch_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while not any("Ctrl-C to stop" in line for line in lines) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        runs = f"{url}/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey="
        assert lines[:2] == [f"MLflow UI: {runs}hpsearch-stages\n", f"  trials by val acc: {runs}hpsearch-ranked\n"], \
            (lines, proc.poll())
        assert lines[2].startswith("  Ctrl-C to stop; server log "), "no stage has runs yet: no compare links"
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(url + "/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name="
                                    "cifar10-lambda", timeout=10) as r:
            assert r.status == 200, "the UI shows the project's store, with its experiment"
        addrs = listening(port)
        assert addrs and set(addrs) == {"0100007F"}, f"bound to {addrs}, expected 127.0.0.1 only"
        (server,) = [pid for pid in descendants(proc.pid) if os.getpgid(pid) == pid]  # mlflow leads its own group
        # MLflow's job runner (huey consumers, ~1.7 GB) starts a moment after /health answers, if at all: what
        # keeps it off is in the server's environment from its start, so read that instead of waiting to count.
        environ = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        assert b"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in environ
        group = process_group(server)
        assert len(group) <= 2 and not [c for c in group.values() if "huey" in c or "job_runner" in c], group
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read()
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert process_group(server) == {}, "server processes left behind"
    assert listening(port) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert took < 20


def test_a_taken_port_is_one_line(project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(app, ["ui", "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use; stop what uses it or pick another with --port"
    ]


@pytest.mark.slow
def test_an_http_tracking_server_is_the_ui_already(project, monkeypatch):
    """The links point at the tracking server, --open opens the first; nothing local starts or is created."""
    import webbrowser

    from tests.servers import mlflow_server

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url))
    with mlflow_server(project / "server") as server:
        hpsearch("--tracking-uri", server.url, "search", "coarse", "--n-trials", "2")
        result = runner.invoke(app, ["--tracking-uri", server.url, "ui", "--port", "5999", "--open"])
    assert result.exit_code == 0, result.output
    assert opened == [result.stdout.splitlines()[0].removeprefix("MLflow UI: ")]
    lines = result.stdout.splitlines()
    runs = f"{server.url}/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey="
    assert lines[:2] == [f"MLflow UI: {runs}hpsearch-stages", f"  trials by val acc: {runs}hpsearch-ranked"]
    assert len(lines) == 3 and lines[2].startswith(f"  compare coarse:    {server.url}/#/compare-runs?runs=[")
    assert not (project / "mlruns").exists(), "nothing started, nothing created"


def test_an_unreachable_http_tracking_server_is_one_line(project):
    port = free_port()
    result = runner.invoke(app, ["--tracking-uri", f"http://127.0.0.1:{port}", "ui"])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and "unreachable" in result.stderr



def test_a_tracking_servers_links_carry_no_credentials():
    from pipeline.tracking.links import ui_base

    assert ui_base("https://ann:s3cret@mlflow.example:8443/team/?token=abc", 5000) == "https://mlflow.example:8443/team"
    assert ui_base("http://[::1]:5001", 5000) == "http://[::1]:5001"
    assert ui_base("sqlite:////srv/mlruns/mlflow.db", 5123) == "http://127.0.0.1:5123"
