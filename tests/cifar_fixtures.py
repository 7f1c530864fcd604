"""Small fake CIFAR-10 data in the official "python version" layout, for tests.

    from tests.cifar_fixtures import make_cifar
    folder = make_cifar(tmp_path, n_per_batch=200)   # tmp_path/cifar-10-batches-py
    ds = load_dataset(folder, "holdout", val_size=100)

The files are written the way the official ones are read (dicts with bytes keys, uint8
(n, 3072) data, labels as a list of ints), independently of model.cifar10's loader.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np

BATCHES_DIR = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
D = 3072


def write_batch(path: Path, X: np.ndarray, y, *, batch_label: bytes = b"training batch",
                protocol: int = 4) -> Path:
    """Write one batch file. X: (n, 3072) uint8; y: n ints in 0..9 (stored as a list)."""
    X = np.asarray(X)
    labels = [int(v) for v in y]
    batch = {
        b"batch_label": batch_label,
        b"labels": labels,
        b"data": X,
        b"filenames": [f"{CLASSES[v % 10]}_{i:05d}.png".encode() for i, v in enumerate(labels)],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return path


def _images(rng: np.random.Generator, y: np.ndarray, centres: np.ndarray | None) -> np.ndarray:
    """(n, 3072) uint8: class centre plus noise when learnable, else uniform noise."""
    if centres is None:
        return rng.integers(0, 256, size=(len(y), D), dtype=np.uint8)
    noisy = centres[y] + rng.normal(0.0, 48.0, size=(len(y), D)).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def make_cifar(root: Path, n_per_batch: int = 200, seed: int = 0, learnable: bool = True) -> Path:
    """Write root/cifar-10-batches-py with data_batch_1..5, test_batch and batches.meta.

    learnable: each class has its own random mean image and every image is that mean plus
    Gaussian noise (clipped to 0..255), so a linear model or small MLP learns it well above
    chance; otherwise pixels and labels are independent uniform noise.
    Returns the cifar-10-batches-py folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / BATCHES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    # Shared by train and test batches so that what is learnt carries over.
    centres = rng.uniform(64, 192, size=(10, D)).astype(np.float32) if learnable else None
    names = [(f"data_batch_{i}", f"training batch {i} of 5") for i in range(1, 6)]
    for name, label in [*names, ("test_batch", "testing batch 1 of 1")]:
        y = rng.integers(0, 10, size=n_per_batch)
        write_batch(folder / name, _images(rng, y, centres), y, batch_label=label.encode())
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": n_per_batch,
            b"num_vis": D}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=4)
    return folder


def make_archive(root: Path, out_dir: Path | None = None) -> Path:
    """Tar.gz root/cifar-10-batches-py as out_dir/cifar-10-python.tar.gz (out_dir defaults to root)."""
    out = Path(out_dir if out_dir is not None else root) / ARCHIVE_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        tar.add(Path(root) / BATCHES_DIR, arcname=BATCHES_DIR)
    return out


def md5_of(path: Path) -> str:
    """MD5 hex digest of a file, as download() checks it."""
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()
