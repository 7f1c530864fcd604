"""A pooled fit of validation accuracy on log10 λ: every confirm training counts, its round's block and seed
as an offset of its own.

λ is a smooth, single-peaked axis: at the final budget test accuracy rises from 51 % at 1e-4 to 53 % at 5e-3
and falls to 51.6 % at 1e-2. A quadratic in x = log10 λ with one intercept per round (the trainings of a round
share their seed and block, so only differences within a round inform the shape) pools the candidates'
neighbours; its peak, clipped to the measured range, is the λ the stage proposes, possibly between candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fit:
    b1: float  # slope in x = log10 λ
    b2: float  # curvature (negative: a peak)
    offsets: dict[int, float]  # round -> intercept
    x: float  # the chosen log10 λ: the vertex, clipped to [lo, hi]
    lo: float
    hi: float
    clipped: bool  # the vertex lay outside the measured range, or the fit has no peak

    def curve(self, xs: np.ndarray) -> np.ndarray:
        """The fitted accuracy at xs, on the mean of the rounds' offsets."""
        mean = float(np.mean(list(self.offsets.values())))
        return mean + self.b1 * xs + self.b2 * xs**2

    @property
    def peak_gain(self) -> float:
        """How much the fit puts the chosen x above the better end of the measured range (accuracy)."""
        ends = self.curve(np.array([self.lo, self.hi]))
        return float(self.curve(np.array([self.x]))[0] - ends.max())


def fit_quadratic(points: list[tuple[float, int, float]]) -> Fit | None:
    """points: (log10 λ, round, accuracy) per training. None with fewer than 3 distinct λ (no curvature)."""
    xs = np.array([p[0] for p in points], dtype=float)
    if len(np.unique(np.round(xs, 9))) < 3:
        return None
    rounds = sorted({p[1] for p in points})
    A = np.zeros((len(points), len(rounds) + 2))
    for i, (x, r, _) in enumerate(points):
        A[i, rounds.index(r)] = 1.0
        A[i, -2:] = x, x * x
    y = np.array([p[2] for p in points], dtype=float)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    b1, b2 = float(coef[-2]), float(coef[-1])
    lo, hi = float(xs.min()), float(xs.max())
    if b2 < 0:
        vertex = -b1 / (2 * b2)
        x = min(max(vertex, lo), hi)
        clipped = x != vertex
    else:  # no peak: the better end of the measured range
        x = hi if b1 * (hi - lo) + b2 * (hi * hi - lo * lo) > 0 else lo
        clipped = True
    return Fit(b1, b2, {r: float(coef[i]) for i, r in enumerate(rounds)}, x, lo, hi, clipped)
