"""Centered-difference gradient check (the report's Table 1)."""

from __future__ import annotations

import numpy as np

from model.network import Params, cost, gradients, init_params


def numerical_gradients(
    params: Params, X: np.ndarray, y: np.ndarray, lam: float, h: float = 1e-5, mask: np.ndarray | None = None,
    smoothing: float = 0.0,
) -> Params:
    """(J(θ + h) − J(θ − h)) / 2h for every entry of every parameter, in params' dtype.

    mask: a fixed (n, m) dropout mask on the hidden layer, the same for every evaluation of J;
    smoothing: label smoothing in J.
    """
    num = params.empty_like()
    for (_, p), (_, g) in zip(params.items(), num.items(), strict=True):
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            plus = cost(params, X, y, lam, mask, smoothing)
            flat[i] = old - h
            minus = cost(params, X, y, lam, mask, smoothing)
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * h)
    return num


def compare(
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    h: float = 1e-5,
    eps: float = 1e-10,
    mask: np.ndarray | None = None,
    smoothing: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Max absolute and max relative error |ga − gn| / max(eps, |ga| + |gn|) per parameter.

    Runs in float64 on copies: X (n, d) is the first samples (and optionally dimensions) to check;
    mask: an optional fixed (n, m) dropout mask, applied to both gradients; smoothing: label smoothing in both.
    """
    p64 = params.astype(np.float64)
    X64 = np.asarray(X, dtype=np.float64)
    m64 = None if mask is None else np.asarray(mask, dtype=np.float64)
    analytic, _ = gradients(p64, X64, y, lam, mask=m64, smoothing=smoothing)
    numeric = numerical_gradients(p64, X64, y, lam, h, m64, smoothing)
    table = {}
    for (name, ga), (_, gn) in zip(analytic.items(), numeric.items(), strict=True):
        diff = np.abs(ga - gn)
        rel = diff / np.maximum(eps, np.abs(ga) + np.abs(gn))
        table[name] = {"max_abs": float(diff.max()), "max_rel": float(rel.max()), "mean_abs": float(diff.mean())}
    return table


def check(
    X: np.ndarray,
    y: np.ndarray,
    hidden: int = 50,
    lam: float = 0.01,
    n: int = 10,
    dims: int | None = None,
    seed: int = 0,
    h: float = 1e-5,
) -> dict[str, dict[str, float]]:
    """The report's check: a fresh network on the first n samples (first `dims` inputs if given)."""
    Xs = np.asarray(X[:n, :dims], dtype=np.float64)
    params = init_params(Xs.shape[1], hidden, 10, np.random.default_rng(seed), dtype=np.float64)
    return compare(params, Xs, np.asarray(y[:n]), lam, h)
