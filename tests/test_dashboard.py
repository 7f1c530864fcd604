"""`hpsearch dashboard`: optuna-dashboard on the project's study storage (journal file or PostgreSQL), on
127.0.0.1, its storage URL redacted, stopped by Ctrl-C with nothing left; a missing extra is one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import optuna
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.session import open_storage
from tests import browser
from tests.conftest import hpsearch_env
from tests.servers import free_port, fresh_postgres_db, postgres_url
from tests.test_ui import listening, process_group

STUDY = "cifar10-lambda-coarse"


def made_studies(storage_url: str) -> None:
    """A coarse study with two trials, and another experiment's study the dashboard still lists."""
    storage = open_storage(storage_url)
    for name in (STUDY, "other-coarse"):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_metric_names(["val_accuracy"])
        for lam, acc in ((1e-3, 0.41), (1e-2, 0.47)):
            study.add_trial(optuna.trial.create_trial(
                params={"lambda": lam}, value=acc,
                distributions={"lambda": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}))


@contextlib.contextmanager
def dashboard(folder, storage_url: str):
    """`python -m pipeline dashboard` in its own process group, until it printed its lines; Ctrl-C after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "dashboard", "--port", str(port)], cwd=folder,
                            env=hpsearch_env(folder, HPSEARCH_STORAGE=storage_url), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("Ctrl-C to stop" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.2)
        yield proc, port, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        if process_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)


def check_serves_and_stops(folder, storage_url: str) -> list[str]:
    with dashboard(folder, storage_url) as (proc, port, lines):
        url = f"http://127.0.0.1:{port}"
        assert lines[0] == f"optuna-dashboard: {url}/dashboard/"
        with urllib.request.urlopen(f"{url}/api/studies", timeout=30) as r:
            names = {s["study_name"] for s in json.load(r)["study_summaries"]}
        assert {STUDY, "other-coarse"} <= names
        assert set(listening(port)) == {"0100007F"}, "bound to 127.0.0.1 only"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert time.monotonic() - t0 < 10
    assert lines[-1] == "stopping optuna-dashboard", lines
    assert process_group(proc.pid) == {} and listening(port) == [], "nothing left behind"
    return lines


@pytest.mark.slow
def test_the_dashboard_serves_the_journal_file_on_localhost_and_ctrl_c_stops_it(tmp_path):
    made_studies(str(tmp_path / "studies" / "optuna.journal"))
    lines = check_serves_and_stops(tmp_path, "studies/optuna.journal")
    assert lines[1] == f"  studies in studies/optuna.journal: {STUDY}"


@pytest.mark.slow
@pytest.mark.skipif(postgres_url() is None, reason="needs HPSEARCH_TEST_POSTGRES")
def test_the_dashboard_serves_postgresql_and_prints_no_password(tmp_path):
    from sqlalchemy.engine import make_url

    with fresh_postgres_db(postgres_url(), "dashboard") as url:
        made_studies(url)
        lines = check_serves_and_stops(tmp_path, url)
    password = make_url(url).password
    assert password and not [line for line in lines if f":{password}@" in line], lines
    assert lines[1].startswith("  studies in postgresql") and "***" in lines[1], lines


def test_a_missing_extra_is_one_line_saying_how_to_install(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    result = CliRunner().invoke(app, ["dashboard", "--port", str(free_port())])
    assert result.exit_code == 1
    assert result.stderr == "error: hpsearch dashboard needs optuna-dashboard: pip install 'hpsearch[dashboard]'\n"


def test_a_taken_port_is_one_line(project):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["dashboard", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use; stop what uses it or pick another with --port"]


@pytest.mark.slow
def test_a_browser_sees_the_coarse_study(tmp_path):
    if why := browser.missing():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the browser test: {why}")
        pytest.skip(why)
    made_studies(str(tmp_path / "studies" / "optuna.journal"))
    with dashboard(tmp_path, "studies/optuna.journal") as (_, port, _lines), browser.chromium() as page:
        page.goto(f"http://127.0.0.1:{port}/dashboard/")
        page.get_by_text(STUDY).first.click()  # the list shows "0. cifar10-lambda-coarse"
        page.get_by_text(f"{STUDY} (id=").wait_for()  # the study's own page, its history drawn
        page.get_by_text("val_accuracy").first.wait_for()
