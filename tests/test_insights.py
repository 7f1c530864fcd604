"""What a finished stage run shows: PED-ANOVA importance and Optuna's figures (pipeline/search/importance.py,
pipeline/search/figures.py). The end-to-end checks on a real 2-D stage are in tests/test_space.py."""

from __future__ import annotations

import math
import subprocess
import sys

import optuna
import pytest

from pipeline.names import IMPORTED_ATTR
from pipeline.search import figures as study_figures
from pipeline.search import importance
from pipeline.settings import space
from tests.conftest import ROOT

TWO = {"train.lambda": space.Dimension("train.lambda", "float", 1e-5, 1e-1, True),
       "model.hidden": space.Dimension("model.hidden", "categorical", choices=(4, 8, 16))}


def made_study(n: int = 12, prune_every: int = 0, name: str = "demo-coarse") -> optuna.Study:
    """λ decides the value; hidden only adds noise. Every prune_every-th trial is pruned after two reports."""
    study = optuna.create_study(study_name=name, direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    for i in range(n):
        trial = study.ask({d.name: d.distribution() for d in TWO.values()})
        lam = trial.params["lambda"]
        value = 0.5 - 0.1 * (math.log10(lam) + 2.5) ** 2 + 0.001 * (trial.params["hidden"] % 3)
        for step in range(3):
            trial.report(value - 0.05 * (2 - step), step)
        if prune_every and i % prune_every == prune_every - 1:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return study


class Recorder:
    """A Tracker stand-in that keeps what is logged."""

    def __init__(self):
        self.figures, self.metrics, self.tags = {}, {}, {}

    def log_figure(self, run_id, figure, name):
        assert figure.axes and figure.axes[0].get_title() or figure._suptitle is not None, name
        self.figures[name] = figure

    def log_metrics(self, run_id, metrics):
        self.metrics |= metrics

    def set_tags(self, run_id, tags):
        self.tags |= tags


def test_importance_sums_to_one_and_ranks_the_setting_that_decides_first():
    found = importance.importances(importance.completed(made_study()), TWO)
    assert set(found) == {"lambda", "hidden"}
    assert sum(found.values()) == pytest.approx(1, abs=0.01)
    assert found["lambda"] > found["hidden"]


def test_one_searched_setting_is_one_line_not_a_single_bar():
    one = {"train.lambda": TWO["train.lambda"]}
    assert importance.importances(importance.completed(made_study()), one) is None
    assert importance.one_dimension(one) == "importance: one searched setting (lambda), nothing to compare it with"
    rec = Recorder()
    study_figures.log_figures(rec, "run", {"coarse": made_study()}, "coarse", one, pruning=False)
    assert "study/importance.png" not in rec.figures and "study/contour.png" not in rec.figures
    assert "study/slice_lambda.png" in rec.figures


def test_the_stage_figures_and_what_they_cost():
    rec = Recorder()
    seconds = study_figures.log_figures(rec, "run", {"coarse": made_study(prune_every=4)}, "coarse", TWO, pruning=True,
                                        importance={"lambda": 0.9, "hidden": 0.1})
    assert set(rec.figures) == {f"study/{n}.png" for n in (
        "history", "slice_lambda", "slice_hidden", "contour", "parallel_coordinate", "importance",
        "intermediate_values", "timeline")}
    slice_ax = rec.figures["study/slice_lambda.png"].axes[0]
    assert slice_ax.get_xscale() == "log", "λ on a log10 axis"
    assert slice_ax.get_title() == "demo-coarse: validation accuracy vs lambda (log scale)"
    assert seconds < 20  # a few seconds on a quiet machine (docs/tracking.md); generous for a loaded one
    rec = Recorder()
    study_figures.log_figures(rec, "run", {"coarse": made_study()}, "coarse", TWO, pruning=False)
    assert "study/intermediate_values.png" not in rec.figures, "no pruner ran"


def test_the_fine_run_ranks_coarse_and_fine_together_and_leaves_imported_trials_out():
    coarse, fine = made_study(name="demo-coarse"), made_study(8, name="demo-fine")
    fine.add_trial(optuna.trial.create_trial(params={"lambda": 1e-5, "hidden": 4}, value=0.99,
                                             distributions={d.name: d.distribution() for d in TWO.values()},
                                             user_attrs={IMPORTED_ATTR: "other-fine/0"}))
    metrics = importance.stage_importances("fine", {"coarse": coarse, "fine": fine}, TWO)
    assert sum(v for k, v in metrics.items() if k.startswith("importance.")) == pytest.approx(1, abs=0.01)
    both = {k: v for k, v in metrics.items() if k.startswith("importance_coarse_fine.")}
    assert set(both) == {"importance_coarse_fine.lambda", "importance_coarse_fine.hidden"}
    assert sum(both.values()) == pytest.approx(1, abs=0.01)
    rec = Recorder()
    study_figures.log_figures(rec, "run", {"coarse": coarse, "fine": fine}, "fine", TWO, pruning=False)
    assert "study/importance_coarse_fine.png" in rec.figures
    history = rec.figures["study/history.png"].axes[0]
    assert max(len(c.get_offsets()) for c in history.collections) == 8, "the imported trial is not drawn"


def test_optunas_plot_style_stays_inside_the_figures():
    import matplotlib

    before = dict(matplotlib.rcParams)
    study_figures.log_figures(Recorder(), "run", {"coarse": made_study()}, "coarse", TWO, pruning=False)
    assert {k: v for k, v in matplotlib.rcParams.items() if before.get(k) != v} == {}


def test_importance_brings_no_scikit_learn_into_a_training_process():
    """Optuna imports scikit-learn's forest with optuna.importance when it is installed (6-8 s here, and SciPy's
    own BLAS): the worker that finishes a stage goes on to train the next."""
    code = ("import sys, pipeline.search.importance as i, pipeline.search.figures; i._evaluators(); "
            "print('sklearn' in sys.modules, i.evaluator().__class__.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["False", "PedAnovaImportanceEvaluator"]
