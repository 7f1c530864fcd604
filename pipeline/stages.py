"""Search stages: storage and study, orphan recovery, the trial loop, coarse → fine bounds, promotion."""

from __future__ import annotations

import math
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from pipeline import plots, sources
from pipeline.config import StageConfig
from pipeline.errors import UserError
from pipeline.objective import LIVE, Objective, StageRun, SurplusTrial, owner
from pipeline.progress import Progress
from pipeline.tracking import Tracker, code_version, ensure_env_defaults, redact

DEFAULT_STORAGE = "studies/optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SEARCH_STAGES = ("coarse", "fine")
PARENT_ATTR = "mlflow_parent_run_id"
ORPHAN_AGE_S = 120  # a RUNNING trial without an owner this old was killed before it said who ran it

optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happened, without tracebacks
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # QMCSampler, heartbeats


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A file path is a journal file (safe for parallel processes on one machine); a URL is a database."""
    if "://" not in url:
        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as e:
            raise UserError(f"Optuna storage file {path} cannot be written ({e.strerror})") from None
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0].lower()
    if scheme.split("+")[0] not in RDB_SCHEMES:
        raise UserError(
            f"unknown storage scheme {scheme!r} in {redact(url)}; use a file path (journal), "
            "sqlite:///FILE or postgresql+psycopg2://USER:PASSWORD@HOST/DB"
        )
    engine_kwargs = {}
    if scheme.startswith("sqlite"):
        db = Path(url.split(":///", 1)[-1])
        db.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for a busy database instead of failing
    return _with_retries(
        lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120),
        f"Optuna storage {redact(url)}",
    )


def _with_retries(make, what: str, attempts: int = 4):
    """Workers starting together may race to create the schema; the loser retries once it exists."""
    for i in range(attempts):
        try:
            return make()
        except ModuleNotFoundError as e:
            raise UserError(f"{what} needs the {e.name} package: pip install 'hpsearch[postgres]'") from None
        except Exception as e:  # SQLAlchemy's errors, without importing SQLAlchemy here
            if i == attempts - 1 or "OperationalError" in type(e).__name__ and "connect" in str(e).lower():
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(f"{what} is unreachable or unusable: {first[:300]}") from None
            time.sleep(0.5 + i)


class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search where trial k of a study always draws the same values for a given seed.

    A plain seeded RandomSampler repeats its sequence in every worker process (parallel workers would
    all draw the same λ) and changes with the order trials run in; seeding each draw by (seed, study,
    trial number) makes a search reproducible and parallel workers never repeat each other.

    With `strata` = n, each block of n consecutive trials is a Latin hypercube sample: the (log-)range is
    cut into n equal parts and each trial draws uniformly inside its own part, in a seeded random order.
    Every trial is still a random draw, but 8 trials can no longer all land in the same two decades.
    """

    def __init__(self, seed: int, strata: int = 1):
        super().__init__(seed=seed)
        self.seed, self.strata = seed, max(1, strata)

    def sample_independent(self, study, trial, param_name, param_distribution):
        dist = param_distribution
        if not (isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is None):
            return super().sample_independent(study, trial, param_name, param_distribution)
        key = zlib.crc32(f"{study.study_name}/{param_name}".encode())
        block, slot = divmod(trial.number, self.strata)
        stratum = np.random.default_rng([self.seed, key, block]).permutation(self.strata)[slot]
        u = (stratum + np.random.default_rng([self.seed, key, trial.number]).random()) / self.strata
        if dist.log:
            return math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
        return dist.low + u * (dist.high - dist.low)


def make_sampler(cfg: StageConfig) -> optuna.samplers.BaseSampler:
    kind, seed = cfg["search.sampler"], cfg["train.seed"]
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "qmc":  # points depend on the trial number, so parallel workers don't repeat each other
        return optuna.samplers.QMCSampler(scramble=True, seed=seed)
    return TrialSeededRandomSampler(seed, strata=cfg["search.n_trials"] if cfg["search.stratify"] else 1)


