"""Issue #17's goals in one run, side by side, as ratios: the default pipeline (confirm included) and
`--no-confirm` against the PyTorch reference's 10-epoch process, what the confirm stage adds, and with --profile
where one default pipeline's time goes.

    HPSEARCH_DATA=/path/to/cifar .venv/bin/python bench/bench_pipeline.py [--rounds 1] [--profile] [--code DIR] \
        [--storage journal sqlite]

Each round runs, in fresh scratch folders (copies of studies/): the peer's 10 epochs at batch 100 as a whole
process, `hpsearch pipeline --no-confirm`, then `hpsearch pipeline`, both with the default --jobs (one worker
per core), once per --storage: the default journal file (studies/optuna.journal) and/or an sqlite Optuna storage
(sqlite:///studies/optuna.db in the scratch folder). Ratios are per round, against that round's peer time. --code
runs another checkout's pipeline (the code before a change) with this script. --profile then runs one more default
pipeline with timers loaded into every process (bench/profile/sitecustomize.py) and prints the table of its time by
kind. Needs torch (pip install torch==2.13.0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "bench" / "peer_torch_mlp.py"
PROFILE_HOOKS = ROOT / "bench" / "profile"
KINDS = {  # the table's rows: what the profile's categories add up to
    "training steps": ("training_steps",),
    "evaluation (checkpoints, test)": ("evaluation",),
    "process start (interpreter, imports, options)": ("to_session",),
    "data loads": ("data_loads",),
    "waits at stage boundaries and for the final": ("waits",),
    "tracking and figures (runs, metrics, curves, stage close, model)": ("tracking",),
    "other (stores, studies, claims, sampling)": ("other",),
}


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of this command's largest process (its own or a worker's)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage alone: the peak of it and what it waited for
        code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        if code != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd[:6])}… failed ({code}): {err.read().decode()[-400:]}")
    return wall, usage.ru_maxrss / 1e6  # KB → GB


STORAGES = {"journal": [], "sqlite": ["--storage", "sqlite:///studies/optuna.db"]}  # hpsearch's global option


def cpu_model() -> str:
    """The host's CPU: sittings on one machine kind may land on other processors (AMD EPYC, Intel Xeon)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "?"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")


def scratch(code: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    shutil.copytree(code / "studies", folder / "studies", ignore=shutil.ignore_patterns("*.journal*", "*.db*"))
    return folder


def profile(hp: list[str], code: Path, env: dict) -> None:
    """One default pipeline with timers in every process; the table of where its time went."""
    out = Path(tempfile.mkdtemp(prefix="hpsearch-profile-"))
    env = env | {"HPSEARCH_BENCH_PROFILE": str(out), "PYTHONPATH": f"{PROFILE_HOOKS}:{code}"}
    wall, _ = timed([*hp, "pipeline"], scratch(code), env)
    docs = [json.loads(p.read_text()) for p in out.glob("*.json")]
    rows = {k: 0.0 for k in KINDS}
    children = 0.0
    for doc in docs:
        spent = doc["spent"] | {"to_session": doc["to_session"]}
        children += spent.pop("child_processes", 0.0)
        spent["other"] = doc["wall"] - sum(spent.values()) - doc["spent"].get("child_processes", 0.0)
        for row, keys in KINDS.items():
            rows[row] += sum(spent.get(k, 0.0) for k in keys)
    total = sum(rows.values())
    print(f"\nprofile: one default pipeline, {wall:.1f} s wall, {len(docs)} processes; their time, {total:.1f} s "
          f"(not counting {children:.1f} s a parent spent waiting for its worker processes):")
    print("| where the time goes | seconds, all processes | share |\n|---|---|---|")
    for row, seconds in rows.items():
        print(f"| {row} | {seconds:.1f} | {100 * seconds / total:.0f} % |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--peer", type=Path, default=PEER)
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose pipeline runs (default: this one)")
    ap.add_argument("--profile", action="store_true", help="also the table of where the time goes")
    ap.add_argument("--storage", nargs="+", choices=list(STORAGES), default=["journal"],
                    help="the Optuna storages to time the pipelines on, each in every round")
    a = ap.parse_args()
    data = os.environ.get("HPSEARCH_DATA")
    if not data:
        sys.exit("set HPSEARCH_DATA to a folder holding cifar-10-batches-py")
    code = a.code.resolve()
    env = os.environ | {"PYTHONPATH": str(code)}
    hp = [sys.executable, "-m", "pipeline"]
    import numpy  # noqa: F401 - loads the BLAS that threadpoolctl then reports
    import threadpoolctl

    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    print(f"code {code}; CPU {cpu_model()}; BLAS {blas}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)

    keys = [(store, key) for store in a.storage for key in ("no_confirm", "default")]
    rows = {k: [] for k in ["peer", *keys]}
    peaks = []
    for r in range(1, a.rounds + 1):
        load = os.getloadavg()[0]
        peer, _ = timed([sys.executable, str(a.peer), "--data-dir", data, "--epochs", "10", "--batch-size", "100",
                         "--threads", str(os.cpu_count())], Path.cwd(), env)
        rows["peer"].append(peer)
        for store, key in keys:
            extra = ["--no-confirm"] if key == "no_confirm" else []
            wall, peak = timed([*hp, *STORAGES[store], "pipeline", *extra], scratch(code), env)
            rows[(store, key)].append(wall)
            peaks.append(peak)
        walls = ", ".join(f"{s} {k} {v[-1]:.1f} s = {v[-1] / peer:.2f}×" for (s, k), v in
                          ((k, v) for k, v in rows.items() if k != "peer"))
        print(f"round {r} (load {load:.2f} → {os.getloadavg()[0]:.2f}): peer {peer:.1f} s; {walls}", flush=True)
    for store in a.storage:
        for key, goal in (("no_confirm", 4.8), ("default", 7.0)):
            ratios = [w / p for w, p in zip(rows[(store, key)], rows["peer"], strict=True)]
            print(f"{store:>7} {key:>10}: median {statistics.median(ratios):.2f}× the peer's 10 epochs "
                  f"(goal ≤ {goal}×); walls {', '.join(f'{w:.0f}' for w in rows[(store, key)])} s")
        added = [b - a for a, b in zip(rows[(store, "no_confirm")], rows[(store, "default")], strict=True)]
        print(f"{store:>7}: the confirm stage adds: median {statistics.median(added):.1f} s (goal ≤ 45 s)")
    print(f"peak RSS of the largest pipeline process: {max(peaks):.2f} GB")
    if a.profile:
        profile(hp, code, env)


if __name__ == "__main__":
    main()
