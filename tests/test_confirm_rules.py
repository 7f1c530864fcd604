"""The confirm stage's rules on hand-made results: paired differences, racing, the fit, the choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.search.confirm import paired as pr
from pipeline.search.confirm.candidates import Candidate
from pipeline.search.confirm.fit import fit_quadratic
from pipeline.search.confirm.racing import Training, complete, decide, plan, rounds_of
from pipeline.settings.config import ConfirmSection


# ---- per-image correctness and paired differences ------------------------------------------------
def test_correctness_packs_into_836_characters_for_5000_images_and_back():
    correct = np.random.default_rng(0).random(5000) < 0.52
    text = pr.encode(correct)
    assert len(text) == 836 and np.array_equal(pr.decode(text, 5000), correct)


def test_identical_networks_differ_by_zero_plus_minus_zero():
    a = np.random.default_rng(1).random(5000) < 0.5
    assert pr.paired({0: a}, {0: a.copy()}) == pr.Paired(0.0, 0.0, 1)
    assert pr.paired({0: a, 1: ~a}, {0: a, 1: ~a}) == pr.Paired(0.0, 0.0, 2)


def test_disjoint_errors_give_the_binomial_se():
    a = np.ones(5000, dtype=bool)  # right on every image
    b = a.copy()
    b[:1000] = False  # wrong on 1,000: accuracy 0.8, every disagreement one way
    d = pr.paired({0: a}, {0: b})
    assert d.diff == pytest.approx(0.2) and d.se == pytest.approx(math.sqrt(0.2 * 0.8 / 5000))  # 0.0056569
    assert d.se == pytest.approx(0.00565685, abs=1e-8)


def test_the_paired_se_counts_only_the_images_the_two_disagree_on():
    a = np.ones(5000, dtype=bool)
    b = a.copy()
    a[:1000] = False  # a wrong on 0..999
    b[1000:2500] = False  # b wrong on 1000..2499: a alone right on 1,500, b alone on 1,000
    d = pr.paired({0: a}, {0: b})
    assert d.diff == pytest.approx(0.1)
    assert d.se == pytest.approx(math.sqrt((2500 - 500**2 / 5000) / 5000**2))  # 0.0098995
    # Two rounds with the same difference: the images' variance halves, the rounds agree.
    two = pr.paired({0: a, 1: a}, {0: b, 1: b})
    assert two.diff == pytest.approx(0.1) and two.se == pytest.approx(d.se / math.sqrt(2)) and two.rounds == 2
    assert pr.paired({0: a}, {1: b}) is None  # no shared round, nothing paired


def test_rounds_that_disagree_widen_the_se_beyond_the_images():
    a = np.ones(1000, dtype=bool)
    b1, b2 = a.copy(), a.copy()
    b1[:100] = False  # round 1: a ahead by 0.10
    d = pr.paired({0: a, 1: a}, {0: b1, 1: b2})  # round 2: no difference
    images = math.sqrt((100 - 100**2 / 1000) / 1000**2) / 2
    spread = math.sqrt(((0.1 - 0.05) ** 2 + (0 - 0.05) ** 2) / 1 / 2)  # 0.05
    assert d.diff == pytest.approx(0.05) and d.se == pytest.approx(max(images, spread)) == pytest.approx(0.05)


# ---- racing on a fake objective with known means -------------------------------------------------
def fake_objective(means: list[float], n: int = 5000, noise: float = 0.1):
    """Per-image correctness: round r's images have a shared difficulty u, candidate i gets an image right when
    u < its mean, and each candidate flips a fraction `noise` of images at random (as two seeds disagree)."""

    def train(i: int, r: int) -> Training:
        u = np.random.default_rng([r, 99]).random(n)
        rng = np.random.default_rng([r, i])
        correct = (u < means[i]) ^ (rng.random(n) < noise / 2)
        return Training(i, r, float(correct.mean()), correct)

    return train


def race(means: list[float], **settings) -> list[Training]:
    c = ConfirmSection(k=len(means), strategy="race", **settings)
    objective, trainings = fake_objective(means), []
    for r in range(c.max_rounds):
        entrants = plan(r, len(means), c, trainings)
        if not entrants:
            break
        trainings += [objective(i, r) for i in entrants]
    assert complete(len(means), c, trainings)
    return trainings


def test_a_clear_loser_stops_after_round_1():
    got = race([0.52, 0.521, 0.45], budget=7)
    assert [(t.candidate, t.round) for t in got if t.candidate == 2] == [(2, 0)]  # 8 points down: stopped
    assert {t.candidate for t in got if t.round > 0} == {0, 1}
    assert len(got) == 3 + 2 + 2  # the two survivors race on to the budget


def test_a_tie_runs_to_the_budget():
    got = race([0.52, 0.52, 0.52], budget=9)
    assert len(got) == 9 and [sum(t.round == r for t in got) for r in range(3)] == [3, 3, 3]


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("budget", [4, 5, 6, 7, 8, 11])
@pytest.mark.parametrize("means", ["tie", "spread"])
def test_the_trainings_never_exceed_the_budget(k, budget, means):
    if budget < k:
        return
    m = [0.5] * k if means == "tie" else [0.5 + 0.01 * i for i in range(k)]
    got = race(m, budget=budget)
    assert len(got) <= budget and len({(t.candidate, t.round) for t in got}) == len(got)
    assert max(t.round for t in got) < ConfirmSection(k=k, strategy="race", budget=budget).max_rounds


def test_a_round_is_planned_from_finished_rounds_only():
    c = ConfirmSection(k=3, strategy="race", budget=6)
    objective = fake_objective([0.5, 0.5, 0.5])
    first = [objective(i, 0) for i in range(3)]
    assert plan(1, 3, c, first[:2]) == []  # round 1 still running: round 2 is not decided yet
    assert rounds_of(3, c, first[:2]) == [[0, 1, 2]] and not complete(3, c, first[:2])
    assert plan(1, 3, c, first) == plan(1, 3, c, list(reversed(first))) == [0, 1, 2]


def test_grid_trains_every_candidate_in_every_round():
    c = ConfirmSection(k=3, seeds=2)
    assert [plan(r, 3, c, []) for r in range(3)] == [[0, 1, 2], [0, 1, 2], []]


# ---- the fit over log10 λ -----------------------------------------------------------------------
def parabola(x, peak):
    return 0.52 - 0.01 * (x - peak) ** 2


def test_the_fit_finds_the_vertex_of_an_exact_parabola_despite_round_offsets():
    xs = [-3.0, -2.5, -2.0, -1.5]
    points = [(x, r, parabola(x, -2.4) + 0.003 * r) for r in (0, 1) for x in xs]
    f = fit_quadratic(points)
    assert f.x == pytest.approx(-2.4) and not f.clipped
    assert f.b2 == pytest.approx(-0.01) and f.offsets[1] - f.offsets[0] == pytest.approx(0.003)


@pytest.mark.parametrize("peak, clipped_to", [(-1.0, -1.5), (-4.0, -3.0)])
def test_a_vertex_outside_the_measured_range_is_clipped_to_it(peak, clipped_to):
    f = fit_quadratic([(x, 0, parabola(x, peak)) for x in (-3.0, -2.5, -2.0, -1.5)])
    assert f.x == pytest.approx(clipped_to) and f.clipped


def test_no_peak_takes_the_better_end_and_two_lambdas_are_no_fit():
    f = fit_quadratic([(x, 0, 0.5 + 0.01 * x**2) for x in (-3.0, -2.0, -1.0)])  # convex: ends -3 higher
    assert f.x == -3.0 and f.clipped
    assert fit_quadratic([(-3.0, 0, 0.5), (-2.0, 0, 0.51), (-3.0, 1, 0.5)]) is None


# ---- the choice -----------------------------------------------------------------------------------
def lam_cands(*lams) -> list[Candidate]:
    return [Candidate({"train.lambda": v}, "hand", None) for v in lams]


def test_decide_by_best_mean_one_se_and_fit():
    cands = lam_cands(1e-3, 10**-2.5, 1e-2)
    objective = fake_objective([0.50, 0.52, 0.515], noise=0.0)  # nested errors: each difference is exact
    objective_close = fake_objective([0.50, 0.52, 0.5199], noise=0.0)
    trainings = [objective(i, r) for r in (0, 1) for i in range(3)]
    c = ConfirmSection(k=3, seeds=2)
    best = decide(cands, trainings, "best-mean", c, 5000)
    assert best.chosen == {"train.lambda": 10**-2.5} and best.how == "best mean"
    by_round = [trainings[3 * r + 1].value - trainings[3 * r + 2].value for r in (0, 1)]
    assert best.scores[2].vs_best.diff == pytest.approx(sum(by_round) / 2)
    # one-se: 1e-2 is 0.5 points below, beyond a paired SE of √(0.005·0.995/5000)/√2 ≈ 0.07 points
    one_se, rule = decide(cands, trainings, "one-se", c, 5000), "the largest λ within one paired SE of the best"
    assert one_se.chosen == {"train.lambda": 10**-2.5} and one_se.how == rule
    # and where the larger λ is within one paired SE (0.01 points below the best), one-se takes it
    close = [objective_close(i, r) for r in (0, 1) for i in range(3)]
    one_se = decide(cands, close, "one-se", c, 5000)
    assert decide(cands, close, "best-mean", c, 5000).chosen == {"train.lambda": 10**-2.5}
    assert one_se.chosen == {"train.lambda": 1e-2} and one_se.how == rule
    fit = decide(cands, trainings, "fit", c, 5000)
    assert fit.how == "the fit's peak" and -2.5 < math.log10(fit.chosen["train.lambda"]) < -2.0
    assert fit.rounds == [[0, 1, 2], [0, 1, 2]]
