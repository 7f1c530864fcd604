"""Which settings the confirm stage trains: the searches' top distinct trials, or k λ spread over their tie.

The searches (n_s 200, batch 450) cannot tell λ apart: every λ up to about 1e-2 lands within one standard error
of the best, so their top trials are wherever the noise put them. "top" keeps the report's view (the best, the
one-SE pick, the next best, at least min_gap decades apart); "spread" places the k candidates evenly in log10 λ
over the top of the tie instead, from `span` decades below its largest λ up to that λ, moved up by `reach`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.names import LAMBDA, SEARCH_STAGES
from pipeline.search.results import best_trial, completed, n_val_of, standard_error, trial_settings
from pipeline.session import Session
from pipeline.settings.config import ConfirmSection

KEY = "train.lambda"


@dataclass
class Candidate:
    settings: dict  # setting key -> value, without the seed
    origin: str  # "coarse trial 3", or "spread 2 of 3"
    search_value: float | None  # its validation accuracy in the search (None: placed between trials)


def choose_candidates(session: Session, c: ConfirmSection) -> list[Candidate]:
    ranked = ranked_trials(session)
    if c.placement == "spread" and ranked and all(LAMBDA in t.params for _, t in ranked):
        return spread(ranked, c.k, c.span, c.reach, c.min_gap)
    return candidates(session, c.k, c.min_gap)


def ranked_trials(session: Session) -> list:
    """(stage, trial) over the completed coarse and fine trials, best first (ties: coarse, then lower number)."""
    ranked = []
    for order, stage in enumerate(SEARCH_STAGES):
        study = session.load_study(stage)
        ranked += [(-t.value, order, t.number, stage, t) for t in (completed(study) if study else [])]
    return [(stage, t) for *_, stage, t in sorted(ranked, key=lambda r: r[:3])]


def candidates(session: Session, k: int, min_gap: float = 0.0) -> list[Candidate]:
    """The k best distinct settings over the completed coarse and fine trials; fewer when the searches hold
    fewer. When λ is searched, the second is the one-SE rule's pick (the largest λ within one standard error
    of the best), unless it is the best itself. Distinct: another value of some setting, where positive floats
    (λ, η) count as the same value when their log10 differ by less than min_gap decades."""
    ranked = ranked_trials(session)
    if ranked and all(LAMBDA in t.params for _, t in ranked):
        pick = trial_settings(best_trial(session, "one-se"))
        at = next((i for i, (_, t) in enumerate(ranked) if trial_settings(t) == pick), 0)
        ranked.insert(min(at, 1), ranked.pop(at))
    out: list[Candidate] = []
    for stage, t in ranked:
        settings = trial_settings(t)
        if not any(near(settings, c.settings, min_gap) for c in out):
            out.append(Candidate(settings, f"{stage} trial {t.number}", t.value))
    if not out:
        raise UserError("no completed coarse or fine trial to confirm: run `hpsearch search coarse` (and fine) first")
    return out[:k]


def tie_range(ranked: list) -> tuple[float, float]:
    """(smallest, largest) λ among the trials within one binomial SE of the best: what the searches cannot
    tell apart."""
    best = ranked[0][1]
    se = standard_error(best.value, n_val_of(best))
    tied = [t.params[LAMBDA] for _, t in ranked if t.value >= best.value - se]
    return min(tied), max(tied)


def spread(ranked: list, k: int, span: float, reach: float, min_gap: float) -> list[Candidate]:
    """k λ evenly in log10 over [largest tied λ / 10^span, largest tied λ] (not below the smallest tied λ, but
    at least min_gap apart), moved up by reach decades; the other settings are the best trial's."""
    lo, hi = (math.log10(v) for v in tie_range(ranked))
    top = hi + reach
    width = max(min(span, hi - lo), min_gap * (k - 1))
    xs = [top] if k == 1 else [top - width + i * width / (k - 1) for i in range(k)]
    base = trial_settings(ranked[0][1])
    where = f"over the searches' tie {10 ** lo:.2g}..{10 ** hi:.2g}"
    return [Candidate(base | {KEY: 10**x}, f"spread {i + 1} of {k} {where}", None) for i, x in enumerate(xs)]


def near(a: dict, b: dict, gap: float) -> bool:
    """The same settings, up to less than gap decades in every positive float."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, float) and isinstance(y, float) and x > 0 and y > 0:
            if abs(math.log10(x) - math.log10(y)) >= max(gap, 1e-12):
                return False
        elif x != y:
            return False
    return True
