"""What a finished search stage's run shows beyond its summary: which settings mattered, and Optuna's figures."""

from __future__ import annotations

import optuna

from pipeline.names import IMPORTANCE_PREFIX, IMPORTANCE_TAG, SEARCH_STAGES
from pipeline.search import figures, importance


def log_insights(session, stage: str, study: optuna.Study, parent: str, searched: dict) -> None:
    """The stage run's importance.<setting> metrics (or, searching one setting, a tag saying so) and Optuna's
    figures under study/, with the seconds they took (figures_s)."""
    earlier = SEARCH_STAGES[: SEARCH_STAGES.index(stage) + 1] if stage in SEARCH_STAGES else (stage,)
    studies = {s: study if s == stage else session.load_study(s) for s in earlier}
    metrics = importance.stage_importances(stage, studies, searched)
    if note := importance.one_dimension(searched):
        session.tracker.set_tags(parent, {IMPORTANCE_TAG: note})
    pruning = not isinstance(study.pruner, optuna.pruners.NopPruner)
    ranked = {k.removeprefix(IMPORTANCE_PREFIX): v for k, v in metrics.items() if k.startswith(IMPORTANCE_PREFIX)}
    seconds = figures.log_figures(session.tracker, parent, studies, stage, searched, pruning, ranked)
    session.tracker.log_metrics(parent, metrics | {"figures_s": seconds})

