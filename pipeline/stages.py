"""The stage loop: run trials until the study holds n_trials finished ones; a rerun completes a stage."""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import TrialState

from pipeline import plots
from pipeline.config import Settings
from pipeline.errors import UserError
from pipeline.names import LAMBDA, OBJECTIVE, PARENT_ATTR, SEARCH_STAGES
from pipeline.objective import Objective, Stage
from pipeline.results import StageSummary, best_of, completed, lambda_points, trial_table
from pipeline.sampling import make_pruner, make_sampler
from pipeline.session import Session
from pipeline.tracking import NOTE, code_version
from pipeline.workers import SurplusTrial, recover_orphans, tally, wait_until_settled


def run_search(session: Session, stage: str, cfg: Settings) -> StageSummary:
    """Run trials until the study holds cfg's n_trials finished trials (a rerun completes a stage)."""
    existing = session.load_study(stage)
    if stage == "fine" and existing is not None and "lambda_min" in existing.user_attrs:
        # Bounds are derived once, when the fine study is created; resuming keeps them.
        bounds, source = (existing.user_attrs["lambda_min"], existing.user_attrs["lambda_max"]), {}
    elif stage == "fine":
        bounds, source = fine_bounds(session, cfg)
    else:
        bounds, source = (cfg.search.lambda_min, cfg.search.lambda_max), {}
    data = session.dataset(cfg.data.split, cfg.data.val_size)
    tracker = session.tracker
    study, created = open_study(session, stage, cfg)
    if created and stage == "fine":
        for key, value in {"lambda_min": bounds[0], "lambda_max": bounds[1], **source}.items():
            study.set_user_attr(key, value)
    params = {"search.lambda_min": bounds[0], "search.lambda_max": bounds[1], "data.digest": data.digest,
              "data.n_train": len(data.y_train), "data.n_val": len(data.y_val), "code_version": code_version()}
    parent, new_parent = ensure_parent_run(session, study, stage)
    if new_parent:
        tracker.log_params(parent, cfg.flat() | params | {k: study.user_attrs.get(k, v) for k, v in source.items()})
    n = cfg.search.n_trials
    tracker.set_tags(parent, {"n_trials": n, NOTE: f"{stage} stage of {session.experiment}: {n} trials"})
    study.set_user_attr("n_trials", n)  # the target the next stage checks against
    recover_orphans(study)
    close_orphan_runs(session, study, parent)
    tracker.set_status(parent, "RUNNING")
    objective = Objective(Stage(stage, study.study_name, cfg, data, tracker, parent, bounds, session.terminal, params))
    try:
        while True:
            done = tally(study)
            session.terminal.stage(stage, n, min(done.finished, n))
            if done.finished + done.running >= n:
                break
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,), callbacks=[_announce(session, stage, n)])
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated
        tracker.set_status(parent, "KILLED")
        raise
    except Exception:
        tracker.set_status(parent, "FAILED")
        raise
    return finish_stage(session, stage, study, parent, n, bounds)


def fine_bounds(session: Session, cfg: Settings) -> tuple[tuple[float, float], dict]:
    """The coarse study's two best λ, widened by ±widen in log10, and where they came from."""
    coarse = session.load_study("coarse")
    if coarse is None:
        raise UserError(f"no coarse study {session.study_name('coarse')!r} in {session.shown_storage}; "
                        "run `hpsearch search coarse` first")
    wait_until_settled(coarse, session.terminal.say)
    finished, target = tally(coarse).finished, coarse.user_attrs.get("n_trials", 0)
    if finished < target:
        raise UserError(f"the coarse stage is incomplete ({finished} of {target} trials finished); run "
                        "`hpsearch search coarse` to complete it (or with --n-trials N to settle for fewer)")
    done = completed(coarse)
    if len(done) < 2:
        raise UserError(f"the coarse study has {len(done)} completed trial(s); the fine bounds need 2: "
                        "run `hpsearch search coarse` (again) first")
    top = sorted(done, key=lambda t: (-t.value, t.number))[:2]
    lams = sorted(t.params[LAMBDA] for t in top)
    margin = 10 ** cfg.search.widen
    source = {
        "source_study": coarse.study_name,
        "source_trials": ",".join(str(t.number) for t in top),
        "source_lambdas": ",".join(f"{t.params[LAMBDA]:.6g}" for t in top),
        "widen_log10": cfg.search.widen,
    }
    return (lams[0] / margin, lams[1] * margin), source


def _announce(session: Session, stage: str, n: int):
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("surplus"):
            return
        best = best_of(study)
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
                tracker.set_tags(child.info.run_id, {"mlflow.parentRunId": found})
            tracker.delete_run(loser)  # deleting twice (the other worker too) is no error
    study.set_user_attr(PARENT_ATTR, found)
    return found, found == mine


def _oldest(runs) -> str | None:
    return min(((r.info.start_time, r.info.run_id) for r in runs), default=(None, None))[1]


def close_orphan_runs(session: Session, study: optuna.Study, parent_run_id: str) -> None:
    """Runs still RUNNING whose trial is over (its process died): KILLED, with the reason."""
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    for run in session.tracker.children(parent_run_id, status="RUNNING"):
        number = int(run.data.tags.get("hpsearch.trial", -1))
        if states.get(number) not in (None, TrialState.RUNNING):
            session.tracker.set_tags(run.info.run_id, {"state": "FAIL", "reason": "its process died (found by a "
                                                       "later run)"})
            session.tracker.set_status(run.info.run_id, "KILLED")


def finish_stage(session: Session, stage: str, study: optuna.Study, parent: str, n: int, bounds) -> StageSummary:
    """When the study is complete: the parent run gets the summary metrics, the figure and the trial table."""
    tracker = session.tracker
    done = tally(study)
    complete = done.finished >= n and done.running == 0
    best = best_of(study)
    if complete:
        tracker.log_metrics(parent, stage_metrics(study))
        if best is not None:
            tracker.set_tags(parent, {"best_trial": best.number, "best_lambda": f"{best.params[LAMBDA]:.6g}"})
        points = {s: lambda_points(session.load_study(s)) for s in SEARCH_STAGES[: SEARCH_STAGES.index(stage) + 1]}
        title = "Validation accuracy vs λ: " + " and ".join(points)
        fine_range = bounds if stage == "fine" else None
        figure = plots.accuracy_vs_lambda(points, title, fine_range, best.user_attrs.get("n_val") if best else None)
        tracker.log_figure(parent, figure, "accuracy_vs_lambda.png")
        tracker.log_text(parent, trial_table(study).to_csv(index=False), "trials.csv")
        tracker.set_status(parent, "FINISHED")
    return StageSummary(stage, study.study_name, done.finished, n, None if best is None else best.params[LAMBDA],
                        None if best is None else best.value, bounds, parent, complete)


def stage_metrics(study: optuna.Study) -> dict[str, float]:
    """Best and median validation accuracy, best λ, trials, wall time: what the stage run carries."""
    done = completed(study)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    out = {"n_trials": float(len([t for t in trials if not t.user_attrs.get("surplus")]))}
    if trials:
        wall = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        out["wall_time_s"] = wall.total_seconds()
    if done:
        best = best_of(study)
        out |= {"best_val_accuracy": best.value, "median_val_accuracy": statistics.median(t.value for t in done),
                "best_lambda": best.params[LAMBDA]}
    return out
