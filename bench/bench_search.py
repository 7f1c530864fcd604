"""Issue #29: is the pipeline worth its stages? Each search method on fresh experiments, at equal compute.

    HPSEARCH_DATA=/path/to/cifar .venv/bin/python bench/bench_search.py --out RESULTS --work SCRATCH --ks 1 2 3
    .venv/bin/python bench/search_report.py RESULTS            # the table, the paired differences, the figure

Methods, experiment k of each with train.seed = k (the searches' draws, the networks' seeds), each in its own
stores (SCRATCH/<method>-<k>/: an sqlite Optuna storage and an MLflow store), experiment `cmp-<method>-<k>`:

- default:     coarse (8) + fine (8) + confirm, the pipeline's stages through `pipeline.api.Project`;
- report:      the same searches' best trial (`--no-confirm`, the report's procedure): read from default's stores;
- tpe:         one TPE study (the coarse space, the median pruner) run until it has trained --budget (30) and
               default's compute;
- random:      the same with plain random search (no Latin hypercube, so any prefix is a random search of its own);
- tpe-confirm: the tpe study's first trials, as many as default's compute minus its confirm stage's allow, copied
               into a fresh experiment, then the confirm stage on them (no fine stage).

Compute is counted in training examples (update steps × batch size; a pruned trial counts the steps it trained),
in units of one unpruned search trial (1,200 steps at batch 450): a confirm training (10,800 steps at batch 100)
is 2.0. tpe and random are judged at any compute by their best trial among the first trials within it, so one
run gives the whole regret-against-compute curve up to default's. One JSON file per (method, k) in RESULTS: a rerun
skips what is there. After k's searches, each promoted λ is trained at the final's budget with seed k
(`Project.train`, studies/final.toml; the same λ once), `final-<method>-<k>.json`; --no-finals skips that.
Several processes may run with the same --ks: each takes the first task (default, tpe, random, tpe-confirm, each
method's final, k by k) whose inputs are there and that has a free place (default, tpe and random: 3 workers
sharing the study, as the pipeline's --jobs; the rest one); tpe and random need not wait for default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import optuna

from pipeline.api import Project, load_settings

ROOT = Path(__file__).resolve().parents[1]
TRIAL_EXAMPLES = 1200 * 450  # one unpruned search trial
SMOKE = {"train.n_s": 20}  # --smoke: tiny schedules, to try the script
# Evaluations at the ends of cycles only: the pruner judges there and a trial's value is its last, so every decision
# is the same as with the study files' 5 (search), 2 (confirm) or 10 (final) per cycle, with fewer evaluations.
CYCLE_ENDS = {"train.checkpoints_per_cycle": 1}


def stores(work: Path, method: str, k: int) -> dict:
    folder = work / f"{method}-{k}"
    folder.mkdir(parents=True, exist_ok=True)
    return {"storage": f"sqlite:///{folder}/optuna.db", "tracking_uri": f"sqlite:///{folder}/mlflow.db",
            "experiment": f"cmp-{method}-{k}"}


def project(data: str, where: dict) -> Project:
    return Project(data, where["storage"], where["tracking_uri"], where["experiment"])


def trials(where: dict, stage: str) -> list[dict]:
    """A stage's trials in the order they ran: λ, value (None unless complete), state, compute, seconds."""
    study = optuna.load_study(study_name=f"{where['experiment']}-{stage}", storage=where["storage"])
    batch = load_settings(stage).train.batch_size
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        took = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        out.append({"number": t.number, "lambda": t.params.get("lambda"), "state": t.state.name,
                    "value": t.value if t.state.name == "COMPLETE" else None, "seconds": took,
                    "compute": t.user_attrs.get("steps_trained", 0) * batch / TRIAL_EXAMPLES})
    return out


