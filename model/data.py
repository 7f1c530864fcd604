"""CIFAR-10 in its "python version" layout: safe loading, download + checksum, splits, normalisation.

Pure NumPy and the standard library. Every problem a user can cause (missing or corrupt files, a
bad checksum, a hostile pickle, a bad split) raises :class:`DataError` with one line that names
the file and says what to do next.

Typical use::

    ds = load_dataset(ensure(data_dir="~/data"), split="holdout", val_size=5000)
    ds.X_train  # (45000, 3072) float32, per-feature standardised with the training statistics
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy._core.multiarray as _multiarray
import numpy._core.numeric as _numeric

CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"

ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
DEFAULT_DOWNLOAD_DIR = Path("data")
D = 3072                      # 32 x 32 x 3, channel-major rows as in the official files
SPLITS = ("holdout", "exercise")
MAX_VAL_SIZE = 49_999         # the official training set has 50,000 images; keep one to train on

# Rows per step when reducing or normalising: keeps temporaries to a few MB instead of a
# full-size float64 copy (50k x 3072 x 8 B = 1.2 GB), and ~1k rows measured fastest here.
_CHUNK = 1024
_DOWNLOAD_CHUNK = 1 << 20

_HINT_DATA_DIR = ("pass --data-dir pointing at a folder holding cifar-10-batches-py "
                  "(or cifar-10-python.tar.gz), or omit it to download")
_HINT_REFETCH = "delete it and download or extract the dataset again"

Progress = Callable[[int, int | None], None]


class DataError(Exception):
    """A problem with the data a user can fix; the message is one line saying what and how."""


# --------------------------------------------------------------------------------------------
# Safe unpickling


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch pickle needs: NumPy array and dtype reconstruction.

    Both the NumPy 1.x module path (``numpy.core``, as in the official Python 2 files) and the
    2.x one (``numpy._core``) map to the same objects, resolved here rather than imported by
    name, so a refused pickle cannot even trigger a module import.
    """
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _multiarray.scalar
        # Protocol 5 pickles of arrays (pickle.dumps(..., protocol=5)) rebuild through this.
        allowed[(f"{core}.numeric", "_frombuffer")] = _numeric._frombuffer
    # Python 3 writes bytes as _codecs.encode(text, "latin1") in protocols 0-2; admit that one
    # use only, since other codecs can be looked up (and imported) by name.
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) "
                                     f"is not a bytes literal")
    return text.encode("latin1")


_ALLOWED = _allowed_globals()


class _SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only allow-listed globals, so no pickled payload can run."""

    def __init__(self, file: Any, path: Path) -> None:
        # encoding="bytes" as in the official loader: Python 2 str fields arrive as bytes.
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refused to unpickle {module}.{name}: not part of a CIFAR batch; "
                f"the file is not genuine CIFAR-10 data, {_HINT_REFETCH}"
            ) from None


# Everything a truncated or scrambled pickle can throw at the unpickler; a wild length field can
# ask for more memory than exists, which is corruption too, not a real out-of-memory.
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError)


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {_HINT_DATA_DIR}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a CIFAR batch file") from None
    except _CORRUPT as e:
        raise DataError(f"{path}: not a readable CIFAR batch (truncated or corrupt: "
                        f"{type(e).__name__}: {e}); {_HINT_REFETCH}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _field(batch: dict, key: str, path: Path) -> Any:
    """``batch[key]`` whether the pickle has bytes keys (official files) or str keys."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"{path}: no {key!r} entry (keys: {sorted(map(repr, batch))}); {_HINT_REFETCH}")


def _check_data(data: Any, path: Path) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: 'data' is a {type(data).__name__}, expected a uint8 array; {_HINT_REFETCH}")
    # No silent reshape: an (n, 3, 32, 32) or flat array means the file is not the CIFAR layout.
    if data.ndim != 2 or data.shape[1] != D:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (n, {D}); {_HINT_REFETCH}")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' has dtype {data.dtype}, expected uint8; {_HINT_REFETCH}")
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no images; {_HINT_REFETCH}")
    return data


