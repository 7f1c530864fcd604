"""Per-image correctness, stored compactly, and paired differences between candidates with their SE.

Candidates trained in the same round share the seed and the validation block, so the noise of their difference
comes only from the images on which the two networks disagree (McNemar): with n10 images only the first gets
right and n01 only the second, the difference is (n10 − n01)/n and its variance (n10 + n01 − (n10 − n01)²/n)/n².
Two networks that agree on 86 % of images have a paired SE about half the SE of two independent accuracies.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np

CORRECT_ATTR = "val_correct"  # the trial's user attr: base64 of np.packbits(correct), about 840 chars for 5,000
CORRECT_ARTIFACT = "val_correct.npy"  # the run's artifact: the packed bits, np.unpackbits(..., count=n_val)


def encode(correct: np.ndarray) -> str:
    """base64 of the packed bits of a boolean vector (its length is stored beside it, as n_val)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def decode(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=n).astype(bool)


@dataclass(frozen=True)
class Paired:
    """The mean difference a − b in accuracy over the shared rounds, its SE, and the rounds it pools."""

    diff: float
    se: float
    rounds: int

    def z(self) -> float:
        if self.se == 0:
            return math.copysign(math.inf, self.diff) if self.diff else 0.0
        return self.diff / self.se


def one_round(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(difference a − b in accuracy, its variance over the sampling of images) on one shared block."""
    if a.shape != b.shape:
        raise ValueError(f"paired vectors differ in length: {a.shape} and {b.shape}")
    n = a.size
    n10 = int(np.count_nonzero(a & ~b))
    n01 = int(np.count_nonzero(~a & b))
    return (n10 - n01) / n, (n10 + n01 - (n10 - n01) ** 2 / n) / n**2


def paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> Paired | None:
    """a − b pooled over the rounds both trained in (round -> correctness); None when they share none.

    The mean of the per-round differences; its SE is the images' (McNemar) part, and with two or more rounds
    at least the spread of the per-round differences, which also holds the seeds' noise."""
    shared = sorted(a.keys() & b.keys())
    if not shared:
        return None
    diffs, variances = zip(*(one_round(a[r], b[r]) for r in shared), strict=True)
    r = len(shared)
    mean = sum(diffs) / r
    var = sum(variances) / r**2
    if r > 1:
        var = max(var, sum((d - mean) ** 2 for d in diffs) / (r - 1) / r)
    return Paired(mean, math.sqrt(var), r)
