"""pipeline.search.stages.fine_space on hand-made coarse studies: the fine stage's λ bounds are the two best completed
trials' λ, widened in log10; pruned and failed trials do not count, and a tie goes to the lower trial number. (The
fine stage end to end: test_pipeline_end_to_end.py.)"""

from __future__ import annotations

import optuna
import pytest


def fine_bounds_of(tmp_path, trials: list[tuple[float, str, float | None]], widen: float = 0.25):
    """pipeline.search.stages.fine_space over a hand-made coarse study: (λ, state, value) per trial, in order; the
    λ bounds it derives and where they came from."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from pipeline.search.stages import fine_space
    from pipeline.session import Session, Stores
    from pipeline.settings import config

    session = Session(Stores(storage_url=str(tmp_path / "optuna.journal")))
    coarse = optuna.create_study(study_name="cifar10-lambda-coarse", storage=session.storage, direction="maximize")
    dist = {"lambda": FloatDistribution(1e-5, 1e-1, log=True)}
    for lam, state, value in trials:
        reports = {40: value} if value is not None else {}  # a pruned trial's value is its last report
        coarse.add_trial(create_trial(params={"lambda": lam}, distributions=dist, state=TrialState[state],
                                      value=value, intermediate_values=reports))
    coarse.set_user_attr("n_trials", sum(state in ("COMPLETE", "PRUNED") for _, state, _ in trials))
    fine, source = fine_space(session, config.load("fine", overrides={"fine.widen": widen}))
    return (fine["train.lambda"].low, fine["train.lambda"].high), source


def test_fine_bounds_take_the_two_best_completed_trials_and_skip_pruned_and_failed_ones(tmp_path):
    bounds, source = fine_bounds_of(tmp_path, [
        (3e-5, "COMPLETE", 0.40),
        (5e-2, "PRUNED", 0.60),  # the highest value, but pruned: not a result
        (2e-2, "FAIL", None),
        (1e-3, "COMPLETE", 0.45),  # the best
        (1e-2, "COMPLETE", 0.42),  # tied second: the lower trial number wins
        (1e-4, "COMPLETE", 0.42),
    ])
    assert bounds == pytest.approx((5.6234133e-4, 1.7782794e-2))  # 1e-3 / 10**0.25, 1e-2 * 10**0.25
    assert source == {"source_study": "cifar10-lambda-coarse", "fine_rule": "top2", "source_trials": "3,4",
                      "source_lambdas": "0.001,0.01", "widen_log10": 0.25}


def test_fine_bounds_break_a_tie_for_the_best_by_the_lower_trial_number(tmp_path):
    bounds, source = fine_bounds_of(tmp_path, [
        (1e-5, "COMPLETE", 0.30),
        (1e-2, "COMPLETE", 0.50),
        (1e-4, "COMPLETE", 0.50),
        (1e-3, "COMPLETE", 0.50),
    ], widen=0.5)
    assert bounds == pytest.approx((3.1622777e-5, 3.1622777e-2))  # 1e-4 / 10**0.5, 1e-2 * 10**0.5
    assert source["source_trials"] == "1,2"


def test_a_coarse_stage_that_pruning_left_with_one_result_refines_around_it(tmp_path):
    """ASHA may stop all trials but one (the wide study's 12 coarse trials ended 1 COMPLETE, 11 PRUNED): the fine
    stage refines ±widen around that one instead of refusing."""
    bounds, source = fine_bounds_of(tmp_path, [
        (1e-3, "PRUNED", 0.40),
        (1e-2, "COMPLETE", 0.45),
        (1e-4, "PRUNED", 0.41),
    ], widen=0.5)
    assert bounds == pytest.approx((3.1622777e-3, 3.1622777e-2))  # 1e-2 / 10**0.5, 1e-2 * 10**0.5
    assert source["source_trials"] == "1"


def test_a_coarse_stage_with_no_result_is_one_line_for_the_fine_stage(tmp_path):
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="no completed trial"):
        fine_bounds_of(tmp_path, [(1e-3, "PRUNED", 0.40), (1e-2, "FAIL", None)])