def _check_labels(labels: Any, n: int, path: Path) -> np.ndarray:
    if not isinstance(labels, list | tuple | np.ndarray):
        raise DataError(f"{path}: 'labels' is a {type(labels).__name__}, expected a list of ints")
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be a flat list of ints; got dtype {y.dtype}, "
                        f"shape {y.shape}; {_HINT_REFETCH}")
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels for {n} images; {_HINT_REFETCH}")
    bad = (y < 0) | (y > 9)
    if bad.any():
        raise DataError(f"{path}: label {y[bad][0]} at index {int(np.argmax(bad))} is outside 0..9; "
                        f"{_HINT_REFETCH}")
    return y.astype(np.int64)


def load_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 batch file safely.

    Returns X: (n, 3072) uint8 C-contiguous, y: (n,) int64 in 0..9.
    Raises DataError naming the file if it is missing, truncated, corrupt, hostile or mis-shaped.
    """
    path = Path(path)
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}, expected a dict with "
                        f"'data' and 'labels'; {_HINT_REFETCH}")
    X = _check_data(_field(batch, "data", path), path)
    y = _check_labels(_field(batch, "labels", path), X.shape[0], path)
    # The protocol-5 route yields a read-only view of the pickle's buffer; callers may write.
    if not (X.flags.c_contiguous and X.flags.writeable):
        X = np.array(X, order="C")
    return X, y


# --------------------------------------------------------------------------------------------
# Finding, downloading and extracting


def _missing_files(folder: Path) -> list[str]:
    return [f for f in (*TRAIN_FILES, TEST_FILE) if not (folder / f).is_file()]


def _is_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz"))


def locate(source: str | os.PathLike) -> Path:
    """Find the cifar-10-batches-py folder from what a user points at.

    source: the batches folder itself, the folder above it (or a folder holding only the
    archive), or the archive cifar-10-python.tar.gz, which is extracted next to itself once;
    a complete earlier extraction is reused. Returns the batches folder with all 6 batch files.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise DataError(f"{src}: not found; {_HINT_DATA_DIR}")
    if src.is_file():
        if not _is_archive(src):
            raise DataError(f"{src}: is a file but not {ARCHIVE_NAME}; {_HINT_DATA_DIR}")
        return _from_archive(src)
    if src.name == BATCHES_DIR or (src / TRAIN_FILES[0]).is_file():
        folder = src
    elif (src / ARCHIVE_NAME).is_file():
        return _from_archive(src / ARCHIVE_NAME)  # reuses a complete extraction beside it
    elif (src / BATCHES_DIR).is_dir():
        folder = src / BATCHES_DIR
    else:
        raise DataError(f"{src}: holds no {BATCHES_DIR} folder and no {ARCHIVE_NAME}; {_HINT_DATA_DIR}")
    _require_complete(folder)
    return folder


def _require_complete(folder: Path) -> None:
    missing = _missing_files(folder)
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; the copy is incomplete, "
                        f"delete the folder and download or extract the dataset again")


def _from_archive(archive: Path) -> Path:
    folder = archive.parent / BATCHES_DIR
    if not (folder.is_dir() and not _missing_files(folder)):
        folder = extract(archive, archive.parent)
    _require_complete(folder)
    return folder


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(_DOWNLOAD_CHUNK):
            h.update(block)
    return h.hexdigest()