def make_pruner(cfg: StageConfig) -> optuna.pruners.BasePruner:
    if not cfg["search.prune"]:
        return optuna.pruners.NopPruner()
    # Accuracy swings with the cyclical η: trials are comparable only at the ends of cycles (η at its minimum).
    # Strongly regularised networks lag early and catch up late, so judging after the first cycle prunes
    # exactly the large λ the search is looking for (measured on CIFAR-10): the pruner waits until the end
    # of the second-to-last cycle, then checks once per cycle. The objective never prunes at the last step.
    cycle = 2 * cfg["train.n_s"]
    warmup = cycle * max(1, cfg["train.cycles"] - 1)
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup, interval_steps=cycle)


@dataclass
class Session:
    """The global options of one command: where data, studies and runs live."""

    data_dir: Path | None = None
    storage_url: str = DEFAULT_STORAGE
    tracking_uri: str | None = None
    experiment: str = "cifar10-lambda"
    progress: Progress = field(default_factory=Progress)

    @cached_property
    def storage(self) -> optuna.storages.BaseStorage:
        return open_storage(self.storage_url)

    @cached_property
    def tracker(self) -> Tracker:
        ensure_env_defaults()
        return Tracker(self.tracking_uri, self.experiment)

    def study_name(self, stage: str) -> str:
        return f"{self.experiment}-{stage}"

    def load_study(self, stage: str) -> optuna.Study | None:
        try:
            return optuna.load_study(study_name=self.study_name(stage), storage=self.storage)
        except KeyError:
            return None

    def dataset(self, split: str, val_size: int):
        folder = sources.resolve(self.data_dir, self.progress.say)
        return sources.dataset(folder, split, val_size)


@dataclass
class StageSummary:
    stage: str
    study_name: str
    n_finished: int
    n_target: int
    best_lambda: float | None
    best_value: float | None
    bounds: tuple[float, float]
    parent_run_id: str
    complete: bool


# ---- coarse → fine --------------------------------------------------------------------------
def fine_bounds(session: Session, cfg: StageConfig) -> tuple[tuple[float, float], dict]:
    """The coarse study's two best λ, widened by ±widen in log10, and where they came from."""
    coarse = session.load_study("coarse")
    if coarse is None:
        raise UserError(
            f"no coarse study {session.study_name('coarse')!r} in {redact(session.storage_url)}; "
            "run `hpsearch search coarse` first"
        )
    wait_until_settled(coarse, session.progress.say)
    finished, _ = count(coarse)
    target = coarse.user_attrs.get("n_trials", 0)
    if finished < target:
        raise UserError(
            f"the coarse stage is incomplete ({finished} of {target} trials finished); "
            "run `hpsearch search coarse` to complete it (or with --n-trials N to settle for fewer)"
        )
    done = coarse.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        raise UserError(
            f"the coarse study has {len(done)} completed trial(s); the fine bounds need 2: "
            "run `hpsearch search coarse` (again) first"
        )
    top = sorted(done, key=lambda t: t.value, reverse=True)[:2]
    lams = sorted(t.params["lambda"] for t in top)
    margin = 10 ** cfg["search.widen"]
    bounds = (lams[0] / margin, lams[1] * margin)
    source = {
        "source_study": coarse.study_name,
        "source_trials": ",".join(str(t.number) for t in top),
        "source_lambdas": ",".join(f"{t.params['lambda']:.6g}" for t in top),
        "widen_log10": cfg["search.widen"],
    }
    return bounds, source


def wait_until_settled(study: optuna.Study, say, poll_s: float = 2.0, report_s: float = 30.0) -> None:
    """Wait while other workers still run trials of this study (their results may change its best λ)."""
    last = -math.inf
    while running := study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mine = owner()
        if all(t.user_attrs.get("host") == mine["host"] and not pid_alive(int(t.user_attrs.get("pid", -1)))
               for t in running):
            return  # only orphans of dead local processes are left; the next run of that stage fails them
        if time.monotonic() - last > report_s:
            say(f"waiting for {len(running)} trial(s) of {study.study_name} still running in other workers")
            last = time.monotonic()
        time.sleep(poll_s)


