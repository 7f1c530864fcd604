"""The two-layer network: parameters, forward pass, loss/cost/accuracy and batch gradients.

Shapes follow the report: samples are rows, X: (n, d) float, y: (n,) int labels in 0..k-1,
W1: (m, d), b1: (m,), W2: (k, m), b2: (k,). The cost is mean cross-entropy + lam * (ΣW1² + ΣW2²).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class Params:
    """The network's weights; arrays are updated in place during training."""

    W1: np.ndarray  # (m, d)
    b1: np.ndarray  # (m,)
    W2: np.ndarray  # (k, m)
    b2: np.ndarray  # (k,)

    def items(self):
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    def astype(self, dtype) -> Params:
        return Params(*(a.astype(dtype) for _, a in self.items()))

    def empty_like(self) -> Params:
        return Params(*(np.empty_like(a) for _, a in self.items()))


def init_params(d: int, m: int, k: int, rng: np.random.Generator, dtype=np.float32) -> Params:
    """W ~ N(0, 1/fan_in), b = 0, drawn from the caller's generator."""
    W1 = (rng.standard_normal((m, d)) / np.sqrt(d)).astype(dtype)
    W2 = (rng.standard_normal((k, m)) / np.sqrt(m)).astype(dtype)
    return Params(W1, np.zeros(m, dtype), W2, np.zeros(k, dtype))


def scores(params: Params, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations H: (n, m) and class scores S: (n, k)."""
    H = X @ params.W1.T
    H += params.b1
    np.maximum(H, 0, out=H)
    S = H @ params.W2.T
    S += params.b2
    return H, S


def softmax(S: np.ndarray) -> np.ndarray:
    """Row-wise softmax of S: (n, k); subtracting the row max keeps exp from overflowing."""
    P = S - S.max(axis=1, keepdims=True)
    np.exp(P, out=P)
    P /= P.sum(axis=1, keepdims=True)
    return P


def forward(params: Params, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H: (n, m) ReLU activations and P: (n, k) class probabilities."""
    H, S = scores(params, X)
    return H, softmax(S)


def penalty(params: Params) -> float:
    """ΣW1² + ΣW2² (biases are not regularised)."""
    return float(np.vdot(params.W1, params.W1) + np.vdot(params.W2, params.W2))


def loss_from_scores(S: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Summed cross-entropy and number of correct predictions, from scores without forming P."""
    top = S.max(axis=1)
    lse = top + np.log(np.exp(S - top[:, None]).sum(axis=1))
    s_y = S[np.arange(len(y)), y]
    return float((lse - s_y).sum(dtype=np.float64)), int((S.argmax(axis=1) == y).sum())


def loss(params: Params, X: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy."""
    return loss_from_scores(scores(params, X)[1], y)[0] / len(y)


def cost(params: Params, X: np.ndarray, y: np.ndarray, lam: float) -> float:
    """Mean cross-entropy + lam * (ΣW1² + ΣW2²)."""
    return loss(params, X, y) + lam * penalty(params)


def accuracy(params: Params, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose highest score is the true class."""
    return float(np.mean(scores(params, X)[1].argmax(axis=1) == y))


def evaluate(params: Params, X: np.ndarray, y: np.ndarray, lam: float, chunk: int = 5000) -> dict:
    """Loss, cost and accuracy in one forward pass over X, chunk rows at a time (bounded memory)."""
    total, correct = 0.0, 0
    for i in range(0, len(y), chunk):
        ce, ok = loss_from_scores(scores(params, X[i : i + chunk])[1], y[i : i + chunk])
        total += ce
        correct += ok
    mean_loss = total / len(y)
    return {"loss": mean_loss, "cost": mean_loss + lam * penalty(params), "accuracy": correct / len(y)}


def gradients(
    params: Params, X: np.ndarray, y: np.ndarray, lam: float, out: Params | None = None
) -> tuple[Params, np.ndarray]:
    """Gradients of the cost on the batch (X: (B, d), y: (B,)), as the report derives them.

    Returns the gradients (written into `out` when given, so a training loop allocates nothing)
    and P: (B, k), whose row maxima let the caller detect divergence cheaply.
    """
    H, P = forward(params, X)
    G = P.copy()
    G[np.arange(len(y)), y] -= 1  # G = P - Y without forming the one-hot Y
    G /= len(y)
    g = out if out is not None else params.empty_like()
    np.matmul(G.T, H, out=g.W2)
    G.sum(axis=0, out=g.b2)
    GH = G @ params.W2
    np.multiply(GH, H > 0, out=GH)  # ReLU's derivative; a boolean-mask assignment is 4-10x slower
    np.matmul(GH.T, X, out=g.W1)
    GH.sum(axis=0, out=g.b1)
    for W, dW in ((params.W1, g.W1), (params.W2, g.W2)):
        dW += (2 * lam) * W
    return g, P
