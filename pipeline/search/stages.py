"""The stage loop: run trials until the study holds n_trials finished ones; a rerun completes a stage."""

from __future__ import annotations

import dataclasses

import optuna
from optuna.trial import TrialState

from pipeline.errors import UserError
from pipeline.names import (
    LAMBDA,
    N_VAL_ATTR,
    NOTE_TAG,
    OBJECTIVE,
    PARENT_ATTR,
    PARENT_RUN_TAG,
    SEARCH_STAGES,
    SPACE_ATTR,
)
from pipeline.search import budget, insights, warm
from pipeline.search.objective import Objective, TrialContext, data_params
from pipeline.search.results import (
    StageSummary,
    best_completed,
    completed,
    lambda_points,
    stage_metrics,
    study_space,
    trial_settings,
    trial_table,
)
from pipeline.search.sampling import make_pruner, make_sampler
from pipeline.session import Session
from pipeline.settings import legacy, space
from pipeline.settings.config import Settings
from pipeline.tracking import plots
from pipeline.tracking.tracker import code_version
from pipeline.workers import (
    Closer,
    SurplusTrial,
    fault,
    is_surplus,
    recover_orphans,
    run_once,
    tally,
    wait_until_settled,
)


def run_search(session: Session, stage: str, cfg: Settings, deadline=None, enqueue=None,
               from_experiment: str | None = None) -> StageSummary:
    """Run trials until the study holds cfg's n_trials finished trials (a rerun completes a stage), or until the
    deadline (budget.Deadline) passes. `enqueue` (a FILE.toml) and `from_experiment` warm-start the study."""
    session.check_tracking()
    cfg, study, searched, source = prepare(session, stage, cfg, enqueue, from_experiment)
    log_scale = frozenset(key for key, dim in searched.items() if dim.log)
    shared = start_stage(session, study, stage, cfg, lambda trial: space.suggest(searched, trial), log_scale,
                         source)
    return settle(session, study, shared, cfg.search.n_trials,
                  lambda close: finish_stage(session, stage, study, shared.parent_run_id, cfg.search.n_trials,
                                             searched, close), deadline=deadline)


def prepare(session: Session, stage: str, cfg: Settings, enqueue=None, from_experiment: str | None = None):
    """The stage's space and study (created with its space recorded), warm-started once.
    Returns (cfg with the searched space, study, space, where the space came from)."""
    searched, source = stage_space(session, stage, cfg)
    cfg = dataclasses.replace(cfg, space=searched)  # what the runs log as the stage's space
    study, created = open_study(session, stage, cfg)
    if created:
        record_space(study, searched, source)
    warm.warm_start(session, study, stage, searched, cfg.search.n_trials, enqueue, from_experiment)
    return cfg, study, searched, source


def settle(session: Session, study: optuna.Study, context: TrialContext, n: int, finish, refill=lambda: None,
           deadline=None):
    """Run trials until the study holds n finished ones, counting those other workers run; then wait until theirs
    settle, taking over from a worker that died. `finish(close)` summarises the stage; the worker that completes
    the stage closes its run (once, whichever worker gets there: `finish(True)` claims it), the others only read.
    `refill` re-enqueues what a dead worker held. Past the deadline no trial starts; running ones finish."""
    close = closer(session, study, context.parent_run_id)
    while True:
        run_trials(session, study, context, n, refill, deadline)
        close()  # Optuna fails stale trials as each trial starts: their runs are closed (or handed over) here
        result = finish(True)
        if result.complete:
            return result
        stopping = deadline is not None and deadline.passed()
        wait_until_settled(study, session.terminal.say, n=None if stopping else n, on_failed=close,
                           before_fail=close.before_fail)
        if tally(study).finished >= n:
            return finish(True)  # the worker that completed the stage may have died before closing its run
        if stopping:
            return budget.stopped(context.tracker, context.parent_run_id, deadline, finish(False))


def closer(session: Session, study: optuna.Study, parent_run_id: str) -> Closer:
    """The dead-run closer of a stage: its trials' runs are the stage run's children."""
    return Closer(session.tracker, study, lambda: session.tracker.children(parent_run_id))


def stage_space(session: Session, stage: str, cfg: Settings) -> tuple[space.Space, dict]:
    """What the stage searches, and where it came from: the file's [space], or for fine, derived from coarse
    once, when the fine study is created (resuming keeps it)."""
    if stage != "fine":
        return cfg.space, {}
    existing = session.load_study("fine")
    if existing is not None and SPACE_ATTR in existing.user_attrs:
        return space.from_json(existing.user_attrs[SPACE_ATTR]), {}
    if existing is not None and (old := legacy.fine_space(existing)) is not None:
        return old, {}
    return fine_space(session, cfg)


