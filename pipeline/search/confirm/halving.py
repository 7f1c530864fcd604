"""Successive halving across budgets: round 1 trains every candidate for confirm.first_cycles cycles, each later
round trains the better half (at least two) for twice as many cycles, the last for train.cycles, the final's.

Cheap rounds rank many candidates, the last round ranks the best few at the final's budget, so the choice rests
on final-budget trainings (what the search budget cannot give: docs/wide.md), at a fraction of the cost of all
k there: 4 candidates at 2 cycles and the 2 best at 4 cost 4 trainings at 4 cycles instead of 8. Within a round
every candidate shares the seed and the validation block, so a candidate stops early when the round's best
beats it by more than z paired standard errors (racing.clear_loser); the others go on best first. The cost,
counted in trainings of the last round's length, never exceeds confirm.budget: a round that the budget cannot
pay for at least two candidates is not trained, and the stage decides on the rounds before it.
"""

from __future__ import annotations

import math

from pipeline.settings.config import ConfirmSection


def cycles(c: ConfirmSection, r: int) -> int:
    """Round r's training length in cycles: first_cycles · 2^r."""
    return c.first_cycles * 2**r


def cost(c: ConfirmSection, r: int) -> float:
    """One round-r training, in trainings of the last round's length."""
    return cycles(c, r) / c.last_cycles


def spent(c: ConfirmSection, rounds: list[list[int]]) -> float:
    """What the rounds' trainings cost, in trainings of the last round's length."""
    return sum(len(entrants) * cost(c, r) for r, entrants in enumerate(rounds))


def plan(r: int, k: int, c: ConfirmSection, trainings: list) -> list[int]:
    """The candidates round r trains, from the finished rounds before it; [] when the stage is done."""
    from pipeline.search.confirm import racing

    if r >= c.rungs:
        return []
    if r == 0:
        return list(range(k))
    before = [plan(q, k, c, trainings) for q in range(r)]
    entrants = before[-1]
    trainings = [t for t in trainings if t.round == r - 1]  # ranked on the round before alone: its budget
    if len(entrants) < 2 or not racing.done(r - 1, entrants, trainings):
        return []
    table = racing.valid(trainings)
    entrants = [i for i in entrants if r - 1 in table.get(i, {})]  # a diverged one stops
    if not entrants:
        return []
    best = racing.leader(entrants, table)
    alive = [i for i in entrants if i == best or not racing.clear_loser(racing.compare(table[best], table[i]), c.z)]
    alive.sort(key=lambda i: (-table[i][r - 1].value, i))
    affordable = math.floor((c.budget - spent(c, before)) / cost(c, r) + 1e-9)
    take = alive[: min(max(2, math.ceil(len(entrants) / 2)), affordable)]
    return take if len(take) >= 2 else []


def check(c: ConfirmSection, train_cycles: int) -> None:
    """The last round trains for train.cycles (the final's schedule): fail before anything is recorded."""
    from pipeline.errors import ConfigError

    if c.strategy == "halving" and c.last_cycles != train_cycles:
        raise ConfigError(f"confirm.strategy = \"halving\": round {c.rungs} trains confirm.first_cycles "
                          f"{c.first_cycles} · 2^{c.rungs - 1} = {c.last_cycles} cycles, which must be train.cycles "
                          f"({train_cycles}), the final's schedule")


def round_settings(c: ConfirmSection, r: int) -> dict:
    """What round r changes in the confirm file's settings: its length, with halving."""
    return {"train.cycles": cycles(c, r)} if c.strategy == "halving" else {}


def columns(c: ConfirmSection) -> dict:
    """The values train.cycles takes over the rounds, for the stage's Optuna distributions."""
    return {"train.cycles": [c.first_cycles, c.last_cycles]} if c.strategy == "halving" else {}
