"""Does a cheaper budget rank settings like the final's? Spearman's rank correlation with its uncertainty.

A search trains every trial at a short budget and the final trains the winner at a long one; the search is
only as good as the agreement of the two rankings (short-horizon bias, Wu et al. 2018, is the case where it
fails). Given the same settings' values at both budgets (the confirm stage's trainings and their search
trials, or a bench's pairs), `correlate` says how well the first ranks like the second: Spearman's ρ (Pearson's
r of the ranks, ties averaged, as pandas ranks them), a 90 % interval from the Fisher z transform (SE
1.06 / √(n − 3), Fieller et al. 1957) where n > 3, and a bootstrap interval over the settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LOW = 0.5  # below this ρ the search budget is said not to rank like the final's
Z90 = 1.6448536269514722  # the normal quantile of 0.95: two-sided 90 %


@dataclass(frozen=True)
class RankAgreement:
    rho: float  # Spearman's ρ (NaN when either side has no spread)
    n: int  # settings measured at both budgets
    fisher: tuple[float, float] | None  # 90 % interval by Fisher z (None for n ≤ 3)
    bootstrap: tuple[float, float] | None  # 5th and 95th percentiles of ρ over resampled settings

    @property
    def low(self) -> bool:
        """ρ below LOW (or undefined): the cheap budget's ranking is not the final's."""
        return not self.rho >= LOW

    def line(self, cheap: str = "search budget", full: str = "the final budget") -> str:
        span = f", 90 % interval {self.fisher[0]:+.2f}..{self.fisher[1]:+.2f}" if self.fisher else ""
        return (f"rank agreement of the {cheap} with {full}: Spearman ρ = {self.rho:+.2f} over {self.n} "
                f"settings{span}")


def spearman(x, y) -> float:
    """Spearman's ρ: Pearson's r of the average ranks; NaN when fewer than 2 pairs or no spread on a side."""
    a = pd.Series(np.asarray(x, dtype=float)).rank()
    b = pd.Series(np.asarray(y, dtype=float)).rank()
    if len(a) < 2 or a.nunique() < 2 or b.nunique() < 2:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def fisher_interval(rho: float, n: int, z: float = Z90) -> tuple[float, float] | None:
    """The interval tanh(atanh ρ ± z · 1.06/√(n − 3)); None when n ≤ 3 or ρ is NaN."""
    if n <= 3 or math.isnan(rho):
        return None
    r = min(max(rho, -0.999999), 0.999999)
    half = z * 1.06 / math.sqrt(n - 3)
    return math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)


def bootstrap_interval(x, y, draws: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """5th and 95th percentiles of ρ over `draws` resamplings of the pairs (a resample without spread skipped)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return None
    idx = np.random.default_rng(seed).integers(0, len(x), size=(draws, len(x)))
    a = pd.DataFrame(x[idx]).rank(axis=1).to_numpy(copy=True)  # every resample ranked at once, ties averaged
    b = pd.DataFrame(y[idx]).rank(axis=1).to_numpy(copy=True)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    ok = norm > 0
    if not ok.any():
        return None
    lo, hi = np.percentile((a * b).sum(axis=1)[ok] / norm[ok], [5, 95])
    return float(lo), float(hi)


def correlate(x, y) -> RankAgreement:
    """How well values x (cheap budget) rank like y (final budget), pair i being one setting at both."""
    if len(x) != len(y):
        raise ValueError(f"need one value per setting at each budget; got {len(x)} and {len(y)}")
    rho = spearman(x, y)
    return RankAgreement(rho, len(x), fisher_interval(rho, len(x)), bootstrap_interval(x, y))
