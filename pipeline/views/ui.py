"""`hpsearch ui`: the MLflow UI on the project's tracking store, bound to 127.0.0.1, until Ctrl-C.

It prints (and with --open opens) the experiment's runs view, not the server's root, which is the GenAI home
page in MLflow 3.x, and the compare pages of the latest coarse and fine trials (pipeline/tracking/links.py).

The server (`python -m mlflow ui` from this interpreter) runs in its own process group, so Ctrl-C in
the terminal reaches only us; we then stop the whole group (the mlflow CLI, uvicorn and its
workers): SIGTERM, a grace period, SIGKILL (workers/groups.py).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import Terminated, UserError
from pipeline.names import SEARCH_STAGES
from pipeline.tracking import links
from pipeline.urls import check_reachable, is_http, sqlite_path
from pipeline.workers.groups import signal_group, stop_groups

HOST = links.UI_HOST
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0


def check_port_free(port: int, host: str = HOST) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is already in use; stop what uses it or pick "
                                "another with --port") from None
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port") from None


def server_command(backend_uri: str, port: int, artifacts: str | None = None) -> tuple[list[str], dict]:
    """The server's argv and environment. The store URI goes through the environment: `ps` shows every
    process's argv to every user of the machine, and the URI may hold a password."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", HOST, "--port", str(port), "--workers", "1"]
    # No job runner: MLflow 3.x starts huey consumer processes (~1.7 GB) for GenAI jobs we never submit.
    env = os.environ | {"MLFLOW_BACKEND_STORE_URI": backend_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if artifacts:  # runs created from the UI keep their artifacts beside the project's, not in ./mlartifacts
        env["MLFLOW_ARTIFACTS_DESTINATION"] = artifacts
    return cmd, env


def wait_ready(proc: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    """Until GET url/health answers; one UserError line if the server exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the MLflow UI exited with code {proc.returncode} before answering: "
                            f"{_last_line(log)} (full log: {log})")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise UserError(f"the MLflow UI did not answer on {url} within {timeout:.0f} s; see {log}")


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the server's process group, wait, SIGKILL what is left after the timeout."""
    stop_groups([proc], timeout)


def links_of(session, base: str) -> list[str]:
    """The lines `hpsearch ui` prints: the runs view (stage runs, trials nested), the trials ranked by accuracy,
    and the compare page of each search stage that has runs."""
    tracker = session.tracker
    lines = [f"MLflow UI: {links.runs_url(base, tracker.experiment_id)}",
             f"  trials by val acc: {links.runs_url(base, tracker.experiment_id, links.RANKED)}"]
    for stage in SEARCH_STAGES:
        if run_ids := links.stage_run_ids(tracker, stage):
            lines.append(f"  {'compare ' + stage + ':':<19}{links.compare_url(base, run_ids, [tracker.experiment_id])}")
    return lines


def serve(session, port: int, echo: Callable[[str], None], open_browser: bool = False) -> None:
    """Run the MLflow UI on the session's tracking store until Ctrl-C or SIGTERM; returns after a clean stop."""
    uri = session.tracking_uri
    if is_http(uri):  # the tracking server is the UI already
        check_reachable(uri)
        _announce(links_of(session, links.ui_base(uri, port)), echo, open_browser)
        return
    check_port_free(port)
    # Opening the store the pipeline's way creates its schema (under the project's lock, safe beside a
    # running search) and the experiment with its artifact folder and UI tags, so a fresh clone shows it at once.
    tracker = session.tracker
    url = links.ui_base(uri, port)
    db = sqlite_path(tracker.uri)
    log = (db.parent if db is not None else Path(tempfile.gettempdir())) / f"mlflow-ui-{port}.log"
    cmd, env = server_command(tracker.uri, port, tracker.artifact_root)  # Tracker made the sqlite path absolute
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_ready(proc, url, START_TIMEOUT_S, log)
        _announce(links_of(session, url), echo, open_browser)
        echo(f"  Ctrl-C to stop; server log {log}")
        code = proc.wait()
        raise UserError(f"the MLflow UI stopped by itself (exit code {code}): {_last_line(log)} (full log: {log})")
    except (KeyboardInterrupt, Terminated):
        echo("stopping the MLflow UI")
    finally:
        try:
            stop(proc)
        except (KeyboardInterrupt, Terminated):  # impatient second Ctrl-C
            signal_group(proc, signal.SIGKILL)
            proc.wait()


def _announce(lines: list[str], echo: Callable[[str], None], open_browser: bool) -> None:
    for line in lines:
        echo(line)
    if open_browser:
        import webbrowser

        webbrowser.open(lines[0].partition(": ")[2])


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(no output)"
