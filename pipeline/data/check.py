"""`hpsearch data check`: what each CIFAR-10 file holds, read safely, and the digest runs record.

For every batch file: its sample count, how many images each class has (fewest..most), its md5;
for batches.meta the class names. For a folder holding the whole dataset, the digest that the
search stages record as ``data.digest`` (holdout split, val_size 5000). A file that cannot be read
is one ``error: FILE: reason`` line and the others are still checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model import cifar10

Echo = Callable[[str], None]
# Shipped in the official folder beside the batches; not a pickle.
NOT_BATCHES = frozenset({"readme.html"})


def check(paths: list[Path], echo: Echo, err: Echo) -> int:
    """Check each batch file or folder; 1 if any file failed, else 0."""
    failed = False
    for path in paths:
        path = Path(path).expanduser()
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            path = path.parent  # an archive: check what was extracted beside it
        if path.is_dir():
            failed |= _check_folder(path, echo, err)
        else:
            failed |= _check_file(path, path.name, str(path), {}, echo, err)
    return 1 if failed else 0


def _check_folder(path: Path, echo: Echo, err: Echo) -> bool:
    folder = path / cifar10.BATCHES_DIR if (path / cifar10.BATCHES_DIR).is_dir() else path
    # Hidden files (the download lock, staging folders) and sub-folders are not data.
    try:
        files = sorted(p for p in folder.iterdir()
                       if not p.name.startswith(".") and p.name not in NOT_BATCHES and not p.is_dir())
    except OSError as e:
        err(f"error: {folder}: cannot list the folder: {e.strerror or e}")
        return True
    echo(f"{folder}")
    if not files:
        err(f"error: {folder}: holds no batch files; point at the folder holding {cifar10.BATCHES_DIR}")
        return True
    width = max(len(p.name) for p in files)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    failed = False
    for p in files:
        failed |= _check_file(p, p.name, f"  {p.name:<{width}}", batches, echo, err)
    echo(_digest_line(folder, batches))
    return failed


def _check_file(path: Path, name: str, label: str, batches: dict, echo: Echo, err: Echo) -> bool:
    """Print one file's line, keeping the arrays of the official batch names in batches; True if it failed."""
    try:
        if name == cifar10.META_FILE:
            names = cifar10.load_meta(path)
            what = f"class names {' '.join(names)}"
        else:
            X, y = cifar10.load_batch(path)
            counts = np.bincount(y, minlength=len(cifar10.CLASSES))
            what = f"{len(y):>6} images, {counts.min()}–{counts.max()} per class"
            if name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
                batches[name] = (X, y)
        echo(f"{label}  md5 {_md5(path)}  {what}")
        return False
    except cifar10.DataError as e:  # names the file already
        err(f"error: {e}")
    except OSError as e:  # gone or unreadable between the two reads
        err(f"error: {path}: cannot read: {e.strerror or e}")
    return True


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _digest_line(folder: Path, batches: dict) -> str:
    wanted = (*cifar10.TRAIN_FILES, cifar10.TEST_FILE)
    missing = [name for name in wanted if name not in batches]
    if missing:
        return (f"not a complete dataset (missing or unreadable: {', '.join(missing)}), "
                f"so no digest")
    try:
        digest = cifar10.dataset_digest([batches[n] for n in cifar10.TRAIN_FILES], batches[cifar10.TEST_FILE],
                                        "holdout", cifar10.DEFAULT_VAL_SIZE, folder)
    except cifar10.DataError as e:  # too few images for the default split
        return f"no digest: {e}"
    return f"digest {digest} (holdout split, val_size {cifar10.DEFAULT_VAL_SIZE}: the data.digest of search runs)"
