"""PostgreSQL and an `mlflow server` on hosts of a tests.netns.Lab, as a team would run them for hpsearch.

    with postgres(lab.add_host("db"), workdir) as pg:            # a fresh cluster: databases optuna, mlflow
        with mlflow_server(lab.add_host("mlflow"), f"{pg}/mlflow", workdir2) as (server, artifacts):
            ...  # HPSEARCH_STORAGE=f"{pg}/optuna", MLFLOW_TRACKING_URI=server.url

Each keeps its files in a tmpfs of its own mount namespace: nobody else sees them, and they are gone with the
server. Neither process carries the test's clean-up token (tests/conftest.py): they may serve a whole module, and
are stopped, process group and all, when their context ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import TOKEN_VAR
from tests.netns import Host
from tests.servers import MlflowServer, _wait_healthy, server_env

# Debian's PostgreSQL server binaries, the newest installed (15 on Debian 12); not the cluster other tests use.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/none"))
PG_USER, PG_PASSWORD = "hpsearch", "multihost"
MLFLOW_PORT = 5000


def untokened(env: dict) -> dict:
    """The servers live for the module: the per-test clean-up (tests/conftest.py) must not find them."""
    return {k: v for k, v in env.items() if k != TOKEN_VAR}


# PostgreSQL's cluster lives in a tmpfs of the server's own mount namespace: nobody else sees it, and it is gone
# with the server (deleting a cluster's thousand files from /tmp took 6 s here).
POSTGRES_SCRIPT = """
set -e
mount -t tmpfs -o mode=0700 hpsearch-postgres "$0"
chown postgres:postgres "$0"
cd "$0"
printf %s "$PG_INIT_PASSWORD" > pw
chown postgres pw
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
as_postgres "$PG_BIN/initdb" -D data -U "$PG_USER" --pwfile=pw --auth=scram-sha-256 --no-sync >/dev/null
rm pw
echo "host all all $PG_SUBNET scram-sha-256" >> data/pg_hba.conf
exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$PG_BIN/postgres" -D data \
    -c listen_addresses="$PG_ADDRESS" -c unix_socket_directories="$0" \
    -c fsync=off -c full_page_writes=off -c synchronous_commit=off
"""


@contextlib.contextmanager
def postgres(host: Host, workdir: Path) -> Iterator[str]:
    """A fresh cluster listening on host's address; yields the URL of its server (no database)."""
    workdir.mkdir(parents=True, exist_ok=True)
    mount_point = Path(tempfile.mkdtemp(prefix="hpsearch-multihost-pg-"))
    env = untokened(dict(os.environ)) | {"PG_BIN": str(PG_BIN), "PG_USER": PG_USER, "PG_INIT_PASSWORD": PG_PASSWORD,
                                          "PG_SUBNET": str(host.lab.subnet), "PG_ADDRESS": host.address}
    log = workdir / "postgres.log"
    with open(log, "wb") as out:
        proc = host.popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", POSTGRES_SCRIPT,
                           str(mount_point)], cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                          stderr=subprocess.STDOUT)
    try:
        _create_databases(host.address, proc, log, ("optuna", "mlflow"))
        yield f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{host.address}:5432"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        mount_point.rmdir()


def _create_databases(address: str, proc: subprocess.Popen, log: Path, names: tuple[str, ...]) -> None:
    import psycopg2

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            conn = psycopg2.connect(host=address, port=5432, user=PG_USER, password=PG_PASSWORD, dbname="postgres",
                                    connect_timeout=2)
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()


@contextlib.contextmanager
def mlflow_server(host: Host, backend_uri: str, workdir: Path) -> Iterator[tuple[MlflowServer, Path]]:
    """`mlflow server` on host, storing artifacts in a tmpfs that only its own mount namespace has.

    Yields the server and the artifact folder's path, which everyone else sees as an empty folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = Path(tempfile.mkdtemp(prefix="hpsearch-multihost-artifacts-"))
    env = untokened(server_env()) | {"MLFLOW_BACKEND_STORE_URI": backend_uri}  # the password stays off the argv
    cmd = ["unshare", "--mount", "--propagation", "private", "--",
           "sh", "-c", 'mount -t tmpfs -o mode=0700 mlflow-artifacts "$0" && exec "$@"', str(artifacts),
           sys.executable, "-m", "mlflow", "server", "--artifacts-destination", str(artifacts),
           "--host", host.address, "--port", str(MLFLOW_PORT), "--workers", "1",
           "--allowed-hosts", f"{host.address}:{MLFLOW_PORT}"]
    log = workdir / "mlflow-server.log"
    with open(log, "wb") as out:
        proc = host.popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    server = MlflowServer(f"http://{host.address}:{MLFLOW_PORT}", proc, log)
    try:
        _wait_healthy(server, 120)
        yield server, artifacts
    finally:  # a throwaway server: nothing to flush, its tmpfs goes with its mount namespace
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        shutil.rmtree(artifacts, ignore_errors=True)
