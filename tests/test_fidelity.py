"""Spearman's rank correlation of a cheap budget with the final's (pipeline.search.confirm.fidelity), on hand-made
pairs of trial lists."""

from __future__ import annotations

import math

import pytest

from pipeline.search.confirm.fidelity import correlate, fisher_interval, spearman

# Five settings: their search values (cheap budget) and final-budget values. Ranks 2 4 3 5 1 against 4 3 5 2 1:
# Σd² = 4 + 1 + 4 + 9 + 0 = 18, ρ = 1 − 6·18 / (5·24) = 0.1.
SEARCH = [0.60, 0.62, 0.61, 0.63, 0.59]
FINAL = [0.66, 0.65, 0.67, 0.64, 0.63]


def test_spearman_of_a_hand_made_pair_of_trial_lists():
    assert spearman(SEARCH, FINAL) == pytest.approx(0.1)
    assert spearman(SEARCH, SEARCH) == pytest.approx(1.0)
    assert spearman(SEARCH, [-v for v in SEARCH]) == pytest.approx(-1.0)
    # ties share their average rank: ranks 1.5 1.5 3 4 against 1 2 3 4 -> Pearson r of the ranks
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # no spread: no ranking to agree with


def test_the_uncertainty_by_fisher_z_and_bootstrap():
    r = correlate(SEARCH, FINAL)
    assert r.n == 5
    half = 1.6448536269514722 * 1.06 / math.sqrt(2)  # SE 1.06/√(n − 3), two-sided 90 %
    assert r.fisher == pytest.approx((math.tanh(math.atanh(0.1) - half), math.tanh(math.atanh(0.1) + half)))
    assert r.fisher == pytest.approx((-0.8119, 0.8700), abs=1e-4)
    lo, hi = r.bootstrap
    assert -1 <= lo < 0.1 < hi <= 1
    assert fisher_interval(0.9, 3) is None  # n ≤ 3: no interval
    assert r.low and "ρ = +0.10 over 5 settings" in r.line()
    strong = correlate([1, 2, 3, 4, 5, 6, 7, 8], [1.1, 2.3, 2.9, 4.2, 5.1, 5.8, 7.4, 8.0])
    assert strong.rho == pytest.approx(1.0) and not strong.low
    with pytest.raises(ValueError, match="one value per setting"):
        correlate([1, 2], [1])


def test_a_low_agreement_gets_a_warning_line_and_a_good_one_none():
    from pipeline.search.confirm.agreement import as_attr, lines

    low = lines(as_attr(correlate(SEARCH, FINAL), "the confirm stage's schedule"))
    assert low[0].startswith("rank agreement of the search budget with the confirm stage's schedule: "
                             "Spearman ρ = +0.10")
    assert low[1].startswith("warning: the search budget does not rank like the confirm stage's schedule (ρ +0.10")
    good = lines(as_attr(correlate([1, 2, 3, 4, 5], [2, 3, 4, 5, 7]), "the final budget"))
    assert len(good) == 1 and "ρ = +1.00 over 5 settings" in good[0]
    assert lines(None) == []