class Clock:
    """Wall and CPU seconds of what runs inside it, added up."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self.t = (time.perf_counter(), time.process_time())

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self.t[0]
        self.cpu += time.process_time() - self.t[1]


def best(rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["value"] is not None]
    return max(done, key=lambda r: (r["value"], -r["number"])) if done else None


def run_default(data: str, work: Path, k: int, o: dict) -> dict:
    where = stores(work, "default", k)
    p, clock, out = project(data, where), Clock(), {}
    for stage in ("coarse", "fine"):
        with clock:
            p.search(stage, overrides=o)
        out[stage] = trials(where, stage)
    searched_wall = clock.wall
    with clock:
        result = p.confirm(overrides=o)
    out["confirm"] = trials(where, "confirm")
    promoted = p.report().json["best"]
    return {"default": {"lambda": result.decision.chosen["train.lambda"], "how": result.decision.how,
                        "compute": sum(r["compute"] for s in out.values() for r in s), "wall": clock.wall,
                        "cpu": clock.cpu, "trials": out},
            "report": {"lambda": promoted["lambda"], "compute": sum(r["compute"] for s in ("coarse", "fine")
                                                                    for r in out[s]),
                       "wall": searched_wall, "from": "default's coarse and fine studies"}}


def run_study(data: str, work: Path, method: str, k: int, target: float, o: dict) -> dict:
    """One study of the coarse space with this sampler, grown until it has trained `target` compute."""
    where = stores(work, method, k)
    p, clock = project(data, where), Clock()
    o = o | {"search.sampler": "tpe" if method == "tpe" else "random", "search.stratify": False}
    n, rows = math.ceil(target), []
    while True:
        with clock:
            p.search("coarse", n_trials=n, overrides=o)
        rows = trials(where, "coarse")
        spent = sum(r["compute"] for r in rows)
        if spent >= target:
            break
        n += max(1, math.ceil(target - spent))
    return {"trials": {"coarse": rows}, "compute": spent, "wall": clock.wall, "cpu": clock.cpu}


def prefix(rows: list[dict], budget: float) -> list[dict]:
    """The first trials whose compute together stays within budget."""
    out, spent = [], 0.0
    for r in rows:
        spent += r["compute"]
        if spent > budget + 1e-9:
            break
        out.append(r)
    return out


def run_tpe_confirm(data: str, work: Path, k: int, default: dict, tpe_study: dict, o: dict) -> dict:
    confirm_compute = sum(r["compute"] for r in default["trials"]["confirm"])
    keep = prefix(tpe_study["trials"]["coarse"], default["compute"] - confirm_compute)
    source, where = stores(work, "tpe", k), stores(work, "tpe-confirm", k)
    old = optuna.load_study(study_name=f"{source['experiment']}-coarse", storage=source["storage"])
    name = f"{where['experiment']}-coarse"
    if name not in optuna.get_all_study_names(where["storage"]):
        new = optuna.create_study(study_name=name, storage=where["storage"], direction="maximize")
        for key, value in old.user_attrs.items():
            new.set_user_attr(key, value)
        numbers = {r["number"] for r in keep}
        new.add_trials([t for t in old.get_trials(deepcopy=True) if t.number in numbers])
    p, clock = project(data, where), Clock()
    with clock:
        result = p.confirm(overrides=o)
    confirm = trials(where, "confirm")
    return {"lambda": result.decision.chosen["train.lambda"], "how": result.decision.how,
            "searched": len(keep), "compute": sum(r["compute"] for r in keep + confirm),
            "wall": clock.wall + sum(r["seconds"] or 0 for r in keep), "cpu": clock.cpu,
            "trials": {"coarse": keep, "confirm": confirm}}


def save(out: Path, method: str, k: int, doc: dict) -> None:
    path = out / f"{method}-{k}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # the workers of one task save at about the same time
    tmp.write_text(json.dumps(doc | {"method": method, "k": k, "date": time.strftime("%Y-%m-%d %H:%M")}))
    tmp.replace(path)
    print(f"{time.strftime('%H:%M:%S')} k {k} {method}: λ {doc.get('lambda', '-')}, compute "
          f"{doc.get('compute', 0):.1f}, wall {doc.get('wall', 0):.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)


def load(out: Path, method: str, k: int) -> dict | None:
    path = out / f"{method}-{k}.json"
    return json.loads(path.read_text()) if path.exists() else None


METHODS = ("default", "report", "tpe", "random", "tpe-confirm")
FINALS = tuple(f"final-{m}" for m in METHODS)
TASKS = ("default", "tpe", "random", "tpe-confirm", *FINALS)  # each k's, in the order they may start
NEEDS = {"tpe-confirm": ("default", "tpe")} | {f: ("default", "tpe", "random", "tpe-confirm") for f in FINALS}
# How many processes may work on one task at once: the pipeline's workers share a study (for random search the
# draws do not depend on it; TPE then runs as `hpsearch search --jobs N` does); the rest are single trainings.
WORKERS = {"default": 3, "tpe": 3, "random": 3}


def done(out: Path, task: str, k: int) -> bool:
    doc, default = load(out, "report" if task == "default" else task, k), load(out, "default", k)
    if task in ("tpe", "random") and doc and default:  # a study that ended before default's compute was known
        return doc["compute"] >= default["compute"]
    return doc is not None


def run(task: str, data: str, out: Path, work: Path, k: int, o: dict, budget: float) -> None:
    if task == "default":
        for method, doc in run_default(data, work, k, o).items():
            save(out, method, k, doc)
    elif task in ("tpe", "random"):  # at least default's compute, so its curve reaches default's point
        default = load(out, "default", k)
        target = max(budget, default["compute"] if default else 0.0)
        save(out, task, k, run_study(data, work, task, k, target, o))
    elif task == "tpe-confirm":
        save(out, task, k, run_tpe_confirm(data, work, k, load(out, "default", k), load(out, "tpe", k), o))
    else:
        final(data, out, work, task.removeprefix("final-"), k, o)


def promoted(out: Path, k: int, method: str) -> float:
    """The λ a method promotes at default's compute (tpe, random: their best trial within it)."""
    if method in ("tpe", "random"):
        return best(prefix(load(out, method, k)["trials"]["coarse"], load(out, "default", k)["compute"]))["lambda"]
    return load(out, method, k)["lambda"]


