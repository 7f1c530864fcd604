"""Which searched settings mattered: Optuna's PED-ANOVA importance over a stage's completed trials.

PED-ANOVA (`optuna.importance.PedAnovaImportanceEvaluator`, Optuna's default) fits Parzen estimators to the
top-quantile trials: NumPy only, milliseconds for a stage. fANOVA fits a random forest (scikit-learn, which brings
SciPy and its own OpenBLAS into the process) and takes seconds to minutes. Importance is computed in the worker
that finishes a stage, which goes on to train the next one, so nothing heavier than NumPy may come in.

`optuna.importance` imports scikit-learn's forest at its own import when scikit-learn is installed (MLflow
installs it): 6-8 s here, for the two evaluators we never call. `_evaluators` imports it with scikit-learn hidden,
so Optuna's guard records it as missing; fANOVA and MDI are then unavailable in this process, PED-ANOVA is not.
"""

from __future__ import annotations

import contextlib
import sys

import optuna

from pipeline.names import IMPORTANCE_PREFIX, IMPORTANCES_BOTH_PREFIX
from pipeline.search.results import completed, study_space
from pipeline.settings.space import Dimension

MIN_TRIALS = 4  # PED-ANOVA compares the top trials with the rest: two of each at least


def _evaluators():
    """`optuna.importance`, imported without scikit-learn (see the module's docstring)."""
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        import optuna.importance

        return optuna.importance
    sys.modules["sklearn"] = None  # an ImportError for Optuna's optional import; removed at once
    try:
        import optuna.importance
    finally:
        del sys.modules["sklearn"]
    return optuna.importance


def evaluator():
    return _evaluators().PedAnovaImportanceEvaluator()


def one_dimension(searched: dict[str, Dimension]) -> str | None:
    """The line said instead of a single bar when the stage searches one setting, else None."""
    if len(searched) != 1:
        return None
    (dim,) = searched.values()
    return f"importance: one searched setting ({dim.name}), nothing to compare it with"


def as_study(trials: list[optuna.trial.FrozenTrial], searched: dict[str, Dimension],
             name: str = "view") -> optuna.Study:
    """An in-memory study holding these completed trials, each with one distribution per searched setting (the
    widest range among them): coarse and fine trials together, or a study's own trials without imported ones."""
    dists = {}
    for dim in searched.values():
        found = [t.distributions[dim.name] for t in trials if dim.name in t.distributions]
        if not found:
            continue
        if isinstance(found[0], optuna.distributions.CategoricalDistribution):
            dists[dim.name] = type(found[0])(list(dict.fromkeys(c for d in found for c in d.choices)))
        else:
            dists[dim.name] = type(found[0])(min(d.low for d in found), max(d.high for d in found),
                                             log=found[0].log)
    view = optuna.create_study(study_name=name, direction="maximize")
    view.add_trials([optuna.trial.create_trial(
        params={k: t.params[k] for k in dists}, distributions=dists, value=t.value, user_attrs=t.user_attrs,
        intermediate_values=t.intermediate_values) for t in trials if dists.keys() <= t.params.keys()])
    return view


def importances(trials: list[optuna.trial.FrozenTrial], searched: dict[str, Dimension]) -> dict[str, float] | None:
    """Setting name -> importance (summing to 1) over these completed trials; None with one searched setting or
    fewer than MIN_TRIALS trials."""
    if one_dimension(searched) is not None or len(trials) < MIN_TRIALS:
        return None
    with contextlib.suppress(ValueError):  # PED-ANOVA refuses when the trials' values do not differ
        view = as_study(trials, searched)
        return dict(_evaluators().get_param_importances(view, evaluator=evaluator(), normalize=True))
    return None


def stage_importances(stage: str, studies: dict[str, optuna.Study], searched: dict[str, Dimension]) -> dict:
    """The metrics a stage run carries: importance.<setting> over the stage's trials and, for the fine stage,
    importance_coarse_fine.<setting> over the coarse and fine trials together."""
    out = {}
    own = importances(completed(studies[stage]), searched)
    out |= {f"{IMPORTANCE_PREFIX}{k}": v for k, v in (own or {}).items()}
    if stage == "fine" and studies.get("coarse") is not None:
        both = importances(completed(studies["coarse"]) + completed(studies["fine"]), searched)
        out |= {f"{IMPORTANCES_BOTH_PREFIX}{k}": v for k, v in (both or {}).items()}
    return out


def table(metrics: dict[str, float]):
    """The importance metrics as a DataFrame: one row per setting, most important first, one column per scope."""
    import pandas as pd

    columns = {}
    for prefix, column in ((IMPORTANCE_PREFIX, "importance"), (IMPORTANCES_BOTH_PREFIX, "importance_coarse_fine")):
        found = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
        if found:
            columns[column] = found
    frame = pd.DataFrame(columns)
    frame.index.name = "setting"
    return frame.sort_values(frame.columns[0], ascending=False).reset_index() if len(frame) else frame.reset_index()


def importance_of(session, stage: str, study: optuna.Study):
    """`Project.importance(stage)` and `hpsearch report`: the stage's importance table, computed from the stored
    trials with the space the study recorded; .attrs["note"] says why it is empty, if it is."""
    searched = study_space(study)
    studies = {stage: study}
    if stage == "fine":
        studies["coarse"] = session.load_study("coarse")
    frame = table(stage_importances(stage, studies, searched))
    if frame.empty:
        frame.attrs["note"] = one_dimension(searched) or (
            f"importance: fewer than {MIN_TRIALS} completed trials with differing values, nothing to rank")
    return frame
