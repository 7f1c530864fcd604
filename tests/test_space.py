"""Search spaces beyond λ: a two-dimensional search end to end, the fine space of every dimension,
and multi-fidelity pruning."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.settings import space
from pipeline.settings.config import _types
from tests.conftest import hpsearch
from tests.test_confirm_stage import study_of
from tests.test_reliability import client, runs_of

TWO_D = ["--set", "space.model.hidden={ choices = [4, 8, 16] }"]


def dims(*specs) -> space.Space:
    return space.parse(dict(specs), _types())


def test_top2_refines_every_dimension_with_literal_bounds():
    coarse = dims(("train.lambda", {"low": 1e-5, "high": 1e-1, "log": True}),
                  ("train.eta_max", {"low": 0.02, "high": 0.2}),
                  ("train.n_s", {"low": 100, "high": 900}),
                  ("model.hidden", {"choices": [50, 100, 200, 400]}))
    top = [{"train.lambda": 1e-3, "train.eta_max": 0.05, "train.n_s": 300, "model.hidden": 200},
           {"train.lambda": 1e-2, "train.eta_max": 0.1, "train.n_s": 500, "model.hidden": 50}]
    fine = space.refine_top2(coarse, top, 0.25)
    assert fine["train.lambda"].low == pytest.approx(1e-3 / 10**0.25)
    assert fine["train.lambda"].high == pytest.approx(1e-2 * 10**0.25)
    # linear: ±0.25 of the coarse range (0.045 and 200), kept inside the coarse range
    assert (fine["train.eta_max"].low, fine["train.eta_max"].high) == pytest.approx((0.02, 0.145))
    assert (fine["train.n_s"].low, fine["train.n_s"].high) == (100, 700)
    assert fine["model.hidden"].choices == (50, 200)  # the coarse order, the top two's choices


def test_region_rule_centres_on_the_best_mean_region_not_the_best_point():
    coarse = dims(("train.lambda", {"low": 1e-5, "high": 1e-1, "log": True}))
    # a lucky single point at 1e-5; a consistently good region around 3e-3
    trials = [({"train.lambda": 1e-5}, 0.500), ({"train.lambda": 1e-4}, 0.470), ({"train.lambda": 2e-3}, 0.495),
              ({"train.lambda": 3e-3}, 0.497), ({"train.lambda": 5e-3}, 0.496), ({"train.lambda": 5e-2}, 0.45)]
    fine = space.refine_region(coarse, trials, 0.5)
    assert fine["train.lambda"].low == pytest.approx(3e-3 / 10**0.5)
    assert fine["train.lambda"].high == pytest.approx(3e-3 * 10**0.5)
    top2 = space.refine_top2(coarse, [t for t, _ in sorted(trials, key=lambda t: -t[1])[:2]], 0.25)
    assert top2["train.lambda"].low < 1e-5  # the report's rule spans more than two decades here


def test_space_round_trips_through_json():
    s = dims(("train.lambda", {"low": 1e-5, "high": 1e-1, "log": True}), ("model.hidden", {"choices": [4, 8]}))
    assert space.from_json(space.to_json(s)) == s


@pytest.fixture(scope="module")
def two_d(tmp_path_factory, cifar_dir):
    from tests.conftest import project_folder

    with project_folder(tmp_path_factory.mktemp("two-d"), cifar_dir) as folder:
        hpsearch("search", "coarse", "--n-trials", "4", "--no-prune", *TWO_D)
        hpsearch("search", "fine", "--n-trials", "3", "--no-prune")
        final = hpsearch("train-final", "--no-confirm").output
        yield folder, final


def test_two_dimensional_search_derives_both_fine_dimensions(two_d):
    folder, _ = two_d
    coarse, fine = study_of(folder, "coarse"), study_of(folder, "fine")
    top = sorted([t for t in coarse.trials if t.state.name == "COMPLETE"], key=lambda t: (-t.value, t.number))[:2]
    derived = space.from_json(fine.user_attrs["space"])
    assert set(derived) == {"train.lambda", "model.hidden"}
    lams = sorted(t.params["lambda"] for t in top)
    assert derived["train.lambda"].low == pytest.approx(lams[0] / 10**0.25)
    assert derived["train.lambda"].high == pytest.approx(lams[1] * 10**0.25)
    assert set(derived["model.hidden"].choices) == {t.params["hidden"] for t in top}
    for t in fine.trials:
        assert t.params["hidden"] in derived["model.hidden"].choices
    parent = runs_of(folder, "tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = 'fine'")[0]
    assert space.from_json(parent.data.params["space"]) == derived
    figures = {a.path for a in client(folder).list_artifacts(parent.info.run_id, "study")}
    assert "study/parallel_coordinate.png" in figures


def test_each_stage_run_ranks_the_settings_and_holds_optunas_figures(two_d):
    folder, _ = two_d
    for stage, scopes in (("coarse", ("importance.",)), ("fine", ("importance_coarse_fine.",))):
        run = runs_of(folder, f"tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = '{stage}'")[0]
        for prefix in scopes:
            ranked = {k: v for k, v in run.data.metrics.items() if k.startswith(prefix)}
            assert set(ranked) == {f"{prefix}lambda", f"{prefix}hidden"}, run.data.metrics
            assert sum(ranked.values()) == pytest.approx(1, abs=0.01)
        pngs = {a.path for a in client(folder).list_artifacts(run.info.run_id, "study")}
        assert {f"study/{n}.png" for n in ("history", "slice_lambda", "slice_hidden", "contour",
                                           "parallel_coordinate", "timeline")} <= pngs, pngs
        assert ("study/importance.png" in pngs) == (stage == "coarse")  # 3 fine trials: too few to rank alone
        assert ("study/importance_coarse_fine.png" in pngs) == (stage == "fine")
        assert 0 < run.data.metrics["figures_s"] < 30


def test_report_and_the_api_give_the_importances(two_d):
    from pipeline.api import Project

    folder, _ = two_d
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        out = hpsearch("report").stdout
        table = Project().importance("coarse")
    run = runs_of(folder, "tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = 'coarse'")[0]
    assert list(table.columns) == ["setting", "importance"] and set(table["setting"]) == {"lambda", "hidden"}
    for row in table.itertuples():
        assert row.importance == pytest.approx(run.data.metrics[f"importance.{row.setting}"])
    lines = out.splitlines()
    at = lines.index("importance (PED-ANOVA over its completed trials):")
    assert lines[at + 1].split() == ["setting", "importance"]
    assert {lines[at + 2].split()[0], lines[at + 3].split()[0]} == {"lambda", "hidden"}


def test_every_run_carries_both_values_and_log10_lambda(two_d):
    folder, _ = two_d
    for stage in ("coarse", "fine"):
        trials = {t.user_attrs["mlflow_run_id"]: t for t in study_of(folder, stage).trials}
        for run_id, t in trials.items():
            p = client(folder).get_run(run_id).data.params
            assert float(p["lambda"]) == pytest.approx(t.params["lambda"])
            assert int(p["hidden"]) == t.params["hidden"] == int(p["model.hidden"])
            assert float(p["log10_lambda"]) == pytest.approx(math.log10(t.params["lambda"]))
            assert "log10_hidden" not in p  # a categorical dimension is plotted as it is


def test_the_final_trains_with_the_promoted_width(two_d):
    folder, out = two_d
    best = max((t for s in ("coarse", "fine") for t in study_of(folder, s).trials if t.state.name == "COMPLETE"),
               key=lambda t: t.value)
    final = runs_of(folder, "tags.`hpsearch.role` = 'final'")[0]
    assert int(final.data.params["model.hidden"]) == best.params["hidden"]
    assert f"hidden = {best.params['hidden']}" in out


@pytest.mark.slow
def test_hyperband_ends_with_n_trials_prunes_and_records_the_compute_saved(project):
    # λ up to 10 spreads the accuracies (strong regularisation fails), so the rungs have losers to stop; 9
    # cycles give Hyperband three brackets with rungs at cycles 1, 3 and 9
    hpsearch("search", "coarse", "--n-trials", "8", "--pruner", "hyperband", "--set", "train.cycles=9",
             "--set", "space.train.lambda={ low = 1e-4, high = 10.0, log = true }")
    study = study_of(project, "coarse")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8
    pruned = [t for t in finished if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["steps_trained"] < t.user_attrs["steps_total"] for t in pruned)
    assert all("hyperband" in t.user_attrs["reason"] for t in pruned)
    parent = runs_of(project, "tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = 'coarse'")[0]
    m = parent.data.metrics
    trained = sum(t.user_attrs["steps_trained"] for t in finished)
    assert m["steps_trained"] == trained
    assert m["compute_saved"] == pytest.approx(1 - trained / sum(t.user_attrs["steps_total"] for t in finished))
    assert m["compute_saved"] > 0
    assert json.loads(parent.data.params["space"])[0]["key"] == "train.lambda"
    assert parent.data.params["search.pruner"] == "hyperband"
    # What Hyperband itself records in the study: the value at each rung it judged a trial at. It stops trials
    # only at a rung (1 or 3 cycles; 9 is the whole schedule), and its brackets start judging at different rungs,
    # so trials that ran to the end passed different numbers of them. Successive halving would judge every trial
    # at 1 and 3 cycles; the median pruner records no rung and judges at the end of cycle 8.
    cycle = 2 * int(parent.data.params["train.n_s"])
    rungs = {t.number: sum(key.startswith("completed_rung_") for key in t.system_attrs) for t in finished}
    assert {t.user_attrs["steps_trained"] for t in pruned} <= {cycle, 3 * cycle}
    assert all(rungs[t.number] >= 1 for t in pruned)
    assert len({rungs[t.number] for t in finished if t.state.name == "COMPLETE"}) > 1, rungs
