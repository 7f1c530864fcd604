"""The MLflow UI server that `hpsearch ui` starts, with and without MLflow 3's job runner: processes and RSS.

    .venv/bin/python bench/ui_memory.py [--port 5077] [--settle 20]

Starts the server exactly as `hpsearch ui` does (pipeline.views.ui.server_command) on a scratch sqlite store, once with
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (hpsearch's setting) and once with true (MLflow's default), waits for
/health and `--settle` seconds more, sums the RSS of every process in the server's process group, stops the group.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def group_rss(pgid: int) -> tuple[int, float]:
    """(processes, total RSS in GB) of a process group, from /proc."""
    count, kb = 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        count += 1
        kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return count, kb / 1e6


def measure(job_execution: bool, port: int, settle: float) -> tuple[int, float]:
    from pipeline.views.ui import server_command, stop, wait_ready

    folder = Path(tempfile.mkdtemp(prefix="hpsearch-ui-"))
    cmd, env = server_command(f"sqlite:///{folder}/mlflow.db", port, str(folder / "artifacts"))
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if job_execution else "false"
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", 120, log)
        time.sleep(settle)
        return group_rss(proc.pid)
    finally:
        stop(proc)
        left = group_rss(proc.pid)[0]
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
            print(f"  ({left} processes were left after stop; killed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=5077)
    ap.add_argument("--settle", type=float, default=20.0)
    a = ap.parse_args()
    for on in (True, False):
        n, gb = measure(on, a.port, a.settle)
        print(f"job runner {'on  (MLflow default)' if on else 'off (hpsearch ui)   '}: {n} processes, {gb:.2f} GB RSS")


if __name__ == "__main__":
    main()
