"""bench/search_report.py's arithmetic (issue 29): regret by the sweep, equal compute, paired differences."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import search_report as sr  # noqa: E402
from bench_search import best, prefix  # noqa: E402


def trial(number, lam, value, compute=1.0):
    return {"number": number, "lambda": lam, "value": value, "state": "COMPLETE" if value else "PRUNED",
            "seconds": 5.0, "compute": compute}


def test_regret_is_zero_at_the_sweeps_best_and_interpolated_in_log10_between_its_points():
    assert sr.regret(5e-3) == 0
    halfway = 10 ** ((math.log10(3.5e-3) + math.log10(5e-3)) / 2)
    assert sr.regret(halfway) == pytest.approx(52.88 - (52.50 + 52.88) / 2)


def test_regret_below_the_sweep_is_its_lowest_points_and_above_it_keeps_falling():
    assert sr.regret(1e-5) == pytest.approx(52.88 - 51.22)
    assert sr.regret(0.1) > sr.regret(3e-2) + 3  # the 1e-2 → 3e-2 slope, extended half a decade


def test_prefix_counts_a_pruned_trials_compute_and_stops_within_the_budget():
    rows = [trial(0, 1e-3, 0.49), trial(1, 1e-2, None, 0.67), trial(2, 5e-3, 0.50), trial(3, 5e-3, 0.51)]
    assert [r["number"] for r in prefix(rows, 2.7)] == [0, 1, 2]
    assert [r["number"] for r in prefix(rows, 2.6)] == [0, 1]


def test_best_skips_pruned_trials_and_takes_the_earlier_of_a_tie():
    rows = [trial(0, 1e-3, 0.49), trial(1, 1e-2, None), trial(2, 5e-3, 0.49)]
    assert best(rows)["number"] == 0


def docs_for(k, default_compute, tpe_rows, shift=0.0):
    confirm = [trial(i, 5e-3, 0.52, 2.0) for i in range(2)]
    return {
        ("default", k): {"lambda": 5e-3 * (1 + shift), "compute": default_compute, "wall": 10,
                         "trials": {"coarse": [trial(0, 1e-3, 0.49)], "fine": [], "confirm": confirm}},
        ("report", k): {"lambda": 1e-3, "compute": default_compute - 1, "wall": 8},
        ("tpe", k): {"compute": 9, "wall": 9, "trials": {"coarse": tpe_rows}},
        ("random", k): {"compute": 9, "wall": 9, "trials": {"coarse": tpe_rows}},
        ("tpe-confirm", k): {"lambda": 2.5e-3, "compute": default_compute, "wall": 9,
                             "trials": {"coarse": tpe_rows[:1], "confirm": confirm}},
    }


def test_a_study_is_judged_by_its_best_trial_within_defaults_compute_not_by_a_later_better_one():
    rows = [trial(0, 1e-3, 0.49), trial(1, 1e-4, 0.50), trial(2, 5e-3, 0.55)]
    table = {(r["method"], r["k"]): r for r in sr.rows_of(docs_for(1, 2.0, rows))}
    assert table[("tpe", 1)]["lambda"] == 1e-4 and table[("tpe", 1)]["compute"] == 2.0
    assert table[("tpe@report", 1)]["lambda"] == 1e-3  # at report's compute (1.0): the first trial alone
    assert table[("tpe", 1)]["wall"] == 10.0 and table[("report", 1)]["wall"] == 5.0  # the trainings' seconds


def test_a_k_missing_any_method_is_left_out_of_the_comparison():
    docs = docs_for(1, 5.0, [trial(0, 1e-3, 0.49)]) | docs_for(2, 5.0, [trial(0, 1e-3, 0.49)])
    del docs[("random", 2)]
    assert {r["k"] for r in sr.rows_of(docs)} == {1}


def test_the_paired_difference_has_the_spread_of_the_differences_not_of_the_methods():
    rows = []
    for k, level in ((1, 0.1), (2, 0.9), (3, 0.5)):  # both methods swing by k alike; one is 0.2 worse each time
        rows += [{"method": "default", "k": k, "compute": 1, "wall": 1, "regret_sweep": level, "final_test": None},
                 {"method": "report", "k": k, "compute": 1, "wall": 1, "regret_sweep": level + 0.2,
                  "final_test": None}]
    line = sr.table(rows).splitlines()[3]
    assert "0.70 ± 0.23" in line and "+0.20 ± 0.00" in line
