"""What the final trains with, and whether a final with those settings already finished.

The λ comes from --lambda, else the confirm stage's choice, else the searched trial the settings' rule picks;
every worker decides from the same settled studies, so they all claim the same final.
"""

from __future__ import annotations

from pipeline.errors import UserError
from pipeline.names import DIGEST_ATTR, SEARCH_STAGES
from pipeline.search.confirm import chosen_settings
from pipeline.search.results import best_trial, trial_settings
from pipeline.search.stages import settled_study
from pipeline.session import Session
from pipeline.settings.config import Settings


def final_settings(session: Session, cfg: Settings, lam: float | None, confirmed: bool = True) -> tuple[dict, str]:
    """What the final trains with, and a line saying where it came from: --lambda if given, else the confirm
    stage's choice when that stage exists (and `confirmed`), else the searched trial cfg's rule picks."""
    if lam is not None:
        if lam < 0:
            raise UserError(f"--lambda must be ≥ 0; got {lam}")
        return {"train.lambda": lam}, "--lambda"
    if confirmed and (choice := chosen_settings(session)) is not None:
        return choice
    for stage in SEARCH_STAGES:  # every worker promotes from the same settled trials
        settled_study(session, stage)
    best = best_trial(session, cfg.search.select)
    if best is None:
        raise UserError("no finished trial in the coarse or fine study: run `hpsearch search coarse` first, "
                        "or pass --lambda")
    top = best_trial(session, "best")
    # a database storage loads a trial afresh each time: compare the trials, not the objects
    why = "best" if same_trial(best, top) else f"largest λ within one standard error of the best ({top.value:.4f})"
    stage = best.user_attrs.get("stage", "search")
    return trial_settings(best), f"{stage} trial {best.number}, val acc {best.value:.4f}: {why}"


def same_trial(a, b) -> bool:
    return (a.user_attrs.get("stage"), a.number) == (b.user_attrs.get("stage"), b.number)


def previous_final(session: Session, cfg: Settings):
    """A finished final run with the same settings (λ included), so `pipeline` reruns don't retrain."""
    runs = session.tracker.find_runs(role="final", **{DIGEST_ATTR: cfg.digest()})
    return next((r for r in reversed(runs) if r.info.status == "FINISHED"), None)
