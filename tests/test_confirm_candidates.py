"""The confirm stage on hand-made searches: its candidates (the best distinct λ, a gap in log10, the one-SE pick,
spread placement), each round's pairs, and a candidate's score. (The stage on tiny data, its choice and train-final's
use of it: test_confirm_stage.py.)"""

from __future__ import annotations

import math

import optuna
import pytest

from pipeline.search import confirm
from pipeline.search.confirm import Candidate, Score
from pipeline.search.confirm.candidates import near
from pipeline.search.confirm.stage import pair
from pipeline.session import Session, Stores


def hand_made(session: Session, stage: str, trials: list[tuple[float, str, float | None]]) -> optuna.Study:
    study = optuna.create_study(study_name=session.study_name(stage), storage=session.storage, direction="maximize")
    for lam, state, value in trials:
        study.enqueue_trial({"lambda": lam}, user_attrs={"n_val": 5000, "stage": stage})
        t = study.ask()
        t.suggest_float("lambda", 1e-6, 1.0, log=True)
        if state == "FAIL":
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        elif state == "PRUNED":  # a pruned trial's value is its last report
            t.report(value, 1)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, value)
    return study


@pytest.fixture
def session(tmp_path) -> Session:
    return Session(Stores(storage_url=str(tmp_path / "optuna.journal")))


def lambdas(cands: list[Candidate]) -> list[float]:
    return [c.settings["train.lambda"] for c in cands]


# ---- candidates ----------------------------------------------------------------------------------
def test_candidates_are_the_best_distinct_completed_lambdas(session):
    hand_made(session, "coarse", [(1e-5, "COMPLETE", 0.45), (1e-3, "COMPLETE", 0.49), (1e-2, "PRUNED", 0.55),
                                  (3e-3, "FAIL", None), (2e-4, "COMPLETE", 0.49)])
    hand_made(session, "fine", [(1e-3, "COMPLETE", 0.50), (5e-4, "COMPLETE", 0.48), (4e-3, "COMPLETE", 0.49)])
    # 1e-3 twice (fine 0.50 first); ties at 0.49: coarse before fine, then the lower trial number.
    assert lambdas(confirm.candidates(session, 3)) == [1e-3, 2e-4, 4e-3]
    assert [c.origin for c in confirm.candidates(session, 2)] == ["fine trial 0", "coarse trial 4"]
    assert lambdas(confirm.candidates(session, 10)) == [1e-3, 2e-4, 4e-3, 5e-4, 1e-5]  # fewer than k: all


def test_candidates_keep_a_gap_in_log10_lambda(session):
    hand_made(session, "coarse", [(1e-3, "COMPLETE", 0.500), (1.2e-3, "COMPLETE", 0.499), (4e-3, "COMPLETE", 0.498),
                                  (5e-3, "COMPLETE", 0.497), (1e-4, "COMPLETE", 0.490), (1.7e-3, "COMPLETE", 0.48)])
    # Second: the one-SE pick, 5e-3 (0.497 is within 0.0071 of 0.500). 1.2e-3 is 0.08 decade from 1e-3 and
    # 4e-3 0.10 from 5e-3: each a copy of a candidate already taken.
    assert lambdas(confirm.candidates(session, 3, min_gap=0.25)) == [1e-3, 5e-3, 1e-4]
    # 1.7e-3 is 0.23 decade from 1e-3: still too near with a 0.25 gap, far enough with 0.2.
    assert lambdas(confirm.candidates(session, 10, min_gap=0.25)) == [1e-3, 5e-3, 1e-4]
    assert lambdas(confirm.candidates(session, 10, min_gap=0.2)) == [1e-3, 5e-3, 1e-4, 1.7e-3]
    assert lambdas(confirm.candidates(session, 3, min_gap=0.0)) == [1e-3, 5e-3, 1.2e-3]


def test_the_one_se_pick_is_always_the_second_candidate(session):
    """The search ranks small λ first by noise; the strongest λ still tied with the best must be confirmed."""
    hand_made(session, "coarse", [(1e-4, "COMPLETE", 0.500), (2e-4, "COMPLETE", 0.499), (3e-4, "COMPLETE", 0.498),
                                  (2e-2, "COMPLETE", 0.480)])
    hand_made(session, "fine", [(6e-3, "COMPLETE", 0.494), (8e-3, "COMPLETE", 0.490)])  # 8e-3: 0.010 below
    assert lambdas(confirm.candidates(session, 3)) == [1e-4, 6e-3, 2e-4]
    assert [c.origin for c in confirm.candidates(session, 2)] == ["coarse trial 0", "fine trial 0"]
    assert lambdas(confirm.candidates(session, 1)) == [1e-4]