def best_trial(session: Session, rule: str = "best") -> optuna.trial.FrozenTrial | None:
    """The trial to promote, over the completed trials of the coarse and fine studies.

    "best": the highest validation accuracy. "one-se": the largest λ whose accuracy is within one
    standard error, sqrt(a(1 − a)/n_val), of the best: the one-standard-error rule of model selection.
    """
    trials = []
    for stage in SEARCH_STAGES:
        study = session.load_study(stage)
        if study is not None:
            trials += study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(trials, key=lambda t: t.value, default=None)
    if best is None or rule == "best":
        return best
    n_val = best.user_attrs.get("n_val", 5000)
    tied = [t for t in trials if t.value >= best.value - math.sqrt(best.value * (1 - best.value) / n_val)]
    return max(tied, key=lambda t: t.params["lambda"])


# ---- the stage loop -------------------------------------------------------------------------
def run_search(session: Session, stage: str, cfg: StageConfig) -> StageSummary:
    """Run trials until the study holds cfg's n_trials finished trials (a rerun completes a stage)."""
    name = session.study_name(stage)
    existing = session.load_study(stage)
    if stage == "fine" and existing is not None and "lambda_min" in existing.user_attrs:
        # Bounds are derived once, when the fine study is created; resuming keeps them.
        bounds, source = (existing.user_attrs["lambda_min"], existing.user_attrs["lambda_max"]), {}
    elif stage == "fine":
        bounds, source = fine_bounds(session, cfg)
    else:
        bounds, source = (cfg["search.lambda_min"], cfg["search.lambda_max"]), {}
    data = session.dataset(cfg["data.split"], cfg["data.val_size"])
    tracker = session.tracker
    study, created = open_study(session, name, cfg)
    if created and stage == "fine":
        study.set_user_attr("lambda_min", bounds[0])
        study.set_user_attr("lambda_max", bounds[1])
        for key, value in source.items():
            study.set_user_attr(key, value)
    parent, new_parent = ensure_parent_run(session, study, stage, created)
    params = cfg.flat() | {
        "search.lambda_min": bounds[0], "search.lambda_max": bounds[1], "data.digest": data.digest,
        "data.n_train": len(data.y_train), "data.n_val": len(data.y_val), "code_version": code_version(),
    }
    if new_parent:
        tracker.log_params(parent, params | {k: study.user_attrs.get(k, v) for k, v in source.items()})
    tracker.set_tags(parent, {"n_trials": cfg["search.n_trials"]})
    study.set_user_attr("n_trials", cfg["search.n_trials"])  # the target the next stage checks against
    recover_orphans(study, tracker, parent)
    tracker.set_status(parent, "RUNNING")
    objective = Objective(StageRun(stage, name, cfg, data, tracker, parent, bounds, session.progress, params))
    n = cfg["search.n_trials"]
    try:
        while True:
            finished, running = count(study)
            session.progress.stage(stage, n, min(finished, n))
            if finished + running >= n:
                break
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,), callbacks=[_announce(session, stage, n)])
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated
        tracker.set_status(parent, "KILLED")
        raise
    except Exception:
        tracker.set_status(parent, "FAILED")
        raise
    return finish_stage(session, stage, study, parent, n, bounds)


def _announce(session: Session, stage: str, n: int):
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("surplus"):
            return
        finished, _ = count(study)
        best = _best_value(study)
        state, value = trial.state.name, trial.value
        if trial.state == TrialState.PRUNED:  # its value is only the last report: show why instead
            state, value = f"PRUNED ({trial.user_attrs.get('reason', '')})", None
        session.progress.trial_end(f"{stage}-{trial.number}", state, value, min(finished, n), n, best)

    return callback


def _best_value(study: optuna.Study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values, default=None)


def count(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=LIVE)
    finished = sum(t.state in FINISHED for t in trials)
    return finished, len(trials) - finished


