"""Workers killed at named points (pipeline/workers/faults.py), replaced, and what the stores hold afterwards.

`run_with_faults` starts `workers` copies of `hpsearch pipeline --jobs 1` on one project folder, each carrying the
same faults (each fires once, in the first worker to reach its point). Whenever one dies of its fault, one
restarted worker takes its place, until every worker ends on its own. `check` then lists every way the stores
disagree with "exactly once": per stage n finished trials, one FINISHED run per finished trial and no other,
every stage run FINISHED, one FINISHED final run and one model version. tests/test_faults.py and
bench/stress_workers.py use both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import hpsearch_env, write_fast_studies

EXPERIMENT = "cifar10-lambda"
N_TRIALS = 3  # coarse and fine
CONFIRM = {"k": "2", "seeds": "2", "strategy": '"grid"'}
N_CONFIRM = 4
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
KILLED = {"SIGKILL": -9, "SIGINT": 130}
KILLED_CODES = (-9, 137, 130)  # 137: a pid namespace's init, which exits instead (workers/faults.py)


@dataclass
class Outcome:
    fired: list[str]  # "point-signal": where a worker killed itself, and how
    started: int  # worker processes, restarts included
    codes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""


def run_with_faults(folder: Path, cifar_dir: Path, faults: list[tuple[str, str]], workers: int = 3,
                    timeout_s: float = 400) -> Outcome:
    """faults: (point, signal name) pairs. Returns what fired ("point-signal") and every disagreement `check`
    finds."""
    write_fast_studies(folder, **CONFIRM)
    tokens = folder / "faults"
    tokens.mkdir(exist_ok=True)
    spec = ",".join(f"{point}:{sig}:{tokens}" for point, sig in faults)
    env = hpsearch_env(folder, HPSEARCH_DATA=str(cifar_dir), HPSEARCH_TEST_FAULT=spec, OPENBLAS_NUM_THREADS="1")
    for var in ("HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "HPSEARCH_EXPERIMENT"):
        env.pop(var, None)
    argv = [sys.executable, "-m", "pipeline", "pipeline", "--jobs", "1", "--n-trials", str(N_TRIALS)]
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    started, codes, running = 0, [], []

    def start() -> None:
        nonlocal started
        started += 1
        with open(logs / f"{started}.err", "wb") as err:
            running.append(subprocess.Popen(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True))

    t0 = time.monotonic()
    for _ in range(workers):
        start()
    try:
        while running and time.monotonic() - t0 < timeout_s:
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                codes.append(p.returncode)
                if p.returncode in KILLED_CODES:
                    start()  # a restarted worker takes the dead one's place
            time.sleep(0.2)
    finally:
        for p in running:
            os.killpg(p.pid, 9)
            p.wait()
    out = Outcome(sorted(x.name for x in tokens.iterdir()), started, codes, seconds=time.monotonic() - t0)
    out.output = "\n".join(f"--- worker {f.stem}\n{f.read_text(errors='replace')[-1500:]}"
                           for f in sorted(logs.iterdir(), key=lambda f: int(f.stem)))
    if running:
        out.problems.append(f"workers still running after {timeout_s} s")
    out.problems += [f"a worker exited with {c}" for c in codes if c not in (0, *KILLED_CODES)]
    out.problems += check_folder(folder)
    return out


def check_folder(folder: Path) -> list[str]:
    """`check` on a project folder's default stores (the journal file, the sqlite tracking store)."""
    from pipeline.session import open_storage

    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    return check(open_storage(str(folder / "studies/optuna.journal")), MlflowClient(tracking_uri=uri,
                                                                                    registry_uri=uri))


def check(storage, client: MlflowClient, experiment: str = EXPERIMENT) -> list[str]:
    """Every way the stores disagree with each-thing-once; [] when they agree."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return ["no experiment"]
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    problems = []
    for stage, n in (("coarse", N_TRIALS), ("fine", N_TRIALS), ("confirm", N_CONFIRM)):
        try:
            trials = optuna.load_study(study_name=f"{experiment}-{stage}", storage=storage).get_trials()
        except KeyError:
            problems.append(f"{stage}: no study")
            continue
        finished = [t for t in trials if t.state in FINISHED]
        if len(finished) != n:
            problems.append(f"{stage}: {len(finished)} finished trials, not {n}")
        parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "stage"
                   and r.data.tags.get("hpsearch.stage") == stage]
        if len(parents) != 1 or parents[0].info.status != "FINISHED":
            problems.append(f"{stage}: stage runs {[r.info.status for r in parents]}, not one FINISHED")
            continue
        done = sorted(r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
                      and r.info.status == "FINISHED")
        mine = sorted(t.user_attrs.get("mlflow_run_id", "?") for t in finished)
        if done != mine:
            problems.append(f"{stage}: FINISHED runs {len(done)} for {len(mine)} finished trials (or not theirs)")
    finals = [r for r in runs if r.data.tags.get("hpsearch.role") == "final" and r.info.status == "FINISHED"]
    versions = [v for v in client.search_model_versions() if v.run_id in {r.info.run_id for r in runs}]
    if len(finals) != 1 or len(versions) != 1:
        problems.append(f"{len(finals)} FINISHED final runs and {len(versions)} model versions, not one each")
    return problems
