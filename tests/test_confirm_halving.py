"""Confirm for any space: successive halving across budgets (pipeline.search.confirm.halving), the last round deciding,
a fit over several log-scale settings where it is well-posed, and the stage on tiny data promoting a setting that
is not the search's best because the final-budget trainings say so."""

from __future__ import annotations

import math

import pytest

from pipeline.search.confirm.candidates import Candidate
from pipeline.search.confirm.halving import cost, spent
from pipeline.search.confirm.multifit import fit_separable, log_dims
from pipeline.search.confirm.racing import Training, complete, decide, plan, rounds_of
from pipeline.settings.config import ConfirmSection
from tests.test_confirm_rules import fake_objective


def halve(means: list[float], **settings) -> tuple[ConfirmSection, list[Training]]:
    c = ConfirmSection(k=len(means), strategy="halving", **settings)
    objective, trainings = fake_objective(means), []
    for r in range(c.max_rounds + 2):  # asking past the last round must plan nothing
        entrants = plan(r, len(means), c, trainings)
        assert r < c.rungs or not entrants
        trainings += [objective(i, r) for i in entrants]
    assert complete(len(means), c, trainings)
    return c, trainings


def test_four_candidates_at_half_the_cycles_then_the_two_best_at_the_final_budget():
    c, got = halve([0.50, 0.53, 0.52, 0.49], first_cycles=2, rungs=2, budget=4, z=100.0)
    assert rounds_of(4, c, got) == [[0, 1, 2, 3], [1, 2]]
    assert [cost(c, r) for r in range(2)] == [0.5, 1.0] and spent(c, rounds_of(4, c, got)) == 4.0


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
@pytest.mark.parametrize(("first", "rungs"), [(1, 2), (1, 3), (2, 2), (1, 4)])
@pytest.mark.parametrize("extra", [0.0, 0.5, 1.0, 2.5, 6.0])
@pytest.mark.parametrize("means", ["tie", "spread"])
def test_successive_halving_never_spends_over_its_budget(k, first, rungs, extra, means):
    last = first * 2 ** (rungs - 1)
    budget = math.ceil(k * first / last + extra)
    m = [0.5] * k if means == "tie" else [0.5 + 0.01 * i for i in range(k)]
    c, got = halve(m, first_cycles=first, rungs=rungs, budget=budget)
    rounds = rounds_of(k, c, got)
    assert spent(c, rounds) <= budget + 1e-9
    assert sum(cost(c, t.round) for t in got) == pytest.approx(spent(c, rounds))
    for before, after in zip(rounds, rounds[1:], strict=False):  # each round: at least two of the round before
        assert set(after) <= set(before) and 2 <= len(after) <= max(2, math.ceil(len(before) / 2))


def test_a_budget_that_cannot_pay_round_one_is_refused():
    with pytest.raises(ValueError, match="cannot pay round 1"):
        ConfirmSection(k=4, strategy="halving", first_cycles=1, rungs=2, budget=1)


def test_the_last_round_decides_not_the_cheaper_one():
    """Round 1 (half the cycles) ranks candidate 0 first; at the final's budget candidate 1 is better: 1 wins."""
    c = ConfirmSection(k=3, strategy="halving", first_cycles=1, rungs=2, budget=4, select="best-mean")
    cands = [Candidate({"train.lambda": v, "train.eta_max": e}, f"trial {i}", 0.6 - 0.01 * i)
             for i, (v, e) in enumerate([(1e-4, 0.1), (1e-3, 0.05), (1e-2, 0.02)])]
    values = {(0, 0): 0.60, (1, 0): 0.58, (2, 0): 0.50, (0, 1): 0.62, (1, 1): 0.65}
    trainings = [Training(i, r, v, None) for (i, r), v in values.items()]
    assert rounds_of(3, c, trainings) == [[0, 1, 2], [0, 1]]
    d = decide(cands, trainings, c.select, c, 5000)
    assert d.chosen == cands[1].settings and d.best.candidate is cands[1]
    assert next(s for s in d.scores if s.candidate is cands[0]).vs_best.diff == pytest.approx(0.03)


# ---- the fit over several log-scale settings ----------------------------------------------------
def bowl(s: dict) -> float:
    x, y = math.log10(s["train.lambda"]), math.log10(s["train.eta_max"])
    return 0.6 - 0.01 * (x + 3.2) ** 2 - 0.02 * (y + 1.1) ** 2


GRID = [{"train.lambda": 10.0**x, "train.eta_max": 10.0**y, "model.hidden": 8}
        for x in (-4.0, -3.0, -2.0) for y in (-1.5, -1.0, -0.5)]


def test_the_separable_fit_finds_the_peak_in_every_dimension_despite_round_offsets():
    assert log_dims(GRID) == ["train.lambda", "train.eta_max"]  # hidden is an int: not a log-scale float
    points = [(s, r, bowl(s) + 0.03 * r) for s in GRID for r in (0, 1)]
    fit = fit_separable(points, log_dims(GRID))
    assert fit.values["train.lambda"] == pytest.approx(10**-3.2) and fit.values["train.eta_max"] == pytest.approx(
        10**-1.1) and fit.clipped == ()
    assert fit.curvature["train.lambda"] == pytest.approx(-0.01)