def download(dest_dir: str | os.PathLike, url: str = URL, md5: str = MD5,
             progress: Progress | None = None, timeout: float = 60) -> Path:
    """Download the archive to dest_dir/cifar-10-python.tar.gz and verify its MD5 before use.

    Streams into a ``.part`` file, calling ``progress(bytes_done, bytes_total_or_None)`` per
    chunk, and renames it only once the checksum matches; a failed or mismatching download
    leaves no ``.part`` behind. An existing archive with the right checksum is reused.
    """
    dest_dir = Path(dest_dir).expanduser()
    final = dest_dir / ARCHIVE_NAME
    if final.is_file() and _md5(final) == md5.lower():
        return final
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest_dir}: cannot create the download folder: {e.strerror or e}") from None
    part = final.with_name(ARCHIVE_NAME + ".part")
    try:
        got = _fetch(url, part, progress, timeout)
        if got != md5.lower():
            raise DataError(f"{url}: checksum mismatch: expected md5 {md5.lower()}, got {got}; "
                            f"deleted {part.name}; try again, or download it by hand and pass --data-dir")
        os.replace(part, final)
    finally:
        # Whatever went wrong (network, checksum, Ctrl-C), a half file must not look usable.
        part.unlink(missing_ok=True)
    return final


def _fetch(url: str, part: Path, progress: Progress | None, timeout: float) -> str:
    """Stream url into part; return the MD5 hex digest of what was received."""
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while block := resp.read(_DOWNLOAD_CHUNK):
                out.write(block)
                h.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed: HTTP {e.code} {e.reason}; "
                        f"check the URL, or download it by hand and pass --data-dir") from None
    except urllib.error.URLError as e:
        raise DataError(f"{url}: download failed: {e.reason}; check the network, "
                        f"or download it by hand and pass --data-dir") from None
    except (OSError, ValueError) as e:  # timeouts, resets, disk full, malformed URL
        raise DataError(f"{url}: download failed: {e}; check the network and free disk space, "
                        f"or download it by hand and pass --data-dir") from None
    if total is not None and done != total:
        raise DataError(f"{url}: download incomplete: {done} of {total} bytes; try again")
    return h.hexdigest()


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that could write outside the target folder or are not plain files."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts:
        raise DataError(f"{archive}: refused member {member.name!r}: it would land outside the "
                        f"target folder; the archive is not the official one, {_HINT_REFETCH}")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refused member {member.name!r}: links and special files are "
                        f"not part of the CIFAR archive; {_HINT_REFETCH}")


def extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract the archive into dest_dir and return dest_dir/cifar-10-batches-py.

    Every member is checked before anything is written, and extraction runs with
    ``filter="data"`` as a second guard, so nothing lands outside dest_dir. Files go to a
    staging folder first and are moved into place at the end: an interrupted extraction never
    leaves a half-filled cifar-10-batches-py that a later run would trust.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    target = dest_dir / BATCHES_DIR
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=dest_dir))
    except OSError as e:
        raise DataError(f"{dest_dir}: cannot extract here: {e.strerror or e}") from None
    try:
        _extract_checked(archive, staging)
        extracted = staging / BATCHES_DIR
        if not extracted.is_dir():
            raise DataError(f"{archive}: has no {BATCHES_DIR} folder; it is not {ARCHIVE_NAME}, "
                            f"{_HINT_REFETCH}")
        if target.is_dir() and not _missing_files(target):
            return target  # another process finished first; its copy is as good as ours
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier extraction
        os.replace(extracted, target)
    except OSError as e:
        raise DataError(f"{dest_dir}: extraction failed: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_checked(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads the whole index: a corrupt archive fails here
            for m in members:
                _check_member(m, archive)
            tar.extractall(into, members=members, filter="data")
    except FileNotFoundError:
        raise DataError(f"{archive}: archive not found; {_HINT_DATA_DIR}") from None
    except tarfile.FilterError as e:
        raise DataError(f"{archive}: refused member: {e}; {_HINT_REFETCH}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: cannot extract, the archive is corrupt or not a .tar.gz "
                        f"({type(e).__name__}: {e}); {_HINT_REFETCH}") from None


def ensure(data_dir: str | os.PathLike | None = None, download_to: str | os.PathLike | None = None,
           progress: Progress | None = None) -> Path:
    """Return the cifar-10-batches-py folder, downloading and extracting it if needed.

    data_dir given: use it (see :func:`locate`), never download. Otherwise look in download_to
    (default ``./data``), reuse a complete copy there, else download, verify and extract.
    """
    if data_dir is not None:
        return locate(data_dir)
    dest = Path(download_to if download_to is not None else DEFAULT_DOWNLOAD_DIR).expanduser()
    if (dest / BATCHES_DIR).is_dir() and not _missing_files(dest / BATCHES_DIR):
        return dest / BATCHES_DIR
    # URL and MD5 are read at call time so a mirror can be configured by setting them.
    return locate(download(dest, url=URL, md5=MD5, progress=progress))


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
    number of validation images actually used.
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

    def __repr__(self) -> str:
        return (f"Dataset(split={self.split!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, digest={self.digest[:12]}…)")


Block = tuple[np.ndarray, np.ndarray]  # (X uint8 rows, y int64) of one part of a split


def check_split(split: str, val_size: int) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "holdout" and (isinstance(val_size, bool) or not isinstance(val_size, int | np.integer)
                               or not 1 <= val_size <= MAX_VAL_SIZE):
        raise DataError(f"val_size must be an integer in 1..{MAX_VAL_SIZE}; got {val_size!r}")


def _holdout_blocks(batches: list[Block], val_size: int, folder: Path) -> tuple[list[Block], list[Block]]:
    """Split the training batches, in file order, into train rows and the LAST val_size rows."""
    total = sum(len(y) for _, y in batches)
    if val_size >= total:
        raise DataError(f"{folder}: val_size {val_size} leaves no training images; the training "
                        f"batches hold {total} images, choose a smaller val_size")
    n_train = total - val_size
    train: list[Block] = []
    val: list[Block] = []
    start = 0
    for X, y in batches:
        cut = min(max(n_train - start, 0), len(y))  # rows of this batch that still train
        if cut > 0:
            train.append((X[:cut], y[:cut]))
        if cut < len(y):
            val.append((X[cut:], y[cut:]))
        start += len(y)
    return train, val


def _hash_part(h: Any, name: str, blocks: list[Block]) -> None:
    n = sum(len(y) for _, y in blocks)
    h.update(f"{name}:{n}x{D};".encode())
    for X, _ in blocks:
        h.update(np.ascontiguousarray(X).data)
    for _, y in blocks:
        h.update(y.astype("<i8").tobytes())


def _labels(blocks: list[Block]) -> np.ndarray:
    return np.concatenate([y for _, y in blocks]).astype(np.int64)


def _finish_part(blocks: list[Block], mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a part, dropping its raw blocks as they are used."""
    y = _labels(blocks)
    images = [X for X, _ in blocks]
    blocks.clear()
    return standardise(images, mean, std), y


def load_dataset(source: str | os.PathLike, split: str = "holdout", val_size: int = 5000) -> Dataset:
    """Load, split and normalise CIFAR-10 from anything :func:`locate` accepts.

    split "exercise": train data_batch_1, validate data_batch_2 (val_size ignored).
    split "holdout": the 5 training batches in order; the last val_size images validate, the
    rest train. Test is always test_batch. Normalisation uses the training part's statistics.
    """
    check_split(split, val_size)
    folder = locate(source)
    if split == "exercise":
        train, val = [load_batch(folder / TRAIN_FILES[0])], [load_batch(folder / TRAIN_FILES[1])]
    else:
        train, val = _holdout_blocks([load_batch(folder / f) for f in TRAIN_FILES], val_size, folder)
    n_val = sum(len(y) for _, y in val)

    h = hashlib.sha256(f"cifar-10;split={split};val_size={n_val};".encode())
    _hash_part(h, "train", train)
    _hash_part(h, "val", val)
    mean, std = feature_stats([X for X, _ in train])
    X_train, y_train = _finish_part(train, mean, std)
    X_val, y_val = _finish_part(val, mean, std)
    # The test batch is read only now, once the training batches are freed.
    test = [load_batch(folder / TEST_FILE)]
    _hash_part(h, "test", test)
    X_test, y_test = _finish_part(test, mean, std)
    return Dataset(X_train, y_train, X_val, y_val, X_test, y_test, mean, std,
                   h.hexdigest(), split, n_val)
