"""Data augmentation on CIFAR-10 rows: random horizontal flips and translations with zero fill.

Rows are the flat 3072-vectors of the data files: channel-major (the R plane's 32×32 pixels row
by row, then G, then B). After standardisation a zero is the training mean of that pixel.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

SIDE = 32
CHANNELS = 3
D = CHANNELS * SIDE * SIDE


def flip(X: np.ndarray) -> np.ndarray:
    """X: (n, 3072) → (n, 3072), each image mirrored left to right (a new array)."""
    n = len(X)
    return np.ascontiguousarray(X.reshape(n, CHANNELS, SIDE, SIDE)[..., ::-1]).reshape(n, D)


def mirror_permutation() -> np.ndarray:
    """(3072,) indices: row[mirror_permutation()] is the row's image mirrored left to right."""
    return flip(np.arange(D)[None, :])[0]


class Augmenter:
    """Random flips and shifts of up to `shift` pixels for batches of B rows, buffers allocated once.

    A shift by (dx, dy) with zero fill is a window of a copy of the images with a zero border of
    `shift` pixels. All windows of all images form one strided view of that copy, so a batch takes
    one copy into the bordered buffer and one fancy-index gather: no loop over images.
    """

    def __init__(self, B: int, shift: int, dtype=np.float32):
        if not 0 <= shift < SIDE:
            raise ValueError(f"shift must be in 0..{SIDE - 1} pixels; got {shift}")
        self.shift = k = shift
        side = SIDE + 2 * k
        self.padded = np.zeros((B, CHANNELS, side, side), dtype)  # the border stays 0
        self.inner = self.padded[:, :, k : k + SIDE, k : k + SIDE]
        s = self.padded.strides
        shape = (B, 2 * k + 1, 2 * k + 1, CHANNELS, SIDE, SIDE)
        self.windows = as_strided(self.padded, shape, (s[0], s[2], s[3], s[1], s[2], s[3]), writeable=False)
        self.rows = np.arange(B)

    def apply(self, X: np.ndarray, n_flip: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """X: (B, 3072) → (B, 3072): the last n_flip images mirrored, then image b moved dx[b] pixels
        right and dy[b] pixels down (negative: left, up), with zeros where no pixel comes from.

        Returns a new array, or with shift 0 a view of this object's buffer (valid until the next call).
        """
        B, k = len(X), self.shift
        keep = B - n_flip
        X4 = X.reshape(B, CHANNELS, SIDE, SIDE)
        self.inner[:keep] = X4[:keep]  # slices, not a boolean index: 2-3x faster
        self.inner[keep:] = X4[keep:, ..., ::-1]
        if k == 0:
            return self.padded.reshape(B, D)
        return self.windows[self.rows, k - dy, k - dx].reshape(B, D)

    def __call__(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random flip (probability ½) and shift (uniform in -shift..shift on each axis) per image.

        The rows of a training batch come in random order, so mirroring the last Binomial(B, ½) of
        them is the same as mirroring each one with probability ½, and needs only slices.
        """
        B, k = len(X), self.shift
        dx, dy = rng.integers(-k, k + 1, (2, B))
        return self.apply(X, rng.binomial(B, 0.5), dx, dy)
