"""One batch file as arrays: the dict a CIFAR batch pickle holds, checked field by field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from model.cifar10.layout import CLASSES, HINT_REFETCH, D, DataError
from model.cifar10.unpickle import read_pickle


def _field(batch: dict, key: str, path: Path) -> Any:
    """``batch[key]`` whether the pickle has bytes keys (official files) or str keys."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"{path}: no {key!r} entry (keys: {sorted(map(repr, batch))}); {HINT_REFETCH}")


def _check_data(data: Any, path: Path) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: 'data' is a {type(data).__name__}, expected a uint8 array; {HINT_REFETCH}")
    # No silent reshape: an (n, 3, 32, 32) or flat array means the file is not the CIFAR layout.
    if data.ndim != 2 or data.shape[1] != D:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (n, {D}); {HINT_REFETCH}")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' has dtype {data.dtype}, expected uint8; {HINT_REFETCH}")
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no images; {HINT_REFETCH}")
    return data


def _check_labels(labels: Any, n: int, path: Path) -> np.ndarray:
    if not isinstance(labels, list | tuple | np.ndarray):
        raise DataError(f"{path}: 'labels' is a {type(labels).__name__}, expected a list of ints; {HINT_REFETCH}")
    # Checked before np.asarray, which would turn a mixed list into strings, objects or an error.
    if not isinstance(labels, np.ndarray) and not all(type(v) is int for v in labels):
        odd = next(v for v in labels if type(v) is not int)
        raise DataError(f"{path}: 'labels' holds a {type(odd).__name__}, expected only ints; {HINT_REFETCH}")
    y = np.asarray(labels, dtype=np.int64) if not isinstance(labels, np.ndarray) else labels
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be a flat list of ints; got dtype {y.dtype}, "
                        f"shape {y.shape}; {HINT_REFETCH}")
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels for {n} images; {HINT_REFETCH}")
    bad = (y < 0) | (y > 9)
    if bad.any():
        raise DataError(f"{path}: label {y[bad][0]} at index {int(np.argmax(bad))} is outside 0..9; "
                        f"{HINT_REFETCH}")
    return y.astype(np.int64)


def load_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 batch file safely.

    Returns X: (n, 3072) uint8 C-contiguous, y: (n,) int64 in 0..9.
    Raises DataError naming the file if it is missing, truncated, corrupt, hostile or mis-shaped.
    """
    path = Path(path)
    batch = read_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}, expected a dict with "
                        f"'data' and 'labels'; {HINT_REFETCH}")
    X = _check_data(_field(batch, "data", path), path)
    y = _check_labels(_field(batch, "labels", path), X.shape[0], path)
    return X, y  # read_pickle builds every array as a fresh C-contiguous copy


def load_meta(path: str | os.PathLike) -> tuple[str, ...]:
    """The class names in a batches.meta file, in label order (the official file: CLASSES)."""
    path = Path(path)
    meta = read_pickle(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: holds a {type(meta).__name__}, expected a dict with 'label_names'; "
                        f"{HINT_REFETCH}")
    names = _field(meta, "label_names", path)
    if not (isinstance(names, list) and len(names) == len(CLASSES)
            and all(type(v) in (bytes, str) and 0 < len(v) <= 100 for v in names)):
        raise DataError(f"{path}: 'label_names' is not a list of {len(CLASSES)} short names; {HINT_REFETCH}")
    try:
        return tuple(v.decode() if isinstance(v, bytes) else v for v in names)
    except UnicodeDecodeError:
        raise DataError(f"{path}: 'label_names' are not UTF-8 text; {HINT_REFETCH}") from None