def fine_space(session: Session, cfg: Settings) -> tuple[space.Space, dict]:
    """The coarse space refined by cfg's fine rule around the coarse results, and where it came from."""
    coarse = settled_study(session, "coarse")
    if coarse is None:
        raise UserError(f"no coarse study {session.study_name('coarse')!r} in {session.shown_storage}; "
                        "run `hpsearch search coarse` first")
    finished, target = tally(coarse).finished, coarse.user_attrs.get("n_trials", 0)
    if finished < target:
        raise UserError(f"the coarse stage is incomplete ({finished} of {target} trials finished); run "
                        "`hpsearch search coarse` to complete it (or with --n-trials N to settle for fewer)")
    done = completed(coarse)  # where pruning let one trial finish, the fine stage refines around that one
    if not done:
        raise UserError("the coarse study has no completed trial (every trial pruned or failed); the fine space "
                        "needs one: run `hpsearch search coarse` again with more trials or a milder pruner")
    coarse_space = study_space(coarse)
    top = sorted(done, key=lambda t: (-t.value, t.number))[:2]
    if cfg.fine.rule == "top2":
        fine = space.refine_top2(coarse_space, [trial_settings(t) for t in top], cfg.fine.widen)
    else:
        fine = space.refine_region(coarse_space, [(trial_settings(t), t.value) for t in done], cfg.fine.half_width)
    source = {"source_study": coarse.study_name, "fine_rule": cfg.fine.rule,
              "source_trials": ",".join(str(t.number) for t in top),
              "source_lambdas": ",".join(f"{t.params[LAMBDA]:.6g}" for t in top if LAMBDA in t.params),
              **({"widen_log10": cfg.fine.widen} if cfg.fine.rule == "top2" else {"half_width": cfg.fine.half_width})}
    return fine, source


def settled_study(session: Session, stage: str) -> optuna.Study | None:
    """The stage's study once no worker runs its trials any more (a dead worker's trials failed, its runs closed):
    what a later stage decides from it is then the same in every worker."""
    study = session.load_study(stage)
    if study is not None:
        parent = study.user_attrs.get(PARENT_ATTR)
        close = closer(session, study, parent) if parent else None
        wait_until_settled(study, session.terminal.say, on_failed=close, before_fail=close and close.before_fail)
    return study


def record_space(study: optuna.Study, searched: space.Space, source: dict) -> None:
    study.set_user_attr(SPACE_ATTR, space.to_json(searched))
    legacy.record_lambda_bounds(study, searched)
    for key, value in source.items():
        study.set_user_attr(key, value)


def start_stage(session: Session, study: optuna.Study, stage: str, cfg: Settings, suggest, log_scale: frozenset,
                stage_params: dict) -> TrialContext:
    """The data, the stage's parent run (found or created once) and what every trial shares. A stage that
    other workers completed needs no data: it is not loaded."""
    tracker = session.tracker
    parent, new_parent = ensure_parent_run(session, study, stage)
    n = cfg.search.n_trials
    done = tally(study)
    params = {"code_version": code_version()}
    if new_parent or done.finished + done.running < n:
        params |= data_params(session.dataset(cfg.data.split, cfg.data.val_size, cfg.data.val_fold))
    if new_parent:
        tracker.log_params(parent, cfg.flat() | params | stage_params | session.stores.heartbeat_params())
    tracker.set_tags(parent, {"n_trials": n, NOTE_TAG: f"{stage} stage of {session.experiment}: {n} trials"})
    study.set_user_attr("n_trials", n)  # the target the next stage checks against
    close = closer(session, study, parent)
    recover_orphans(study, close.before_fail)
    close()
    if done.finished + done.running < n or tracker.status(parent) != "FINISHED":
        tracker.set_status(parent, "RUNNING")  # (re)opened: a rerun with a larger n_trials continues it
    def dataset(c: Settings):  # a trial's data by its settings: confirm's seeds validate on their own blocks
        return session.dataset(c.data.split, c.data.val_size, c.data.val_fold, c.data.whitening)

    return TrialContext(stage, study.study_name, cfg, dataset, tracker, parent, suggest, session.terminal, log_scale,
                        params, session.data_origin)


