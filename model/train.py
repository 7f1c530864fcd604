"""Mini-batch gradient descent with the cyclical learning rate.

Pure: arrays and settings in, parameters and history out; progress goes to a callback the caller
passes in (the pipeline uses it to log to MLflow, report to Optuna and prune).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from model.augment import Augmenter
from model.augment import D as IMAGE_SIZE
from model.average import average, is_cycle_end, snapshot
from model.network import Params, evaluate, init_params
from model.schedule import cyclic_eta
from model.step import Step

N_CLASSES = 10


class DivergedError(ArithmeticError):
    """Training produced a non-finite cost: λ or η too large for this data."""

    def __init__(self, step: int, detail: str = "non-finite cost"):
        super().__init__(f"training diverged at step {step}: {detail}; try a smaller λ or eta_max")
        self.step = step
        self.detail = detail


@dataclass(frozen=True)
class TrainSettings:
    """One training run's hyper-parameters (the report's names)."""

    lam: float = 0.01
    hidden: int = 50
    batch_size: int = 100
    eta_min: float = 1e-5
    eta_max: float = 1e-1
    n_s: int = 500
    cycles: int = 1
    checkpoints_per_cycle: int = 10
    seed: int = 0
    eval_chunk: int = 5000
    train_eval_size: int = 0  # train metrics on this many seeded training samples; 0 = all of them
    # Options the search can use; all off by default, which trains exactly as without them.
    augment: bool = False  # random horizontal flips and shifts of each batch (CIFAR rows only)
    shift: int = 0  # with augment: largest shift in pixels on each axis, zero fill (0 = flips only)
    dropout: float = 0.0  # probability of dropping a hidden unit in training (inverted dropout)
    tta_flip: bool = False  # for the caller's final evaluation: evaluate(..., tta_flip=True)
    label_smoothing: float = 0.0  # train against (1 − α)·one-hot + α/10 (metrics stay the plain cross-entropy)
    average_cycles: int = 0  # return the mean of the weights at the ends of the last k cycles (SWA); 0 = off

    def __post_init__(self):
        for name in ("hidden", "batch_size", "n_s", "cycles", "checkpoints_per_cycle", "eval_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1; got {getattr(self, name)}")
        if self.train_eval_size < 0:
            raise ValueError(f"train_eval_size must be ≥ 0 (0 = the whole training set); got {self.train_eval_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        if not 0 <= self.shift < 32:
            raise ValueError(f"shift must be in 0..31 pixels; got {self.shift}")
        if self.lam < 0:
            raise ValueError(f"λ must be ≥ 0; got {self.lam}")
        if not 0 <= self.average_cycles <= self.cycles:
            raise ValueError(f"average_cycles must be in 0..cycles ({self.cycles}); got {self.average_cycles}")
        if not 0 < self.eta_min <= self.eta_max:
            raise ValueError(f"need 0 < eta_min ≤ eta_max; got {self.eta_min}, {self.eta_max}")

    @property
    def total_steps(self) -> int:
        return 2 * self.n_s * self.cycles

    def checkpoint_steps(self) -> list[int]:
        """Evenly spaced update steps at which to evaluate; the last is the end of training."""
        n = self.checkpoints_per_cycle * self.cycles
        return sorted({max(1, round(i * self.total_steps / n)) for i in range(1, n + 1)})


METRICS = ("train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "val_accuracy", "eta")


@dataclass
class TrainResult:
    params: Params  # the trained network: the last weights, or their average over the last cycle ends
    history: dict[str, list] = field(default_factory=lambda: {"step": [], **{k: [] for k in METRICS}})
    cycle_ends: list[Params] = field(default_factory=list)  # with average_cycles: the averaged snapshots
    last: Params | None = None  # with average_cycles: the weights at the end of training, not averaged
    averaged: dict | None = None  # with average_cycles: the average's metrics at the end (history: the last's)

    def final(self, key: str = "val_accuracy") -> float:
        """The returned network's metric at the end of training (the average's when averaging)."""
        return self.averaged[key] if self.averaged is not None else self.history[key][-1]


Checkpoint = Callable[[int, dict], None]

# Generators for the options, derived from the seed but independent of the training stream
# (default_rng(seed) itself), so turning an option on or off leaves the training draws unchanged.
STREAMS = {"train_eval": 1, "augment": 2, "dropout": 3}


def stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[name]])


def train_eval_rows(n: int, s: TrainSettings) -> np.ndarray | None:
    """Sorted indices of the fixed training subset the checkpoints evaluate; None = all n rows."""
    if s.train_eval_size == 0 or s.train_eval_size >= n:
        return None
    return np.sort(stream(s.seed, "train_eval").choice(n, s.train_eval_size, replace=False))


def checkpoint_metrics(params: Params, train_set, val_set, s: TrainSettings, step: int) -> dict:
    """Train and validation loss, cost, accuracy, and η at this step."""
    out = {"eta": cyclic_eta(step, s.eta_min, s.eta_max, s.n_s)}
    for prefix, (X, y) in (("train", train_set), ("val", val_set)):
        out |= {f"{prefix}_{k}": v for k, v in evaluate(params, X, y, s.lam, s.eval_chunk).items()}
    return out


def batches(n: int, B: int, rng: np.random.Generator):
    """Index arrays of B samples, a fresh permutation each epoch; the partial last batch is dropped."""
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - B + 1, B):
            yield perm[i : i + B]


def train(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    settings: TrainSettings,
    on_checkpoint: Checkpoint | None = None,
) -> TrainResult:
    """Train the network for settings.cycles cycles (2·n_s·cycles update steps).

    X: (n, d) float32 C-contiguous, y: (n,) int labels; X_val, y_val likewise. At each checkpoint
    step, train and validation loss/cost/accuracy and η are appended to the history and passed to
    on_checkpoint(step, metrics); an exception raised there stops training and propagates.
    Train metrics cover the whole of X, or train_eval_size rows of it; validation all of X_val.
    With augment (CIFAR rows only) each batch is flipped and shifted at random; with dropout the
    hidden layer is masked in training only. Raises DivergedError when the cost stops being finite.
    """
    s = settings
    n, d = X.shape
    if s.batch_size > n:
        raise ValueError(f"batch_size {s.batch_size} is larger than the training set ({n} samples)")
    if s.augment and d != IMAGE_SIZE:
        raise ValueError(f"augment needs CIFAR rows of {IMAGE_SIZE} values (3 × 32 × 32); got {d}")
    rng = np.random.default_rng(s.seed)
    params = init_params(d, s.hidden, N_CLASSES, rng, dtype=X.dtype)
    # Column-major W1 makes W1.T a row-major (d, m) matrix: both big GEMMs of a step (X @ W1.T and
    # GH.T @ X into dW1) run 10-25 % faster in OpenBLAS. Same values; the step's dW1 inherits it.
    params.W1 = np.asfortranarray(params.W1)
    step = Step(params, s.batch_size, s.dropout, stream(s.seed, "dropout") if s.dropout else None, s.label_smoothing)
    augment = Augmenter(s.batch_size, s.shift, X.dtype) if s.augment else None
    augment_rng = stream(s.seed, "augment") if s.augment else None
    result = TrainResult(params)
    # Gathering each batch into one small buffer avoids copying the whole set every epoch.
    Xb = np.empty((s.batch_size, d), dtype=X.dtype)
    yb = np.empty(s.batch_size, dtype=np.intp)
    order = batches(n, s.batch_size, rng)
    rows = train_eval_rows(n, s)
    # One copy of the subset per training (train_eval_size × 12 KB) rather than a gather per checkpoint.
    train_eval = (X, y) if rows is None else (X[rows], y[rows])
    start = 0
    for stop in s.checkpoint_steps():
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected by the step
            for t in range(start, stop):
                idx = next(order)
                np.take(X, idx, axis=0, out=Xb, mode="clip")  # 'clip' avoids a full-size temporary
                np.take(y, idx, out=yb, mode="clip")
                Xt = Xb if augment is None else augment(Xb, augment_rng)
                if not step(params, Xt, yb, cyclic_eta(t, s.eta_min, s.eta_max, s.n_s), s.lam):
                    raise DivergedError(t, "non-finite class probabilities")
            start = stop
            metrics = checkpoint_metrics(params, train_eval, (X_val, y_val), s, stop)
        if not (np.isfinite(metrics["train_cost"]) and np.isfinite(metrics["val_cost"])):
            raise DivergedError(stop)
        result.history["step"].append(stop)
        for k in METRICS:
            result.history[k].append(metrics[k])
        if on_checkpoint is not None:
            on_checkpoint(stop, metrics)
        if s.average_cycles and is_cycle_end(stop, s.n_s) and stop // (2 * s.n_s) > s.cycles - s.average_cycles:
            result.cycle_ends.append(snapshot(params))
    params.W1 = np.ascontiguousarray(params.W1)  # callers get the usual row-major layout back
    if s.average_cycles:
        result.last, result.params = params, average(result.cycle_ends)
        result.averaged = checkpoint_metrics(result.params, train_eval, (X_val, y_val), s, start)
    return result
