"""Does the search budget rank the candidates as the confirm stage's trainings do? Measured on every confirm.

Each candidate that is a search trial has its search value (the search's budget); round 1 of the confirm stage
trains every candidate (the confirm file's schedule, the final's; with halving, round 1's shorter one). Spearman's
ρ between the two, over the candidates, says whether the cheap budget ranks like the longer one; with halving,
also round 1 against the last round over the candidates that reached it. Fewer than three pairs: not measured.
"""

from __future__ import annotations

from pipeline.search.confirm.fidelity import RankAgreement, correlate
from pipeline.search.confirm.racing import Decision


def value_in(s, r: int) -> float | None:
    return s.values[s.rounds.index(r)] if r in s.rounds else None


def search_agreement(d: Decision) -> RankAgreement | None:
    """ρ of the candidates' search values against their round-1 values; None with fewer than 3 such pairs."""
    pairs = [(s.candidate.search_value, v) for s in d.scores
             if s.candidate.search_value is not None and (v := value_in(s, 0)) is not None]
    return correlate(*zip(*pairs, strict=True)) if len(pairs) >= 3 else None


def rounds_agreement(d: Decision) -> RankAgreement | None:
    """ρ of round 1 against the last round, over the candidates trained in both (halving's budgets)."""
    last = len(d.rounds) - 1
    pairs = [(a, b) for s in d.scores if last > 0 and (a := value_in(s, 0)) is not None
             and (b := value_in(s, last)) is not None]
    return correlate(*zip(*pairs, strict=True)) if len(pairs) >= 3 else None


def as_attr(r: RankAgreement, budget: str) -> dict:
    """What the confirm study records (JSON), for `hpsearch report`."""
    return {"rho": r.rho, "n": r.n, "fisher": r.fisher, "bootstrap": r.bootstrap, "low": r.low, "budget": budget,
            "line": r.line("search budget", budget)}


def lines(attr: dict | None) -> list[str]:
    """The agreement's line, and a warning line when ρ is low; [] when it was not measured."""
    if not attr:
        return []
    out = [attr["line"]]
    if attr["low"]:
        out.append(f"warning: the search budget does not rank like {attr['budget']} (ρ {attr['rho']:+.2f} < 0.5): "
                   "its best trials are not evidence for the final; trust the confirm stage, or search at a "
                   "budget shown to rank like the final (bench/bench_fidelity.py)")
    return out


def budget_label(c) -> str:
    """What round 1 trained: the confirm file's schedule, or with halving its first, shorter rung."""
    if c.strategy == "halving":
        return f"the confirm stage's round 1 ({c.first_cycles} of {c.last_cycles} cycles)"
    return "the confirm stage's schedule"


def record(d: Decision, c) -> dict | None:
    """The study attr of the search's agreement with round 1 (None: not measured)."""
    r = search_agreement(d)
    return None if r is None else as_attr(r, budget_label(c))
