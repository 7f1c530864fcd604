"""Real servers for tests: a fresh PostgreSQL database per test, and an `mlflow server` on 127.0.0.1.

    from tests.servers import fresh_postgres_db, mlflow_server, postgres_url

    with fresh_postgres_db(postgres_url(), "optuna") as storage, mlflow_server(tmp_path) as server:
        ...  # --storage storage --tracking-uri server.url

The PostgreSQL server comes from HPSEARCH_TEST_POSTGRES (a SQLAlchemy URL whose role may create
databases; .ci/run sets one up). Each fresh database has a unique name and is dropped afterwards,
so a rerun never sees an earlier run's studies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

POSTGRES_ENV = "HPSEARCH_TEST_POSTGRES"
DB_PREFIX = "hpsearch_t"


def postgres_url() -> str | None:
    """The test PostgreSQL server's URL, or None when none is configured."""
    return os.environ.get(POSTGRES_ENV) or None


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ---- PostgreSQL -------------------------------------------------------------------------------
@contextlib.contextmanager
def _admin_cursor(url: str):
    """An autocommit cursor on the database of `url` (CREATE/DROP DATABASE cannot run in a transaction)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:
        conn = psycopg2.connect(
            host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
            dbname=u.database or "postgres", connect_timeout=10,
        )
    except psycopg2.OperationalError as e:
        raise RuntimeError(f"{POSTGRES_ENV}={redact(url)} is set but cannot be used: {e}") from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_postgres_db(base_url: str, label: str) -> Iterator[str]:
    """Create an empty database on base_url's server; yield its URL (same role and options); drop it after."""
    from psycopg2 import errors, sql
    from sqlalchemy.engine import make_url

    name = f"{DB_PREFIX}_{label}_{uuid.uuid4().hex[:10]}".lower()
    with _admin_cursor(base_url) as cur:
        try:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except errors.InsufficientPrivilege:
            user = make_url(base_url).username
            raise RuntimeError(f"role {user!r} of {POSTGRES_ENV} may not create databases: "
                               f"ALTER ROLE {user} CREATEDB") from None
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin_cursor(base_url) as cur:
            try:  # FORCE (PostgreSQL 13+) ends connections a killed worker may have left behind
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except errors.SyntaxError:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


# ---- mlflow server ----------------------------------------------------------------------------
@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self, tail: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    """The environment without the project's or MLflow's settings, so the server uses only its options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPSEARCH_", "MLFLOW_"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner (7 huey processes) for a tracking test
    return env


@contextlib.contextmanager
def mlflow_server(workdir: Path, backend_uri: str | None = None, timeout: float = 90,
                  serve_artifacts: bool = True) -> Iterator[MlflowServer]:
    """`mlflow server` bound to 127.0.0.1 on a free port, artifacts proxied to workdir/artifacts (or, without
    serve_artifacts, not served: clients write them to the server's default root themselves).

    backend_uri defaults to a SQLite file in workdir. Waits (at most `timeout` s) until GET /health
    answers, else fails with the server's log. Stops the server's whole process group afterwards.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    backend = backend_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    server = None
    for attempt in range(3):  # the free port may be taken by someone else before the server binds it
        port = free_port()
        log_path = workdir / f"mlflow-server-{port}.log"
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend,
            *(["--artifacts-destination", str(workdir / "artifacts")] if serve_artifacts else ["--no-serve-artifacts"]),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=workdir, env=server_env(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        server = MlflowServer(f"http://127.0.0.1:{port}", proc, log_path)
        try:
            _wait_healthy(server, timeout)
            break
        except _PortTaken:
            stop(server)
            if attempt == 2:
                raise RuntimeError(f"mlflow server found no free port:\n{server.log()}") from None
        except BaseException:
            stop(server)
            raise
    try:
        yield server
    finally:
        stop(server)


class _PortTaken(Exception):
    pass


def _wait_healthy(server: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log()
            if "address already in use" in log.lower():
                raise _PortTaken()
            raise RuntimeError(f"mlflow server exited with code {server.process.returncode} before it was "
                               f"healthy:\n{log}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"mlflow server at {server.url} not healthy after {timeout:.0f} s:\n{server.log()}")


def stop(server: MlflowServer, grace: float = 15) -> None:
    """SIGTERM to the server's process group (mlflow spawns uvicorn workers), SIGKILL after `grace` s."""
    proc = server.process
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
        os.killpg(proc.pid, signal.SIGKILL)
