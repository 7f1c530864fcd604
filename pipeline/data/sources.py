"""Where the data comes from: --data-dir / HPSEARCH_DATA, else a download; read once per process."""

from __future__ import annotations

import functools
import gc
from pathlib import Path

from model import cifar10, whiten
from model.augment import mirror_permutation
from pipeline.errors import UserError

DOWNLOAD_DIR = cifar10.DEFAULT_DOWNLOAD_DIR  # written once, in model.cifar10
# model/ words its hints without option names; this is where they come from on the command line.
_HINT_OPTION = "(the data folder is --data-dir or HPSEARCH_DATA)"


def resolve(data_dir: Path | None, say=None) -> Path:
    """The cifar-10-batches-py folder to use, downloading the official archive when none is given."""
    try:
        return cifar10.ensure(data_dir, download_to=DOWNLOAD_DIR, progress=_download_progress(say))
    except cifar10.DataError as e:
        raise UserError(f"{e} {_HINT_OPTION}") from None


def origin(data_dir: Path | None) -> str:
    """Where the data comes from, as runs record it: the data folder given, else the URL it is downloaded from."""
    if data_dir is None:
        return cifar10.fetch.URL  # read at call time, as the download does: a mirror is configured by setting it
    return str(Path(data_dir).expanduser().absolute())


def _download_progress(say):
    """Reports a download in steps of 10 %; its first call says that a download started at all."""
    last = [None]

    def report(done: int, total: int | None) -> None:
        if not say:
            return
        if last[0] is None:
            last[0] = -1
            say(f"no --data-dir given: downloading CIFAR-10 to {DOWNLOAD_DIR}/ (170 MB)")
        if total:
            pct = int(100 * done / total)
            if pct // 10 != last[0]:
                last[0] = pct // 10
                say(f"  downloaded {done / 1e6:.0f} / {total / 1e6:.0f} MB")

    return report


@functools.lru_cache(maxsize=1)
def batches(folder: Path, split: str) -> cifar10.Batches:
    """The files, read once per process: every split a worker needs (the searches', each confirm seed's
    validation block, the final's 49k/1k) is cut from them."""
    try:
        return cifar10.read_batches(folder, split)
    except cifar10.DataError as e:
        raise UserError(str(e)) from None


NO_WHITENING = whiten.WhitenSpec()
_held: dict[tuple, cifar10.Dataset] = {}  # the one normalised split this process holds


def _normalised(folder: Path, split: str, val_size: int, val_fold: int = 0) -> cifar10.Dataset:
    """The split, normalised once per process and split (the coarse and fine stages share it). One split at a
    time: the one held is let go before the next is made, so two never take memory at once."""
    key = (folder, split, val_size, val_fold)
    if key not in _held:
        _let_go(_held)
        try:
            cifar10.check_split(split, val_size, val_fold)
            _held[key] = cifar10.split_dataset(batches(folder, "exercise" if split == "exercise" else "holdout"),
                                               split, val_size, val_fold)
        except cifar10.DataError as e:
            raise UserError(str(e)) from None
    return _held[key]


@functools.lru_cache(maxsize=1)  # the covariance and its eigh take 10-25 s at 45k rows: once per split
def _eigen(folder: Path, split: str, val_size: int, val_fold: int = 0) -> whiten.Eigen:
    return whiten.fit(_normalised(folder, split, val_size, val_fold).X_train, mirror_permutation())


_whitened: dict[tuple, cifar10.Dataset] = {}  # the one whitened copy (as large as the split) this process holds


def _let_go(held: dict) -> None:
    """Drop the held copy before the next is made, and collect the reference cycles that may still hold it: a
    pruned trial's exception keeps its frames (and so the training's arrays) alive in a cycle with the frame that
    caught it, until the collector runs. Without this a wide search's worker held 3–4 whitened copies, 5.9 GB."""
    if held:
        held.clear()
        gc.collect()


def dataset(folder: Path, split: str, val_size: int, val_fold: int = 0,
            whitening: whiten.WhitenSpec = NO_WHITENING) -> cifar10.Dataset:
    """The split, normalised once per process and split (the coarse and fine stages share it), and whitened as
    `whitening` says, fitted on the training part only; one whitened copy at a time, like the split."""
    data = _normalised(folder, split, val_size, val_fold)
    key = (folder, split, val_size, val_fold, whitening)
    if key not in _whitened:
        _let_go(_whitened)
        if not whitening.on:
            return data
        try:
            _whitened[key] = whiten.whiten_dataset(data, whitening, _eigen(folder, split, val_size, val_fold))
        except ValueError as e:
            raise UserError(f"whitening: {e}") from None
    return _whitened[key]
