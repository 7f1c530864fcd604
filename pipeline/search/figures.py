"""Optuna's matplotlib figures of a finished stage, as PNG artifacts of its stage run (under study/).

history, slice per searched setting, contour (the two most important settings), parallel coordinate,
intermediate values (where a pruner ran), timeline, and the importance bars. Optuna draws log-scale settings
(λ) on log axes. They are drawn once, by the worker that closes the stage run: about 3 s for a stage
(docs/tracking.md). pyplot is imported here only: never by the command line at start, nor in a trial.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import optuna

from pipeline.names import OBJECTIVE
from pipeline.search.importance import MIN_TRIALS, as_study, evaluator, one_dimension
from pipeline.search.results import completed
from pipeline.settings.space import Dimension

FOLDER = "study"  # the stage run's artifact folder of these figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def figures(study: optuna.Study, searched: dict[str, Dimension], pruning: bool,
            both: optuna.Study | None = None, importance: dict | None = None):
    """(file name, draw, title) triples; each draw() returns the Axes of one figure (an array of them for a
    matrix of panels)."""
    import optuna.visualization.matplotlib as vm

    name, target = study.study_name, OBJECTIVE
    out = [("history.png", lambda: vm.plot_optimization_history(study, target_name=target))]
    for dim in searched.values():
        out.append((f"slice_{dim.name}.png", lambda d=dim: vm.plot_slice(study, params=[d.name], target_name=target)))
    top = sorted(importance or {}, key=lambda k: -importance[k])[:2] or [d.name for d in searched.values()][:2]
    if len(searched) >= 2:
        out.append(("contour.png", lambda: vm.plot_contour(study, params=top, target_name=target)))
        out.append(("parallel_coordinate.png", lambda: vm.plot_parallel_coordinate(study, target_name=target)))
        if importance:  # drawn where the metrics were computed: enough completed trials
            out.append(("importance.png", lambda: vm.plot_param_importances(study, evaluator=evaluator())))
        if both is not None:
            out.append(("importance_coarse_fine.png", lambda: vm.plot_param_importances(both, evaluator=evaluator())))
    if pruning:
        out.append(("intermediate_values.png", lambda: vm.plot_intermediate_values(study)))
    out.append(("timeline.png", lambda: vm.plot_timeline(study)))
    titles = {"history.png": f"{name}: validation accuracy by trial", "contour.png": f"{name}: {' × '.join(top)}",
              "parallel_coordinate.png": f"{name}: searched values (log10 for log-scale settings)",
              "importance.png": f"{name}: importance (PED-ANOVA)",
              "importance_coarse_fine.png": "coarse and fine trials together: importance (PED-ANOVA)",
              "intermediate_values.png": f"{name}: validation accuracy at each checkpoint (pruning)",
              "timeline.png": f"{name}: trials over time (overlaps: parallel workers)"}
    titles |= {f"slice_{d.name}.png": f"{name}: validation accuracy vs {d.name}" + (" (log scale)" if d.log else "")
               for d in searched.values()}
    return [(file, draw, titles[file]) for file, draw in out]


def log_figures(tracker, run_id: str, studies: dict[str, optuna.Study], stage: str, searched: dict[str, Dimension],
                pruning: bool, importance: dict | None = None) -> float:
    """Draw the stage's figures and log them to its run; returns the seconds it took. The figures show the trials
    the stage trained (imported ones left out); a figure Optuna cannot draw is left out, never fatal."""
    plt = _pyplot()
    t0 = time.perf_counter()
    study = _own_view(studies[stage], searched)
    both = None
    if stage == "fine" and studies.get("coarse") is not None and one_dimension(searched) is None:
        trials = completed(studies["coarse"]) + completed(studies["fine"])
        both = as_study(trials, searched, "coarse+fine") if len(trials) >= MIN_TRIALS else None
    with warnings.catch_warnings(), plt.rc_context():  # Optuna's ggplot style stays inside this block
        warnings.simplefilter("ignore")  # "experimental" and "too few trials" warnings
        for file, draw, title in figures(study, searched, pruning, both, importance):
            with contextlib.suppress(ValueError, KeyError, IndexError):
                axes = draw()
                if hasattr(axes, "flat"):  # a matrix of panels (a contour of more than two settings)
                    fig = axes.flat[0].figure
                    fig.suptitle(title, fontsize="medium")
                else:
                    fig = axes.figure
                    for loc in ("left", "right"):  # Optuna's own title is left-aligned on some figures
                        axes.set_title("", loc=loc)
                    axes.set_title(title, fontsize="medium")
                tracker.log_figure(run_id, fig, f"{FOLDER}/{file}")
            plt.close("all")
    return time.perf_counter() - t0


def _own_view(study: optuna.Study, searched: dict[str, Dimension]) -> optuna.Study:
    """The study itself, or where it holds imported trials, an in-memory copy of the trials it ran."""
    from pipeline.search.warm import is_imported

    trials = study.get_trials(deepcopy=False)
    if not any(is_imported(t) for t in trials):
        return study
    view = optuna.create_study(study_name=study.study_name, direction="maximize")
    view.add_trials([t for t in trials if not is_imported(t) and t.state.is_finished()])
    return view
