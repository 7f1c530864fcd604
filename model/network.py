"""The two-layer network: parameters, forward pass, loss/cost/accuracy and batch gradients.

Shapes follow the report: samples are rows, X: (n, d) float, y: (n,) int labels in 0..k-1,
W1: (m, d), b1: (m,), W2: (k, m), b2: (k,). The cost is mean cross-entropy + lam * (ΣW1² + ΣW2²).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from model.augment import flip


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


def scores(params: Params, X: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations H: (n, m) and class scores S: (n, k); mask: (n, m) multiplies H (dropout)."""
    H = X @ params.W1.T
    H += params.b1
    np.maximum(H, 0, out=H)
    if mask is not None:
        H *= mask
    S = H @ params.W2.T
    S += params.b2
    return H, S


def softmax(S: np.ndarray) -> np.ndarray:
    """Row-wise softmax of S: (n, k); subtracting the row max keeps exp from overflowing."""
    P = S - S.max(axis=1, keepdims=True)
    np.exp(P, out=P)
    P /= P.sum(axis=1, keepdims=True)
    return P


def forward(params: Params, X: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """H: (n, m) ReLU activations (times mask, if given) and P: (n, k) class probabilities."""
    H, S = scores(params, X, mask)
    return H, softmax(S)


def dropout_mask(p: float, rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Fill out: (n, m) with an inverted-dropout mask: 0 with probability p, else 1/(1 − p).

    Its mean is 1, so evaluation uses H as it is. In place: the training step reuses one buffer.
    """
    rng.random(dtype=out.dtype, out=out)
    np.greater_equal(out, p, out=out)
    out *= 1 / (1 - p)
    return out


def penalty(params: Params) -> float:
    """ΣW1² + ΣW2² (biases are not regularised)."""
    return float(np.vdot(params.W1, params.W1) + np.vdot(params.W2, params.W2))


def loss_from_scores(S: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Summed cross-entropy and number of correct predictions, from scores without forming P."""
    top = S.max(axis=1)
    lse = top + np.log(np.exp(S - top[:, None]).sum(axis=1))
    s_y = S[np.arange(len(y)), y]
    return float((lse - s_y).sum(dtype=np.float64)), int((S.argmax(axis=1) == y).sum())


def loss(params: Params, X: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None, smoothing: float = 0.0) -> float:
    """Mean cross-entropy (with the hidden layer times mask, if given) against targets smoothed by `smoothing`:
    1 − smoothing + smoothing/k on the true class, smoothing/k on the others."""
    S = scores(params, X, mask)[1]
    ce = loss_from_scores(S, y)[0] / len(y)
    if not smoothing:
        return ce
    # −Σ_j (smoothing/k) log p_j = smoothing · (mean over rows of lse − mean score), so the loss mixes the two.
    uniform = float(np.mean(log_softmax(S).mean(axis=1)))
    return (1 - smoothing) * ce - smoothing * uniform


def cost(params: Params, X: np.ndarray, y: np.ndarray, lam: float, mask: np.ndarray | None = None,
         smoothing: float = 0.0) -> float:
    """Mean (smoothed) cross-entropy + lam * (ΣW1² + ΣW2²)."""
    return loss(params, X, y, mask, smoothing) + lam * penalty(params)


def accuracy(params: Params, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose highest score is the true class."""
    return float(np.mean(scores(params, X)[1].argmax(axis=1) == y))


def log_softmax(S: np.ndarray) -> np.ndarray:
    """Row-wise log P of S: (n, k), without overflow."""
    L = S - S.max(axis=1, keepdims=True)
    L -= np.log(np.exp(L).sum(axis=1, keepdims=True))
    return L


def flip_averaged_log_probabilities(params: Params, X: np.ndarray) -> np.ndarray:
    """log of the mean of P(X) and P(X mirrored left to right): (n, k), for CIFAR rows X: (n, 3072).

    Test-time augmentation for the final model; the mean is taken in log space so that a
    probability that underflows in one view does not become log 0.
    """
    both = np.logaddexp(log_softmax(scores(params, X)[1]), log_softmax(scores(params, flip(X))[1]))
    return both - np.log(2)


def flip_averaged_probabilities(params: Params, X: np.ndarray) -> np.ndarray:
    """The mean of P(X) and P(X mirrored left to right): (n, k), for CIFAR rows X: (n, 3072)."""
    return np.exp(flip_averaged_log_probabilities(params, X))


def evaluate(
    params: Params, X: np.ndarray, y: np.ndarray, lam: float, chunk: int = 5000, tta_flip: bool = False
) -> dict:
    """Loss, cost and accuracy in one forward pass over X, chunk rows at a time (bounded memory).

    tta_flip: classify by the mean probabilities of each image and its mirror image (CIFAR rows;
    two forward passes). eval_chunk: 5000 measured as fast as 10,000 and faster than 500-2000 rows,
    at m = 50 and at m = 1000.
    """
    total, correct = 0.0, 0
    for i in range(0, len(y), chunk):
        Xc, yc = X[i : i + chunk], y[i : i + chunk]
        if tta_flip:
            L = flip_averaged_log_probabilities(params, Xc)
            ce, ok = -float(L[np.arange(len(yc)), yc].sum(dtype=np.float64)), int((L.argmax(axis=1) == yc).sum())
        else:
            ce, ok = loss_from_scores(scores(params, Xc)[1], yc)
        total += ce
        correct += ok
    mean_loss = total / len(y)
    return {"loss": mean_loss, "cost": mean_loss + lam * penalty(params), "accuracy": correct / len(y)}


def gradients(
    params: Params, X: np.ndarray, y: np.ndarray, lam: float, out: Params | None = None, mask: np.ndarray | None = None,
    smoothing: float = 0.0,
) -> tuple[Params, np.ndarray]:
    """Gradients of the cost on the batch (X: (B, d), y: (B,)), as the report derives them.

    mask: (B, m) ≥ 0, a fixed dropout mask that multiplies the hidden activations, or None.
    smoothing: label smoothing, the targets are (1 − smoothing)·Y + smoothing/k.
    Returns the gradients (written into `out` when given) and P: (B, k).
    """
    H, P = forward(params, X, mask)
    G = P.copy()
    if smoothing:
        G -= smoothing / G.shape[1]
    G[np.arange(len(y)), y] -= 1 - smoothing  # G = P - Y without forming the one-hot Y
    G /= len(y)
    g = out if out is not None else params.empty_like()
    np.matmul(G.T, H, out=g.W2)
    G.sum(axis=0, out=g.b2)
    GH = G @ params.W2
    if mask is not None:
        GH *= mask
    np.multiply(GH, H > 0, out=GH)  # ReLU's derivative; a boolean-mask assignment is 4-10x slower
    np.matmul(GH.T, X, out=g.W1)
    GH.sum(axis=0, out=g.b1)
    for W, dW in ((params.W1, g.W1), (params.W2, g.W2)):
        dW += (2 * lam) * W
    return g, P
