"""CIFAR-10 as arrays ready to train on: splits, per-feature normalisation and the data digest.

Typical use::

    ds = load_dataset(ensure(data_dir="~/data"), split="holdout", val_size=5000)
    ds.X_train  # (45000, 3072) float32, per-feature standardised with the training statistics
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.cifar10.batch import load_batch
from model.cifar10.fetch import locate
from model.cifar10.layout import TEST_FILE, TRAIN_FILES, D, DataError

SPLITS = ("holdout", "exercise")
MAX_VAL_SIZE = 49_999         # the official training set has 50,000 images; keep one to train on
DEFAULT_VAL_SIZE = 5000       # the search stages' holdout (studies/coarse.toml), whose digest runs record

# Rows per step when reducing or normalising: keeps temporaries to a few MB instead of a
# full-size float64 copy (50k x 3072 x 8 B = 1.2 GB), and ~1k rows measured fastest here.
_CHUNK = 1024

# --------------------------------------------------------------------------------------------
# Normalisation

# A list of uint8 row blocks that together form one split part; lets the 5 training batches be
# treated as one matrix without concatenating them into a copy.
Parts = np.ndarray | Sequence[np.ndarray]


def _blocks(X: Parts) -> list[np.ndarray]:
    return [X] if isinstance(X, np.ndarray) else list(X)


def feature_stats(X: Parts) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of uint8 rows X: (n, 3072) or a list of such blocks.

    Returns mean, std: (3072,) float32; a constant feature gets std 1 so dividing is safe.
    Sums are accumulated exactly in int64 a chunk at a time (255² fits uint16), so there is no
    full-size float temporary and the result does not depend on the chunking.
    """
    blocks = _blocks(X)
    d = blocks[0].shape[1]
    s = np.zeros(d, np.int64)
    ss = np.zeros(d, np.int64)
    n = 0
    for B in blocks:
        for a in range(0, len(B), _CHUNK):
            c = B[a:a + _CHUNK]
            s += c.sum(axis=0, dtype=np.int64)
            ss += np.square(c, dtype=np.uint16).sum(axis=0, dtype=np.int64)
            n += len(c)
    if n == 0:
        raise DataError("no training images to compute the normalisation from")
    # n·Σx² − (Σx)² is an exact integer (fits int64 for n up to ~10⁷), so no cancellation error.
    var = (n * ss - s * s).astype(np.float64) / (float(n) * n)
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return (s / n).astype(np.float32), std.astype(np.float32)


