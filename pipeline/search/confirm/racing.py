"""Rounds, scores and the choice, computed from the stored trainings only.

Round r trains its candidates with seed train.seed + r, validated on holdout block r (every candidate of a round
on the same images, so their differences are paired). "grid" trains every candidate in each of confirm.seeds
rounds. "race" (as SMAC's intensification or F-race) trains every candidate in round 1; after each round a
candidate stops when the best beats it by more than z paired standard errors, and the survivors, best first,
train again while the budget holds at least two of them. What a round trains depends only on the finished
rounds before it, so every worker that starts a round enqueues the same pairs, and a rerun continues there.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from pipeline.search.confirm import halving
from pipeline.search.confirm.candidates import KEY, Candidate
from pipeline.search.confirm.fit import Fit, fit_quadratic
from pipeline.search.confirm.multifit import MultiFit, fit_separable, log_dims
from pipeline.search.confirm.paired import Paired, paired
from pipeline.search.results import standard_error
from pipeline.settings.config import ConfirmSection


@dataclass(frozen=True)
class Training:
    candidate: int  # index into the stage's candidates
    round: int
    value: float  # final validation accuracy
    correct: np.ndarray | None  # per-image correctness on the round's block (None: recorded before it was)


@dataclass
class Score:
    candidate: Candidate
    values: list[float]  # final validation accuracy per round
    n_val: int  # validation images of one round
    folds: int = 1  # distinct validation blocks among the rounds
    vs_best: Paired | None = None  # paired difference from the best candidate (None for the best itself)
    rounds: list[int] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def se(self) -> float:
        """sqrt(s²/r + a(1−a)/(n_val·folds)), the candidate's own noise; comparisons use vs_best instead."""
        seeds = statistics.variance(self.values) / len(self.values) if len(self.values) > 1 else 0.0
        return math.sqrt(seeds + standard_error(self.mean, self.n_val * self.folds) ** 2)


def by_candidate(trainings: list[Training]) -> dict[int, dict[int, Training]]:
    out: dict[int, dict[int, Training]] = {}
    for t in trainings:
        out.setdefault(t.candidate, {})[t.round] = t
    return out


def compare(a: dict[int, Training], b: dict[int, Training]) -> Paired | None:
    """a − b over their shared rounds: per image when both recorded it, else from the accuracies alone."""
    shared = a.keys() & b.keys()
    if all(a[r].correct is not None and b[r].correct is not None for r in shared):
        return paired({r: a[r].correct for r in shared}, {r: b[r].correct for r in shared})
    diffs = [a[r].value - b[r].value for r in sorted(shared)]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return Paired(statistics.fmean(diffs), se, len(diffs))


def leader(entrants: list[int], table: dict[int, dict[int, Training]]) -> int:
    """The entrant with the highest mean (they share their rounds); ties: the earlier candidate."""
    return max(entrants, key=lambda c: (statistics.fmean(t.value for t in table[c].values()), -c))


def plan(r: int, k: int, c: ConfirmSection, trainings: list[Training]) -> list[int]:
    """The candidates round r trains, from the finished rounds before it; [] when the stage is done."""
    if c.strategy == "halving":
        return halving.plan(r, k, c, trainings)
    return plans(r, k, c, trainings)[r]


def plans(r: int, k: int, c: ConfirmSection, trainings: list[Training]) -> list[list[int]]:
    """Rounds 0..r's candidates, each computed once from the rounds before it (a round's plan depends on every
    earlier round's: recomputing them per round is exponential in r)."""
    if c.strategy == "halving":  # a few rungs: each round from the ones before it, in halving's own rule
        return [halving.plan(q, k, c, trainings) for q in range(r + 1)]
    out = [list(range(k))]
    for q in range(1, r + 1):
        out.append(_next_round(q, c, [t for t in trainings if t.round < q], out))
    return out


def _next_round(r: int, c: ConfirmSection, trainings: list[Training], earlier: list[list[int]]) -> list[int]:
    """Round r's candidates given rounds 0..r−1's and the trainings before round r."""
    k = len(earlier[0])
    if c.strategy == "grid":
        return list(range(k)) if r < c.seeds else []
    entrants = earlier[r - 1]
    if len(entrants) < 2 or not done(r - 1, entrants, trainings):
        return []
    table = valid(trainings)
    entrants = [i for i in entrants if r - 1 in table.get(i, {})]  # a diverged one stops
    if not entrants:
        return []
    best = leader(entrants, table)
    alive = [i for i in entrants if i == best or not clear_loser(compare(table[best], table[i]), c.z)]
    alive.sort(key=lambda i: (-statistics.fmean(t.value for t in table[i].values()), i))
    used = sum(len(x) for x in earlier[:r])
    take = alive[: c.budget - used]
    return take if len(alive) > 1 and len(take) >= 2 else []


