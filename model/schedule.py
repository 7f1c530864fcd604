"""The report's cyclical (triangular) learning rate."""

from __future__ import annotations


def cyclic_eta(t: int, eta_min: float, eta_max: float, n_s: int) -> float:
    """η at update step t: eta_min at t = 0, eta_max at t = n_s, eta_min at 2n_s, and so on.

    Defined for any t ≥ 0; one cycle is 2·n_s steps.
    """
    if n_s < 1:
        raise ValueError(f"n_s must be ≥ 1; got {n_s}")
    if t < 0:
        raise ValueError(f"step t must be ≥ 0; got {t}")
    phase = t % (2 * n_s)
    frac = phase / n_s if phase <= n_s else 2 - phase / n_s
    return eta_min + frac * (eta_max - eta_min)