def test_the_fit_is_refused_where_it_is_not_well_posed_and_the_best_mean_chosen():
    few = GRID[:5]
    assert "5 distinct settings trained there, a fit over 2 dimensions needs 6" in fit_separable(
        [(s, 0, bowl(s)) for s in few], log_dims(few))
    line = [s for s in GRID if s["train.eta_max"] == 10**-1.0] + [GRID[0], GRID[1], GRID[4]]
    assert "fewer than 3 distinct values" not in fit_separable([(s, 0, bowl(s)) for s in line], log_dims(line))
    c = ConfirmSection(k=3, strategy="halving", first_cycles=1, rungs=2, budget=4, select="fit")
    cands = [Candidate(s, f"trial {i}", None) for i, s in enumerate(GRID[:3])]
    trainings = [Training(i, 0, bowl(cands[i].settings), None) for i in range(3)]
    trainings += [Training(i, 1, bowl(cands[i].settings), None) for i in (0, 1)]
    d = decide(cands, trainings, "fit", c, 5000)
    assert d.how.startswith("best mean (no fit: ") and d.chosen == cands[1].settings and d.multifit is None


# ---- the stage on tiny data ---------------------------------------------------------------------
def short_horizon_bias(real_train):
    """The real training, but its validation accuracy reported as short-horizon bias makes it: at the search's
    2 cycles small λ and large η_max score best, at the final's 4 cycles the opposite (docs/wide.md)."""

    def train(X, y, X_val, y_val, settings, on_checkpoint=None):
        x, e = math.log10(settings.lam), math.log10(settings.eta_max)
        sign = 1.0 if settings.cycles >= 4 else -1.0
        value = 0.5 + sign * 0.02 * (x + 3.0) - sign * 0.01 * (e + 1.5)

        def report(step, metrics):
            if on_checkpoint is not None:
                on_checkpoint(step, metrics | {"val_accuracy": value})

        return real_train(X, y, X_val, y_val, settings, report)

    return train


HALVING = ["--set", 'confirm.strategy="halving"', "--set", "confirm.first_cycles=2", "--set", "confirm.rungs=2",
           "--set", "train.cycles=4", "--set", "confirm.k=4", "--set", "confirm.budget=4", "--set", "confirm.z=100.0",
           "--set", 'confirm.placement="top"', "--set", 'confirm.select="fit"', "--set", "confirm.min_gap=0.0"]


def test_a_two_dimensional_confirm_promotes_what_the_final_budget_prefers_not_the_searchs_best(project, monkeypatch):
    import pipeline.search.objective
    from tests.conftest import hpsearch
    from tests.test_confirm_stage import study_of
    from tests.test_reliability import runs_of

    coarse = project / "studies" / "coarse.toml"
    coarse.write_text(coarse.read_text() + '"train.eta_max" = { low = 0.01, high = 0.1, log = true }\n')
    monkeypatch.setattr(pipeline.search.objective, "train", short_horizon_bias(pipeline.search.objective.train))
    hpsearch("search", "coarse", "--n-trials", "6", "--no-prune")
    searched = sorted(study_of(project, "coarse").get_trials(), key=lambda t: -t.value)
    hpsearch("search", "confirm", *HALVING)
    study = study_of(project, "confirm")
    trials = study.get_trials()
    rounds = [(t.user_attrs["round"], t.params["cycles"]) for t in trials]
    assert sorted(rounds) == [(0, 2)] * 4 + [(1, 4)] * 2  # 4 at 2 cycles, the 2 best again at 4: cost 4
    chosen = study.user_attrs["chosen"]
    assert set(chosen) == {"train.lambda", "train.eta_max"}
    best = searched[0].params
    assert (chosen["train.lambda"], chosen["train.eta_max"]) != (best["lambda"], best["eta_max"])
    finals = {t.params["lambda"]: t.value for t in trials if t.user_attrs["round"] == 1}
    assert chosen["train.lambda"] == max(finals, key=finals.get)  # the final budget's better one
    agreement = study.user_attrs["search_rank_agreement"]  # the search's values against round 1's
    assert agreement["n"] == 4 and agreement["rho"] == pytest.approx(1.0)  # round 1 trains at the search's 2 cycles
    out = hpsearch("train-final").output
    assert "confirm stage's choice" in out
    (final,) = runs_of(project, "tags.`hpsearch.role` = 'final'")
    assert float(final.data.params["train.lambda"]) == pytest.approx(chosen["train.lambda"])
    assert float(final.data.params["train.eta_max"]) == pytest.approx(chosen["train.eta_max"])
    report = hpsearch("report").output
    assert "rank agreement of the search budget with the confirm stage's round 1 (2 of 4 cycles): Spearman ρ = " \
           "+1.00 over 4 settings" in report


def test_the_wide_study_searches_lambda_eta_max_and_eps_and_confirms_them_at_the_finals_budget():
    from pathlib import Path

    from pipeline.errors import ConfigError
    from pipeline.search.confirm.halving import check
    from pipeline.settings import config

    studies = Path(__file__).resolve().parents[1] / "studies"
    space = config.load("coarse", studies / "wide-coarse.toml").space
    lam, eta, eps = (space[k] for k in ("train.lambda", "train.eta_max", "data.whiten_eps"))
    assert lam.low <= 8.34e-4 <= lam.high and math.log10(lam.high / lam.low) >= 1 and lam.log
    assert eta.low <= 0.0995 <= eta.high and eps.low <= 1.0 <= eps.high
    confirm, final = (config.load(s, studies / f"wide-{s}.toml") for s in ("confirm", "final"))
    check(confirm.confirm, confirm.train.cycles)  # the last round trains the confirm file's 4 cycles
    assert confirm.confirm.first_cycles * 2 * confirm.train.n_s * confirm.train.batch_size / 45000 == 24
    assert confirm.train_settings().total_steps * 100 / 45000 == 48  # round 2: the final's 48 epochs
    assert final.train_settings().total_steps * 100 / 49000 == 48  # the final's 48 epochs
    with pytest.raises(ConfigError, match="must be train.cycles"):
        check(confirm.confirm, 3)