def test_spread_places_k_lambdas_evenly_in_log10_below_the_largest_tied_lambda(session, tmp_path):
    from pipeline.search.confirm.candidates import choose_candidates
    from pipeline.settings.config import ConfirmSection

    hand_made(session, "coarse", [(1e-5, "COMPLETE", 0.500), (1e-2, "COMPLETE", 0.496), (3e-2, "COMPLETE", 0.480),
                                  (1e-3, "COMPLETE", 0.499)])  # tied within 0.0071: 1e-5 .. 1e-2
    c = ConfirmSection(placement="spread", k=4, span=1.0, reach=0.15)
    got = [math.log10(v) for v in lambdas(choose_candidates(session, c))]
    assert got == pytest.approx([-2.85, -2.85 + 1 / 3, -2.85 + 2 / 3, -1.85])
    # A tie narrower than span: its own width, but never less than min_gap between candidates.
    narrow = ConfirmSection(placement="spread", k=3, span=1.0, reach=0.0, min_gap=0.25)
    other = Session(Stores(storage_url=str(tmp_path / "narrow.journal")))
    hand_made(other, "coarse", [(8e-3, "COMPLETE", 0.501), (1e-2, "COMPLETE", 0.499), (1e-4, "COMPLETE", 0.48)])
    assert [math.log10(v) for v in lambdas(choose_candidates(other, narrow))] == pytest.approx([-2.5, -2.25, -2.0])


def test_other_settings_make_a_candidate_distinct_whatever_the_gap():
    a = {"train.lambda": 1e-3, "model.hidden": 50, "train.eta_max": 0.1}
    assert near(a, a | {"train.lambda": 1.1e-3}, 0.25)
    assert not near(a, a | {"train.lambda": 1.1e-3, "model.hidden": 100}, 0.25)
    assert not near(a, a | {"train.eta_max": 0.05}, 0.25)  # 0.30 decade apart
    assert not near(a, a | {"train.lambda": 1.1e-3}, 0.0)


def test_each_round_validates_on_its_own_block_shared_by_every_candidate():
    cands = [cand(1e-3), cand(4e-3), cand(1e-4)]
    got = [pair(c, i, r, 7, folds=True) for r in (0, 1) for i, c in enumerate(cands)]
    assert [(p["lambda"], p["seed"], p["val_fold"], a["round"], a["candidate"]) for p, a in got] == [
        (1e-3, 7, 0, 0, 0), (4e-3, 7, 0, 0, 1), (1e-4, 7, 0, 0, 2), (1e-3, 8, 1, 1, 0), (4e-3, 8, 1, 1, 1),
        (1e-4, 8, 1, 1, 2)]
    assert "val_fold" not in pair(cands[0], 0, 1, 7, folds=False)[0]


def test_fewer_distinct_lambdas_than_k(session):
    hand_made(session, "coarse", [(1e-3, "COMPLETE", 0.5), (1e-3, "COMPLETE", 0.4), (1e-1, "PRUNED", 0.3)])
    assert lambdas(confirm.candidates(session, 3)) == [1e-3]


# ---- scores and the choice ----------------------------------------------------------------------
def cand(lam: float) -> Candidate:
    return Candidate({"train.lambda": lam}, "hand", 0.5)


def test_standard_error_combines_seeds_and_the_validation_sample():
    s = Score(cand(1e-3), [0.52, 0.50], 5000)
    seeds = 0.0002 / 2  # sample variance of (0.52, 0.50) is 0.0002, over 2 seeds
    binomial = 0.51 * 0.49 / 5000
    assert s.mean == pytest.approx(0.51) and s.se == pytest.approx(math.sqrt(seeds + binomial))
    assert Score(cand(1e-3), [0.5], 5000).se == pytest.approx(math.sqrt(0.25 / 5000))  # one seed: binomial only
    # Each seed on its own block of 5,000: the sampling noise is that of 10,000 images.
    assert Score(cand(1e-3), [0.52, 0.50], 5000, folds=2).se == pytest.approx(math.sqrt(seeds + 0.51 * 0.49 / 10000))
