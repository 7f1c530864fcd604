"""A fit over several numeric log-scale settings at once (λ, η_max, eps), where the trainings can pin it down.

With more than λ varying among the candidates, the accuracy is modelled as a separable quadratic in the log10
of each varying positive float setting, with one intercept per round (a round's trainings share seed and block):
y = o_round + Σ_j (b1_j x_j + b2_j x_j²). Its peak, each x_j clipped to the measured range, is the choice. The
fit is used only where it is well-posed: at least 2·D + 2 distinct settings for D dimensions (one residual
degree of freedom beyond the shape terms and an intercept), three distinct values in every dimension, and a
peak (b2_j < 0) in every one; otherwise the stage takes the best mean and says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MultiFit:
    dims: tuple[str, ...]  # the varying log-scale settings
    values: dict  # setting -> the chosen value (10 ** the clipped vertex)
    curvature: dict  # setting -> b2 (accuracy per decade²; negative: a peak)
    clipped: tuple[str, ...]  # the settings whose vertex lay outside the measured range


def log_dims(settings: list[dict]) -> list[str]:
    """The keys that are positive floats in every candidate and take more than one value among them."""
    keys = settings[0].keys() if settings else []
    return [k for k in keys if all(isinstance(s.get(k), float) and s[k] > 0 for s in settings)
            and len({round(math.log10(s[k]), 9) for s in settings}) > 1]


def fit_separable(points: list[tuple[dict, int, float]], dims: list[str]) -> MultiFit | str:
    """points: (settings, round, accuracy) per training. A MultiFit, or why the fit is not well-posed."""
    if not dims:
        return "no numeric log-scale setting varies among the candidates"
    X = np.array([[math.log10(p[0][k]) for k in dims] for p in points])
    distinct = len({tuple(np.round(x, 9)) for x in X})
    need = 2 * len(dims) + 2
    if distinct < need:
        return f"{distinct} distinct settings trained there, a fit over {len(dims)} dimensions needs {need}"
    thin = [k for j, k in enumerate(dims) if len(np.unique(np.round(X[:, j], 9))) < 3]
    if thin:
        return f"fewer than 3 distinct values of {', '.join(thin)}"
    rounds = sorted({p[1] for p in points})
    A = np.zeros((len(points), len(rounds) + 2 * len(dims)))
    for i, p in enumerate(points):
        A[i, rounds.index(p[1])] = 1.0
    A[:, len(rounds)::2] = X
    A[:, len(rounds) + 1::2] = X**2
    coef, *_ = np.linalg.lstsq(A, np.array([p[2] for p in points], dtype=float), rcond=None)
    b1, b2 = coef[len(rounds)::2], coef[len(rounds) + 1::2]
    flat = [k for j, k in enumerate(dims) if b2[j] >= 0]
    if flat:
        return f"the fit has no peak in {', '.join(flat)}"
    values, clipped = {}, []
    for j, k in enumerate(dims):
        vertex = -b1[j] / (2 * b2[j])
        x = min(max(vertex, X[:, j].min()), X[:, j].max())
        if x != vertex:
            clipped.append(k)
        values[k] = float(10**x)
    return MultiFit(tuple(dims), values, {k: float(b2[j]) for j, k in enumerate(dims)}, tuple(clipped))