def standardise(X: Parts, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(X - mean) / std into a new (n, 3072) float32 C-contiguous array.

    X: uint8 rows or a list of row blocks. If X is a list, blocks are removed from it as they are
    consumed, so the caller's raw data is freed while the float copy grows.
    """
    blocks = X if isinstance(X, list) else [X]
    out = np.empty((sum(len(B) for B in blocks), mean.shape[0]), np.float32)
    inv = (np.float32(1) / std).astype(np.float32)
    row = 0
    while blocks:
        B = blocks.pop(0)
        for a in range(0, len(B), _CHUNK):
            c = B[a:a + _CHUNK]
            o = out[row:row + len(c)]
            np.subtract(c, mean, out=o)  # uint8 - float32 -> float32, cast in small buffers
            np.multiply(o, inv, out=o)
            row += len(c)
        del B
    return out


def normalise(X_train: Parts, *others: Parts) -> tuple[np.ndarray, ...]:
    """Standardise X_train and others with X_train's per-feature statistics.

    X_*: uint8 (n, 3072) or lists of row blocks. Returns (X_train_n, *others_n, mean, std),
    arrays float32, mean/std (3072,).
    """
    mean, std = feature_stats(X_train)
    # _blocks copies the list, so the caller's lists are left intact.
    return (*(standardise(_blocks(X), mean, std) for X in (X_train, *others)), mean, std)


# --------------------------------------------------------------------------------------------
# Splits and the dataset


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Normalised CIFAR-10 split. X_*: (n, 3072) float32 C-contiguous; y_*: (n,) int64.

    mean, std: (3072,) float32 of the training part. digest: sha256 hex of the raw uint8 images
    and labels used (train, val, test in order) and the split description. val_size: the
    number of validation images actually used. whitening: see model.whiten.whiten_dataset.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    digest: str
    split: str
    val_size: int
    whitening: Any = None  # a model.whiten.Whitening applied to every part after the normalisation, or None

    def __repr__(self) -> str:
        return (f"Dataset(split={self.split!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, digest={self.digest[:12]}…)")


Block = tuple[np.ndarray, np.ndarray]  # (X uint8 rows, y int64) of one part of a split


def check_split(split: str, val_size: int, val_fold: int = 0) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split != "holdout":
        return
    if isinstance(val_size, bool) or not isinstance(val_size, int | np.integer) or not 1 <= val_size <= MAX_VAL_SIZE:
        raise DataError(f"val_size must be an integer in 1..{MAX_VAL_SIZE}; got {val_size!r}")
    folds = (MAX_VAL_SIZE + 1) // val_size  # whole blocks of val_size in the 50,000 training images
    if isinstance(val_fold, bool) or not isinstance(val_fold, int | np.integer) or not 0 <= val_fold < folds:
        raise DataError(f"val_fold must be an integer in 0..{folds - 1} with val_size {val_size} (a block of the "
                        f"training images); got {val_fold!r}")


def _holdout_blocks(batches: list[Block], val_size: int, folder: Path,
                    fold: int = 0) -> tuple[list[Block], list[Block]]:
    """Split the training batches, in file order, into train rows and a block of val_size rows: the last
    val_size rows for fold 0, the val_size rows before them for fold 1, and so on. Train keeps file order."""
    total = sum(len(y) for _, y in batches)
    if val_size >= total:
        raise DataError(f"{folder}: val_size {val_size} leaves no training images; the training "
                        f"batches hold {total} images, choose a smaller val_size")
    if (fold + 1) * val_size > total:
        raise DataError(f"{folder}: val_fold {fold} of val_size {val_size} needs {(fold + 1) * val_size} training "
                        f"images; the training batches hold {total}, choose a smaller val_fold")
    lo, hi = total - (fold + 1) * val_size, total - fold * val_size  # the validation rows [lo, hi)
    train: list[Block] = []
    val: list[Block] = []
    start = 0
    for X, y in batches:
        n = len(y)
        a, b = min(max(lo - start, 0), n), min(max(hi - start, 0), n)  # this batch's validation rows [a, b)
        for part, i, j in ((train, 0, a), (val, a, b), (train, b, n)):
            if j > i:
                part.append((X[i:j], y[i:j]))
        start += n
    return train, val


def _split(batches: list[Block], split: str, val_size: int,
           folder: str | os.PathLike, fold: int = 0) -> tuple[list[Block], list[Block]]:
    """(train, val) blocks of the training batches (data_batch_1.. in order; exercise needs two)."""
    if split == "exercise":
        return [batches[0]], [batches[1]]
    return _holdout_blocks(batches, val_size, Path(folder), fold)


def _hasher(split: str, val: list[Block], fold: int = 0) -> Any:
    folded = f"val_fold={fold};" if fold else ""  # fold 0 keeps the digests recorded before folds existed
    return hashlib.sha256(f"cifar-10;split={split};val_size={sum(len(y) for _, y in val)};{folded}".encode())


def _hash_part(h: Any, name: str, blocks: list[Block]) -> None:
    n = sum(len(y) for _, y in blocks)
    h.update(f"{name}:{n}x{D};".encode())
    for X, _ in blocks:
        h.update(np.ascontiguousarray(X).data)
    for _, y in blocks:
        h.update(y.astype("<i8").tobytes())


def dataset_digest(train_batches: Sequence[Block], test: Block, split: str = "holdout",
                   val_size: int = DEFAULT_VAL_SIZE, folder: str | os.PathLike = "", val_fold: int = 0) -> str:
    """The digest :func:`load_dataset` records, from the raw batches, without normalising anything.

    train_batches: (X uint8 (n, 3072), y) of data_batch_1..5 in order; test: that of test_batch.
    folder only names the data in errors.
    """
    check_split(split, val_size, val_fold)
    fold = val_fold if split == "holdout" else 0
    train, val = _split(list(train_batches), split, val_size, folder, fold)
    h = _hasher(split, val, fold)
    _hash_part(h, "train", train)
    _hash_part(h, "val", val)
    _hash_part(h, "test", [test])
    return h.hexdigest()


def _labels(blocks: list[Block]) -> np.ndarray:
    return np.concatenate([y for _, y in blocks]).astype(np.int64)


def _finish_part(blocks: list[Block], mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a part, dropping its raw blocks as they are used."""
    y = _labels(blocks)
    images = [X for X, _ in blocks]
    blocks.clear()
    return standardise(images, mean, std), y


@dataclass(frozen=True, eq=False, repr=False)
class Batches:
    """The raw files that splits are cut from: uint8 training batches in file order, and the test batch. Read
    once, any number of splits (validation blocks, sizes) can be sliced and normalised from them."""

    folder: Path
    train: tuple[Block, ...]
    test: Block


def read_batches(source: str | os.PathLike, split: str = "holdout") -> Batches:
    """The files a split needs (the exercise split: the first two training batches; holdout: all five)."""
    folder = locate(source)
    names = TRAIN_FILES[:2] if split == "exercise" else TRAIN_FILES
    return Batches(folder, tuple(load_batch(folder / f) for f in names), load_batch(folder / TEST_FILE))


def split_dataset(batches: Batches, split: str = "holdout", val_size: int = DEFAULT_VAL_SIZE,
                  val_fold: int = 0) -> Dataset:
    """Split and normalise read batches, as :func:`load_dataset` describes; the batches are left as they are."""
    return _split_taken([batches], split, val_size, val_fold)


def _split_taken(holder: list[Batches], split: str, val_size: int, val_fold: int) -> Dataset:
    """split_dataset on the batches popped from holder: if the caller keeps no other reference (load_dataset),
    each raw batch is freed once it is normalised. A list, not an argument: Python 3.10 holds a call's arguments
    until the call returns, which kept all the raw batches (184 MB on CIFAR-10) beside the float copies."""
    check_split(split, val_size, val_fold)
    fold = val_fold if split == "holdout" else 0
    batches = holder.pop()
    train, val = _split(list(batches.train), split, val_size, batches.folder, fold)
    test = [batches.test]
    del batches
    n_val = sum(len(y) for _, y in val)
    h = _hasher(split, val, fold)
    _hash_part(h, "train", train)
    _hash_part(h, "val", val)
    mean, std = feature_stats([X for X, _ in train])
    X_train, y_train = _finish_part(train, mean, std)
    X_val, y_val = _finish_part(val, mean, std)
    _hash_part(h, "test", test)
    X_test, y_test = _finish_part(test, mean, std)
    return Dataset(X_train, y_train, X_val, y_val, X_test, y_test, mean, std,
                   h.hexdigest(), split, n_val)


def load_dataset(source: str | os.PathLike, split: str = "holdout", val_size: int = DEFAULT_VAL_SIZE,
                 val_fold: int = 0) -> Dataset:
    """Load, split and normalise CIFAR-10 from anything :func:`locate` accepts.

    split "exercise": train data_batch_1, validate data_batch_2 (val_size, val_fold ignored).
    split "holdout": the 5 training batches in order; the last val_size images validate (val_fold 0),
    or the val_fold-th block of val_size images before them, and the rest train. Test is always
    test_batch. Normalisation uses the training part's statistics.
    """
    check_split(split, val_size, val_fold)
    return _split_taken([read_batches(source, split)], split, val_size, val_fold)