def run_trials(session: Session, study: optuna.Study, context: TrialContext, n: int, refill=lambda: None,
               deadline=None) -> None:
    """Until the study holds n finished trials, counting those other workers are running, or the deadline passed.
    `refill` enqueues the values a stage of enqueued trials still lacks."""
    objective = Objective(context)
    try:
        while True:
            done = tally(study)
            session.terminal.stage(context.name, n, min(done.finished, n))
            if done.finished + done.running >= n or (deadline is not None and deadline.passed()):
                break
            refill()
            announce = _announce(session, context.name, n)
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,), callbacks=[announce])
    except BaseException as e:  # this worker's trial ended with it (its run KILLED or FAILED); the stage run is
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # the others', unless none is left
            context.tracker.set_status(context.parent_run_id,
                                       "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def _announce(session: Session, stage: str, n: int):
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if is_surplus(trial):
            return
        best = best_completed(study)
        state, value = trial.state.name, trial.value
        if trial.state == TrialState.PRUNED:  # its value is only the last report: show why instead
            state, value = f"PRUNED ({trial.user_attrs.get('reason', '')})", None
        session.terminal.trial_end(f"{stage}-{trial.number}", state, value, min(tally(study).finished, n), n,
                                   None if best is None else best.value)

    return callback


def open_study(session: Session, stage: str, cfg: Settings) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; tells whether this process created it."""
    kw = dict(study_name=session.study_name(stage), storage=session.storage, sampler=make_sampler(cfg),
              pruner=make_pruner(cfg))
    try:
        study = optuna.create_study(direction="maximize", **kw)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(**kw), False
    study.set_metric_names([OBJECTIVE])  # Optuna's plots and optuna-dashboard label the objective
    return study, True


def ensure_parent_run(session: Session, study: optuna.Study, stage: str) -> tuple[str, bool]:
    """The stage's parent run, exactly one whatever the races: find it by its tags, else create it, then
    look again and keep the oldest. Any other (ours if another worker's came first, or one left by an
    earlier race) is deleted and its trials' runs move to the kept one. Tells whether the run is ours and new."""
    tracker = session.tracker
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id is not None and tracker.run_exists(run_id):
        return run_id, False
    tags, mine = {"study": study.study_name, "role": "stage"}, None
    with tracker.lock():  # one sqlite store: the check and the creation happen as one step
        runs = tracker.find_runs(**tags)
        if not runs:
            mine = tracker.create_run(stage, tags | {"stage": stage})
            runs = tracker.find_runs(**tags)  # a server shared with other machines: re-check
        found = _oldest(runs)
        for loser in {r.info.run_id for r in runs} - {found}:
            for child in tracker.children(loser):
                tracker.set_tags(child.info.run_id, {PARENT_RUN_TAG: found})
            tracker.delete_run(loser)  # deleting twice (the other worker too) is no error
    study.set_user_attr(PARENT_ATTR, found)
    return found, found == mine


def _oldest(runs) -> str | None:
    return min(((r.info.start_time, r.info.run_id) for r in runs), default=(None, None))[1]


def finish_stage(session: Session, stage: str, study: optuna.Study, parent: str, n: int,
                 searched: space.Space, close: bool = True) -> StageSummary:
    """When the study is complete (and `close`): the parent run gets the summary metrics, the figures and the
    trial table."""
    done = tally(study)
    complete = done.finished >= n and done.running == 0
    best = best_completed(study)
    if close and complete:  # once, by the first worker to claim it; a dead closer's successor picks up after it
        run_once(session, f"close {study.study_name} after {done.finished}",
                 lambda: close_stage(session, stage, study, parent, searched, best))
    return StageSummary(stage, study.study_name, done.finished, n, None if best is None else trial_settings(best),
                        None if best is None else best.value, searched, parent, complete)


def close_stage(session: Session, stage: str, study: optuna.Study, parent: str, searched: space.Space, best) -> None:
    """The stage run's summary metrics (unless a dead closer logged them), figures and trial table; FINISHED."""
    tracker = session.tracker
    run = tracker.client.get_run(parent)
    if run.info.status == "FINISHED":
        return
    metrics = stage_metrics(study)
    if not metrics.keys() <= run.data.metrics.keys():
        tracker.log_metrics(parent, metrics)
    fault("close")
    if best is not None:
        tracker.set_tags(parent, {"best_trial": best.number, **{
            f"best_{k.partition('.')[2]}": f"{v:.6g}" if isinstance(v, float) else v
            for k, v in trial_settings(best).items()}})
    if "train.lambda" in searched:
        points = {s: lambda_points(session.load_study(s)) for s in SEARCH_STAGES[: SEARCH_STAGES.index(stage) + 1]}
        fine_range = (searched["train.lambda"].low, searched["train.lambda"].high) if stage == "fine" else None
        figure = plots.accuracy_vs_lambda(points, "Validation accuracy vs λ: " + " and ".join(points), fine_range,
                                          best.user_attrs.get(N_VAL_ATTR) if best else None)
        tracker.log_figure(parent, figure, "accuracy_vs_lambda.png")
    tracker.log_text(parent, trial_table(study).to_csv(index=False), "trials.csv")
    insights.log_insights(session, stage, study, parent, searched)
    tracker.set_status(parent, "FINISHED")