def open_study(session: Session, name: str, cfg: StageConfig) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; tells whether this process created it."""
    kw = dict(study_name=name, storage=session.storage, sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    try:
        return optuna.create_study(direction="maximize", **kw), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(**kw), False


def ensure_parent_run(session: Session, study: optuna.Study, stage: str, created: bool) -> tuple[str, bool]:
    """The stage's parent run, created once: by the process that created the study; others wait for it."""
    tracker = session.tracker
    run_id = study.user_attrs.get(PARENT_ATTR)
    deadline = time.monotonic() + 60
    while run_id is None and not created and time.monotonic() < deadline:
        time.sleep(0.5)
        run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id is not None and tracker.run_exists(run_id):
        return run_id, False
    found = tracker.find_runs(study=study.study_name, role="stage")
    if found:
        run_id, new = found[0].info.run_id, False
    else:
        run_id, new = tracker.create_run(stage, {"study": study.study_name, "stage": stage, "role": "stage"}), True
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id, new


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that nobody reaped yet is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def recover_orphans(study: optuna.Study, tracker: Tracker, parent_run_id: str) -> list[int]:
    """Fail RUNNING trials whose process is gone (kill -9, power loss) and mark their runs KILLED."""
    storage = study._storage  # noqa: SLF001 - Optuna exposes heartbeats only through the storage
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
        optuna.storages.fail_stale_trials(study)
    me, now = owner(), datetime.now()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        if host is None:
            orphan = t.datetime_start is not None and (now - t.datetime_start).total_seconds() > ORPHAN_AGE_S
        else:
            orphan = host == me["host"] and pid != me["pid"] and not pid_alive(int(pid))
        if orphan:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    for run in tracker.children(parent_run_id, status="RUNNING"):
        number = int(run.data.tags.get("hpsearch.trial", -1))
        if states.get(number) not in (None, TrialState.RUNNING):
            tracker.set_tags(run.info.run_id, {"state": "FAIL", "reason": "its process died (found by a later run)"})
            tracker.set_status(run.info.run_id, "KILLED")
    return failed


def finish_stage(session, stage, study, parent, n, bounds) -> StageSummary:
    """When the study is complete: the parent run gets the best λ, the figure and the trial table."""
    tracker = session.tracker
    finished, running = count(study)
    complete = finished >= n and running == 0
    best = max(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value, default=None)
    if complete:
        if best is not None:
            tracker.log_metrics(parent, {"best_val_accuracy": best.value, "best_lambda": best.params["lambda"]})
            tracker.set_tags(parent, {"best_trial": best.number, "best_lambda": f"{best.params['lambda']:.6g}"})
        points = {s: lambda_points(session, s) for s in SEARCH_STAGES[: SEARCH_STAGES.index(stage) + 1]}
        title = "Validation accuracy vs λ: " + " and ".join(points)
        fine_range = bounds if stage == "fine" else None
        figure = plots.accuracy_vs_lambda(points, title, fine_range, best.user_attrs.get("n_val") if best else None)
        tracker.log_figure(parent, figure, "accuracy_vs_lambda.png")
        tracker.log_text(parent, trial_table(study).to_csv(index=False), "trials.csv")
        tracker.set_status(parent, "FINISHED")
    return StageSummary(
        stage, study.study_name, finished, n,
        None if best is None else best.params["lambda"], None if best is None else best.value,
        bounds, parent, complete,
    )


def lambda_points(session: Session, stage: str) -> list[tuple[float, float, bool]]:
    """(λ, validation accuracy, completed?) per finished trial; a pruned trial's accuracy is its last report."""
    study = session.load_study(stage)
    if study is None:
        return []
    return [(t.params["lambda"], t.value, t.state == TrialState.COMPLETE)
            for t in study.get_trials(deepcopy=False, states=FINISHED) if t.value is not None]


def trial_table(study: optuna.Study):
    """One row per trial that ran: number, λ, best and final validation accuracy, state, duration."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        took = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({
            "trial": t.number,
            "lambda": t.params.get("lambda", math.nan),
            "best_val_accuracy": t.user_attrs.get("best_val_accuracy", math.nan),
            "final_val_accuracy": t.user_attrs.get("final_val_accuracy", math.nan),
            "state": t.state.name,
            "duration_s": None if took is None else round(took, 1),
            "reason": t.user_attrs.get("reason", ""),
        })
    return pd.DataFrame(rows, columns=["trial", "lambda", "best_val_accuracy", "final_val_accuracy", "state",
                                       "duration_s", "reason"])
