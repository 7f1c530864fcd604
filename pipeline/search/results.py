"""What a study holds, as numbers: stage summaries, the trial table, points for figures, the best trial."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from pipeline.names import (
    FINAL_STAGE,
    IMPORTED_ATTR,
    LAMBDA,
    N_VAL_ATTR,
    RANK_ATTR,
    RUN_ATTR,
    SEARCH_STAGES,
    SETTINGS_ATTR,
    SPACE_ATTR,
)
from pipeline.settings import legacy
from pipeline.workers import FINISHED, is_surplus


@dataclass
class StageSummary:
    stage: str
    study_name: str
    n_finished: int
    n_target: int
    best_settings: dict | None  # setting key -> value of the best trial
    best_value: float | None
    space: dict  # setting key -> space.Dimension
    parent_run_id: str
    complete: bool
    stopped: str | None = None  # why the stage stopped before it was complete ("the --timeout of 60 s")


def trial_settings(trial: optuna.trial.FrozenTrial) -> dict[str, object]:
    """Setting key -> value a trial trained with."""
    return dict(trial.user_attrs.get(SETTINGS_ATTR) or legacy.trial_settings(trial))


def n_val_of(trial: optuna.trial.FrozenTrial) -> int:
    """The validation images the trial's accuracy was measured on."""
    return trial.user_attrs.get(N_VAL_ATTR, legacy.N_VAL)


def stage_metrics(study: optuna.Study) -> dict[str, float]:
    """What the stage run carries: best and median validation accuracy, best λ, trials, wall time, and the
    compute its pruner used and saved (update steps trained against what full trainings would take)."""
    done = completed(study)
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.datetime_start and t.datetime_complete and not is_surplus(t) and IMPORTED_ATTR not in t.user_attrs]
    out = {"n_trials": float(len(trials))}
    if trials:
        wall = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        out["wall_time_s"] = wall.total_seconds()
        measured = [t for t in trials if "steps_total" in t.user_attrs]
        full = sum(t.user_attrs["steps_total"] for t in measured)
        if full:
            used = sum(t.user_attrs.get("steps_trained", 0) for t in measured)
            out |= {"steps_trained": float(used), "compute_saved": 1 - used / full}
    if done:
        best = best_completed(study)
        out |= {"best_val_accuracy": best.value, "median_val_accuracy": statistics.median(t.value for t in done)}
        if LAMBDA in best.params:
            out["best_lambda"] = best.params[LAMBDA]
    return out


def study_space(study: optuna.Study) -> dict:
    """The space a study recorded when it was created (setting key -> space.Dimension)."""
    from pipeline.settings import space

    if SPACE_ATTR in study.user_attrs:
        return space.from_json(study.user_attrs[SPACE_ATTR])
    return legacy.coarse_space(study)  # a coarse study of hpsearch 0.1 searched λ alone


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials the study trained itself (imported ones only inform its sampler)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if IMPORTED_ATTR not in t.user_attrs]


def best_completed(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the highest value; the lower number wins a tie."""
    return max(completed(study), key=lambda t: (t.value, -t.number), default=None)


def searched_trials(session) -> list[optuna.trial.FrozenTrial]:
    """The completed trials of the coarse and fine studies (those that exist)."""
    return [t for stage in SEARCH_STAGES if (s := session.load_study(stage)) is not None for t in completed(s)]


def standard_error(accuracy: float, n: int) -> float:
    """The binomial standard error of an accuracy measured on n images."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def best_trial(session, rule: str = "best") -> optuna.trial.FrozenTrial | None:
    """The trial to promote, over the completed trials of the coarse and fine studies.

    "best": the highest validation accuracy. "one-se": the largest λ whose accuracy is within one
    standard error, sqrt(a(1 − a)/n_val), of the best: the one-standard-error rule of model selection.
    """
    trials = searched_trials(session)
    best = max(trials, key=lambda t: t.value, default=None)
    if best is None or rule == "best":
        return best
    se = standard_error(best.value, n_val_of(best))
    return max((t for t in trials if t.value >= best.value - se), key=lambda t: t.params[LAMBDA])


def lambda_points(study: optuna.Study | None) -> list[tuple[float, float, bool]]:
    """(λ, validation accuracy, completed?) per finished trial; a pruned trial's accuracy is its last report."""
    if study is None:
        return []
    return [(t.params[LAMBDA], t.value, t.state == TrialState.COMPLETE)
            for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.value is not None and IMPORTED_ATTR not in t.user_attrs]


TABLE_COLUMNS = ["trial", LAMBDA, "best_val_accuracy", "final_val_accuracy", "state", "duration_s", "reason"]


def trial_table(study: optuna.Study):
    """One row per trial that ran: number, λ, best and final validation accuracy, state, duration."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        if is_surplus(t) or IMPORTED_ATTR in t.user_attrs:
            continue
        took = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({
            "trial": t.number,
            LAMBDA: t.params.get(LAMBDA, math.nan),
            **{name: value for name, value in t.params.items() if name != LAMBDA},
            "best_val_accuracy": t.user_attrs.get("best_val_accuracy", math.nan),
            "final_val_accuracy": t.user_attrs.get("final_val_accuracy", math.nan),
            "state": t.state.name,
            "duration_s": None if took is None else round(took, 1),
            "reason": t.user_attrs.get("reason", ""),
        })
    extra = sorted({k for row in rows for k in row} - set(TABLE_COLUMNS))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS[:2] + extra + TABLE_COLUMNS[2:])


def stage_tables(session, stages=SEARCH_STAGES) -> dict:
    """The trial table of each named stage that has a study (the final's study only claims its training)."""
    return {stage: trial_table(st) for stage in stages
            if stage != FINAL_STAGE and (st := session.load_study(stage)) is not None}


def report_json(session, tables: dict) -> dict:
    """`report --json`: each stage's trial rows, and the trial to promote."""
    import json

    best = best_trial(session)
    best_d = None if best is None else {
        "stage": best.user_attrs.get("stage", "?"), "trial": best.number,
        "lambda": best.params[LAMBDA], "val_accuracy": best.value, RUN_ATTR: best.user_attrs.get(RUN_ATTR),
    }
    confirm = session.load_study("confirm")  # how well the search budget ranked the confirm's candidates
    rank = confirm.user_attrs.get(RANK_ATTR) if confirm is not None else None
    return {"stages": {stage: json.loads(t.to_json(orient="records")) for stage, t in tables.items()}, "best": best_d,
            RANK_ATTR: rank}
