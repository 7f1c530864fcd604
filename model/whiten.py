"""Whitening of the input rows: ZCA and PCA, fitted on the training rows only, folded into the first layer.

    eig = fit(X_train, mirror=flip_permutation())     # once per split: covariance + eigh (10-25 s at 45k × 3072)
    w = whitening(eig, WhitenSpec("zca", eps=1.0))    # cheap: one (d, d) product per spec
    Xw = w.apply(X)                                    # (X − μ) P, a new float32 array, in chunks
    folded = w.fold(params)                            # a network on X that computes what params computes on Xw

P is symmetric: P = s · U_k diag((λ_k + eps)^-½) U_kᵀ over the kept eigenvectors U_k of the training covariance.
"zca" keeps all of them; "pca" keeps the leading ones that explain `keep` of the variance (PCA whitening, rotated
back to pixel coordinates: the network's N(0, 1/d) initialisation and its L2 penalty are rotation invariant, so
the rotation back changes nothing for training but lets flips, shifts and mirror averaging act on images).
s rescales the whitened rows to unit average variance per input, the scale the initialisation assumes.

With `mirror` (the permutation that mirrors an image) the mean and covariance are those of the training rows
together with their mirror images. P then commutes with mirroring, so flipping a whitened image is whitening
the flipped image: augmentation and mirror averaging mean the same on either side of the fold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from model.augment import mirror_permutation
from model.network import Params

KINDS = ("none", "pca", "zca")
_CHUNK = 2048  # rows per GEMM when accumulating or applying: temporaries of a few tens of MB, not a full copy


@dataclass(frozen=True)
class WhitenSpec:
    """Which whitening: kind "none" | "pca" | "zca"; eps is added to every eigenvalue (the regulariser);
    keep is the fraction of the variance PCA keeps (ZCA keeps all)."""

    kind: str = "none"
    eps: float = 1.0
    keep: float = 0.99

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"whiten must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"whiten_eps must be a number ≥ 0; got {self.eps}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"whiten_keep must be a fraction of the variance in (0, 1]; got {self.keep}")

    @property
    def on(self) -> bool:
        return self.kind != "none"


@dataclass(frozen=True, eq=False)
class Eigen:
    """The training rows' mean mu: (d,) and covariance eigenpairs, values: (d,) descending, vectors: (d, d)
    (columns), all float64."""

    mu: np.ndarray
    values: np.ndarray
    vectors: np.ndarray


def moments(X: np.ndarray, mirror: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d), float64, of the rows X: (n, d), with their mirror images if given.

    Two passes of chunked GEMMs in X's dtype, summed in float64: no full-size float64 temporary (49k × 3072 × 8 B
    would be 1.2 GB), and centring before the products avoids the cancellation of E[xxᵀ] − μμᵀ.
    """
    n, d = X.shape
    if n < 2:
        raise ValueError(f"whitening needs at least 2 training rows; got {n}")
    mu = np.zeros(d)
    for a in range(0, n, _CHUNK):
        mu += X[a:a + _CHUNK].sum(axis=0, dtype=np.float64)
    mu /= n
    if mirror is not None:
        mu = (mu + mu[mirror]) / 2
    mu_x = mu.astype(X.dtype)
    C = np.zeros((d, d))
    for a in range(0, n, _CHUNK):
        Xc = X[a:a + _CHUNK] - mu_x
        C += Xc.T @ Xc
    C /= n
    if mirror is not None:  # the covariance of the rows and their mirrors: (C + F C Fᵀ) / 2
        C = (C + C[np.ix_(mirror, mirror)]) / 2
    return mu, C


def fit(X: np.ndarray, mirror: np.ndarray | None = None) -> Eigen:
    """Eigen-decompose the training rows' covariance (see :func:`moments`)."""
    mu, C = moments(X, mirror)
    values, vectors = np.linalg.eigh(C)
    del C
    values = np.maximum(values[::-1], 0)  # descending; rounding can make the smallest slightly negative
    return Eigen(mu, values, np.ascontiguousarray(vectors[:, ::-1]))


def kept(values: np.ndarray, keep: float) -> int:
    """The number of leading eigenvalues whose sum reaches `keep` of the total."""
    total = np.cumsum(values)
    return int(min(len(values), np.searchsorted(total, keep * total[-1] * (1 - 1e-12)) + 1))


@dataclass(frozen=True, eq=False)
class Whitening:
    """x ↦ (x − mu) P with P: (d, d) symmetric float64, mu: (d,) float64; digest: sha256 hex of both and the spec."""

    spec: WhitenSpec
    P: np.ndarray
    mu: np.ndarray
    components: int  # eigenvectors kept
    digest: str

    def apply(self, X: np.ndarray) -> np.ndarray:
        """X: (n, d) → (X − mu) P, a new C-contiguous array of X's dtype, computed a chunk of rows at a time."""
        P, mu = self.P.astype(X.dtype), self.mu.astype(X.dtype)
        out = np.empty_like(X)
        for a in range(0, len(X), _CHUNK):
            np.matmul(X[a:a + _CHUNK] - mu, P, out=out[a:a + _CHUNK])
        return out

    def fold(self, params: Params) -> Params:
        """The same network on unwhitened rows: W1 P and b1 − W1 P mu, in float64, returned in params' dtype."""
        W1P = params.W1.astype(np.float64) @ self.P
        b1 = params.b1 - W1P @ self.mu
        dt = params.W1.dtype
        return Params(W1P.astype(dt), b1.astype(dt), params.W2.copy(), params.b2.copy())


def whitening(eig: Eigen, spec: WhitenSpec) -> Whitening:
    """The whitening `spec` asks for, from the training rows' eigen-decomposition (spec.kind must not be "none")."""
    if not spec.on:
        raise ValueError("whitening() needs kind 'pca' or 'zca'")
    d = len(eig.values)
    k = kept(eig.values, spec.keep) if spec.kind == "pca" else d
    lam = eig.values[:k]
    if spec.eps == 0 and lam[-1] <= 0:
        raise ValueError("the training covariance is singular: whiten_eps must be > 0 (or keep less with pca)")
    scale = 1 / np.sqrt(lam + spec.eps)
    s = 1 / math.sqrt(float(np.sum(lam * scale**2)) / d)  # unit average variance per input
    U = eig.vectors[:, :k]
    P = (U * (s * scale)) @ U.T
    P = (P + P.T) / 2  # exactly symmetric, so apply() may use P as Pᵀ
    h = hashlib.sha256(f"whiten={spec.kind};eps={spec.eps!r};keep={spec.keep!r};k={k};".encode())
    h.update(np.ascontiguousarray(P, "<f8").tobytes())
    h.update(np.ascontiguousarray(eig.mu, "<f8").tobytes())
    return Whitening(spec, P, eig.mu, k, h.hexdigest())


def whiten_dataset(ds, spec: WhitenSpec, eig: Eigen | None = None):
    """A copy of a CIFAR-10 Dataset with every part whitened by `spec`, fitted on ds.X_train and its mirror images
    (or taken from `eig`, that fit); the copy's `whitening` holds what was applied (and folds it)."""
    w = whitening(eig if eig is not None else fit(ds.X_train, mirror_permutation()), spec)
    return dataclasses.replace(ds, X_train=w.apply(ds.X_train), X_val=w.apply(ds.X_val), X_test=w.apply(ds.X_test),
                               whitening=w)
