"""Weight averaging at the ends of the learning-rate cycles (stochastic weight averaging, Izmailov et al. 2018).

The cyclical schedule reaches η_min at the end of every cycle, where the weights sit at the bottom of a valley;
averaging the weights of the last few cycle ends lands nearer the centre of the region they explore, which for
a convex-ish loss surface generalises better than any one of them. The network has no batch statistics to
recompute, so the average is a network of the same shape, used as it is.
"""

from __future__ import annotations

import numpy as np

from model.network import Params


def snapshot(params: Params) -> Params:
    """A C-ordered copy of the weights (W1 may be column-major during training)."""
    return Params(*(np.ascontiguousarray(a).copy() for _, a in params.items()))


def average(snapshots: list[Params]) -> Params:
    """The element-wise mean of the snapshots, accumulated in float64 and returned in their dtype."""
    if not snapshots:
        raise ValueError("nothing to average: no snapshot")
    out = []
    for name, first in snapshots[0].items():
        total = np.zeros(first.shape, dtype=np.float64)
        for s in snapshots:
            total += getattr(s, name)
        out.append((total / len(snapshots)).astype(first.dtype))
    return Params(*out)


def is_cycle_end(step: int, n_s: int) -> bool:
    """The cyclical schedule ends a cycle (η back at η_min) every 2·n_s update steps."""
    return step > 0 and step % (2 * n_s) == 0