def final(data: str, out: Path, work: Path, method: str, k: int, o: dict) -> None:
    """The promoted λ trained at the final's budget with seed k (another method's final of the same λ is reused)."""
    lam = promoted(out, k, method)
    doc = next((d for m in METHODS if (d := load(out, f"final-{m}", k)) and d["lambda"] == lam), None)
    if doc is None:
        t = time.perf_counter()
        r = project(data, stores(work, f"final-{method}", k)).train(ROOT / "studies" / "final.toml", lam, overrides=o)
        doc = {"lambda": lam, "test_accuracy": r.test_accuracy, "wall": time.perf_counter() - t}
    save(out, f"final-{method}", k, doc)


def claim(out: Path, task: str, k: int) -> bool:
    """Take a place on a task unless live processes of this bench hold all its places (WORKERS, else one)."""
    for place in range(WORKERS.get(task, 1)):
        path = out / f".claim-{task}-{k}-{place}"
        try:
            holder = int(path.read_text())
            os.kill(holder, 0)
            if holder == os.getpid():
                return True
        except (FileNotFoundError, ValueError, ProcessLookupError):
            path.write_text(str(os.getpid()))
            time.sleep(0.5)  # two starting at once: the last writer wins, the other sees it
            if int(path.read_text()) == os.getpid():
                return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the results folder (one JSON file per method and k)")
    ap.add_argument("--work", type=Path, required=True, help="scratch: each experiment's stores")
    ap.add_argument("--ks", type=int, nargs="+", required=True)
    ap.add_argument("--no-finals", action="store_true", help="skip training the promoted λ at the final's budget")
    ap.add_argument("--smoke", action="store_true", help="tiny schedules, to try the script")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="tpe and random train at least this compute (and at least default's, when it is known)")
    ap.add_argument("--all-checkpoints", action="store_true", help="the study files' evaluations per cycle")
    a = ap.parse_args()
    data = os.environ.get("HPSEARCH_DATA") or sys.exit("set HPSEARCH_DATA to a folder holding cifar-10-batches-py")
    a.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # the stage files studies/<stage>.toml
    tasks = [(k, t) for k in a.ks for t in TASKS if not (a.no_finals and t == "finals")]
    while left := [(k, t) for k, t in tasks if not done(a.out, t, k)]:
        ready = [(k, t) for k, t in left if all(done(a.out, n, k) for n in NEEDS.get(t, ()))]
        k, task = next(((k, t) for k, t in ready if claim(a.out, t, k)), (None, None))
        if task is None:  # what is left waits for other processes' tasks
            time.sleep(30)
            continue
        o = {"train.seed": k} | ({} if a.all_checkpoints else CYCLE_ENDS) | (SMOKE if a.smoke else {})
        run(task, data, a.out, a.work, k, o, a.budget)


if __name__ == "__main__":
    main()