def done(r: int, entrants: list[int], trainings: list[Training]) -> bool:
    finished = {(t.candidate, t.round) for t in trainings}
    return all((i, r) in finished for i in entrants)


def valid(trainings: list[Training]) -> dict[int, dict[int, Training]]:
    """By candidate and round, without diverged trainings."""
    return by_candidate([t for t in trainings if not math.isnan(t.value)])


def complete(k: int, c: ConfirmSection, trainings: list[Training]) -> bool:
    """Every round the stored results call for has finished."""
    rounds = rounds_of(k, c, trainings)
    return bool(rounds) and done(len(rounds) - 1, rounds[-1], trainings) and not plan(len(rounds), k, c, trainings)


def clear_loser(d: Paired | None, z: float) -> bool:
    return d is not None and d.diff > 0 and d.z() > z


def rounds_of(k: int, c: ConfirmSection, trainings: list[Training]) -> list[list[int]]:
    """The rounds as far as the stored trainings decide them (the last may still be running)."""
    out = []
    every = plans(c.max_rounds - 1, k, c, trainings) if c.max_rounds else []
    for r in range(c.max_rounds):
        entrants = every[r]
        if not entrants:
            break
        out.append(entrants)
        if not done(r, entrants, trainings):
            break
    return out


@dataclass
class Decision:
    scores: list[Score]
    best: Score | None  # the best mean among the last round's entrants
    chosen: dict | None  # the settings train-final takes
    how: str  # "best mean", "one-se", "fit peak", "fit peak, clipped to the measured range"
    fit: Fit | None = None
    rounds: list[list[int]] = field(default_factory=list)
    multifit: MultiFit | None = None  # the fit over several log-scale settings, when it chose


def decide(cands: list[Candidate], trainings: list[Training], rule: str, c: ConfirmSection, n_val: int) -> Decision:
    rounds = rounds_of(len(cands), c, trainings)
    table = valid(trainings)
    scored = {i: Score(cands[i], [t.value for _, t in sorted(table[i].items())], n_val, len(table[i]),
                       rounds=sorted(table[i])) for i in sorted(table)}
    if not scored:
        return Decision([], None, None, "", rounds=rounds)
    last = [i for i in rounds[-1] if len(rounds) - 1 in table.get(i, {})] if rounds else []
    last = last or list(scored)
    judge = table  # halving: the last round alone decides, at its (the final's) budget
    if c.strategy == "halving":
        q = max(r for i in last for r in table[i])
        judge = {i: {q: table[i][q]} for i in last if q in table[i]} or table
    best = leader(list(judge), judge) if judge is not table else leader(last, table)
    for i, s in scored.items():
        by = judge if i in judge else table  # halving: the last round's entrants compared there alone
        s.vs_best = None if i == best else compare(by[best], by[i])
    out = Decision(list(scored.values()), scored[best], scored[best].candidate.settings, "best mean", rounds=rounds)
    dims = log_dims([x.settings for x in cands])
    if rule == "one-se" and KEY in out.chosen:
        tied = [i for i in last if i == best or (d := scored[i].vs_best) is not None and d.diff <= d.se]
        pick = max(tied, key=lambda i: cands[i].settings[KEY])
        out.chosen, out.how = cands[pick].settings, "the largest λ within one paired SE of the best"
    elif rule == "fit" and KEY in out.chosen and set(dims) <= {KEY}:  # λ alone: the pooled quadratic in log10 λ
        out.fit = fit_quadratic([(math.log10(cands[i].settings[KEY]), r, t.value)
                                 for i, by_round in table.items() for r, t in by_round.items()])
        if out.fit is not None:
            out.chosen = out.chosen | {KEY: 10**out.fit.x}
            out.how = "the fit's peak" + (", clipped to the measured range" if out.fit.clipped else "")
    elif rule == "fit":
        fitted = fit_separable([(cands[i].settings, r, t.value) for i, by_round in judge.items()
                                for r, t in by_round.items()], dims)
        if isinstance(fitted, str):
            out.how = f"best mean (no fit: {fitted})"
        else:
            out.multifit, out.chosen = fitted, out.chosen | fitted.values
            out.how = f"the peak of a separable quadratic in log10 of {', '.join(fitted.dims)}" + (
                f", clipped to the measured range in {', '.join(fitted.clipped)}" if fitted.clipped else "")
    return out
