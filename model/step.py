"""The training loop's fused SGD step: one update on a mini-batch, in buffers allocated once.

It computes what `network.gradients` followed by W ← W − η·∇J computes, rearranged so that a step
allocates nothing and does little besides its five GEMMs. `gradients` stays the readable,
report-faithful version (the gradient check uses it); a test holds the two equal.
"""

from __future__ import annotations

import math

import numpy as np

from model.network import Params, dropout_mask


class Step:
    """Workspace for SGD steps on batches of B rows of a network shaped like `params`.

    Buffers: H: (B, m), St: (k, B), GH: (B, m), dW1 like W1 (its memory layout too), dW2: (k, m).
    dropout p > 0 draws a fresh inverted-dropout mask on H from rng at every step; after a step,
    `keep` holds the mask it used. smoothing α > 0 trains against the label-smoothed targets (1 − α)Y + α/k.
    """

    def __init__(self, params: Params, B: int, dropout: float = 0.0, rng: np.random.Generator | None = None,
                 smoothing: float = 0.0):
        m, _ = params.W1.shape
        k = params.W2.shape[0]
        dt = params.W1.dtype
        self.B = B
        self.H = np.empty((B, m), dt)
        self.relu = np.empty((B, m), bool)
        # Scores class-major, (k, B): the softmax then reduces over 10 long rows instead of B rows
        # of 10, which NumPy does 3-8x faster; St holds S, then P, then G in turn.
        self.St = np.empty((k, B), dt)
        self.St_flat = self.St.reshape(-1)
        self.GH = np.empty((B, m), dt)
        self.dW1 = np.empty_like(params.W1)  # keeps W1's layout: the update then runs in one pass
        self.dW2 = np.empty_like(params.W2)
        self.db1 = np.empty(m, dt)
        self.db2 = np.empty(k, dt)
        self.top = np.empty(B, dt)
        self.z = np.empty(B, dt)
        self.cols = np.arange(B)
        self.true = np.empty(B, np.intp)
        if dropout and rng is None:
            raise ValueError("dropout needs a random generator")
        self.dropout, self.rng = dropout, rng
        self.smoothing = smoothing
        self.keep = np.empty((B, m), dt) if dropout else None

    def __call__(self, params: Params, X: np.ndarray, y: np.ndarray, eta: float, lam: float) -> bool:
        """Update params in place from X: (B, d) and labels y: (B,); False if P was not finite.

        Divergence shows as NaN in P; the caller raises, so the update of that step is moot.
        """
        W1, b1, W2, b2 = params.W1, params.b1, params.W2, params.b2
        H, St, GH = self.H, self.St, self.GH
        np.matmul(X, W1.T, out=H)
        H += b1
        np.maximum(H, 0, out=H)
        if self.dropout:
            H *= dropout_mask(self.dropout, self.rng, self.keep)
        np.matmul(W2, H.T, out=St)
        St += b2[:, None]
        # Softmax in place, scaled by c = η/B so that every gradient below comes out times η.
        c = eta / self.B
        np.maximum.reduce(St, axis=0, out=self.top)  # ufunc methods: np.max/np.sum add ~1.5 µs each
        St -= self.top
        np.exp(St, out=St)
        np.add.reduce(St, axis=0, out=self.z)
        np.divide(c, self.z, out=self.z)
        St *= self.z
        np.multiply(y, self.B, out=self.true)
        self.true += self.cols
        if self.smoothing:  # targets (1 − α)Y + α/k
            St -= c * self.smoothing / St.shape[0]
        self.St_flat[self.true] -= c * (1 - self.smoothing)  # G = c(P − Y) without forming the one-hot Y
        np.matmul(St, H, out=self.dW2)
        np.add.reduce(St, axis=1, out=self.db2)
        np.matmul(St.T, W2, out=GH)  # W2 before its update
        if self.dropout:
            GH *= self.keep
        np.greater(H, 0, out=self.relu)
        np.multiply(GH, self.relu, out=GH)  # ReLU's derivative; a boolean-mask assignment is 4-10x slower
        np.matmul(GH.T, X, out=self.dW1)
        np.add.reduce(GH, axis=0, out=self.db1)
        # Weight decay folded into the update, W ← (1 − 2ηλ)W − η·∇(loss): no 2λW temporary.
        decay = 1 - 2 * eta * lam
        for W, dW in ((W1, self.dW1), (W2, self.dW2)):
            W *= decay
            W -= dW
        b1 -= self.db1
        b2 -= self.db2
        # Each row of G sums to 0, so db2 sums to ~0 unless some P was NaN: a 10-element check.
        return math.isfinite(np.add.reduce(self.db2))
