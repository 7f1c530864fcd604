"""Finding the batches folder, and downloading, verifying and extracting the official archive."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from model.cifar10.archive import extract_into
from model.cifar10.layout import (
    ARCHIVE_NAME,
    BATCHES_DIR,
    DEFAULT_DOWNLOAD_DIR,
    HINT_DATA_DIR,
    HINT_REFETCH,
    TRAIN_FILES,
    DataError,
    missing_files,
)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"

LOCK_NAME = ".cifar-10.lock"

_DOWNLOAD_CHUNK = 1 << 20
_HINT_BY_HAND = "or download it by hand and point the data folder at it"

Progress = Callable[[int, int | None], None]


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
        raise DataError(f"{src}: not found; {HINT_DATA_DIR}")
    if src.is_file():
        if not _is_archive(src):
            raise DataError(f"{src}: is a file but not {ARCHIVE_NAME}; {HINT_DATA_DIR}")
        return _from_archive(src)
    if src.name == BATCHES_DIR or (src / TRAIN_FILES[0]).is_file():
        folder = src
    elif (src / ARCHIVE_NAME).is_file():
        return _from_archive(src / ARCHIVE_NAME)  # reuses a complete extraction beside it
    elif (src / BATCHES_DIR).is_dir():
        folder = src / BATCHES_DIR
    else:
        raise DataError(f"{src}: holds no {BATCHES_DIR} folder and no {ARCHIVE_NAME}; {HINT_DATA_DIR}")
    _require_complete(folder)
    return folder


def _require_complete(folder: Path) -> None:
    missing = missing_files(folder)
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; the copy is incomplete, "
                        f"delete the folder and download or extract the dataset again")


def _complete(folder: Path) -> bool:
    return folder.is_dir() and not missing_files(folder)


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive lock on folder's lock file: one download or extraction at a time per folder.

    filelock's FileLock (flock on POSIX, LockFileEx on Windows): every call opens its own lock file, so threads
    exclude each other too, and the system drops it when a process dies: no stale lock to clean up.
    """
    from filelock import FileLock  # imported here: reading batches needs no lock

    lock = FileLock(folder / LOCK_NAME, mode=0o644)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:
        raise DataError(f"{folder}: cannot lock the folder for download or extraction: "
                        f"{e.strerror or e}") from None
    try:
        yield
    finally:
        lock.release()


def _from_archive(archive: Path) -> Path:
    folder = archive.parent / BATCHES_DIR
    if not _complete(folder):
        with _locked(archive.parent):
            if not _complete(folder):  # another process may have extracted it while we waited
                _extract(archive, archive.parent)
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

    Holds the folder's lock, streams into a temporary file of its own, calling
    ``progress(bytes_done, bytes_total_or_None)`` per chunk, and renames it only once the MD5 of
    what is on disk matches; a failed download leaves no temporary file. An existing archive with
    the right checksum is reused.
    """
    dest_dir = Path(dest_dir).expanduser()
    with _locked(dest_dir):
        return _download(dest_dir, url, md5, progress, timeout)


def _download(dest_dir: Path, url: str, md5: str, progress: Progress | None, timeout: float) -> Path:
    final = dest_dir / ARCHIVE_NAME
    if final.is_file() and _md5(final) == md5.lower():
        return final
    for stale in dest_dir.glob(f"{ARCHIVE_NAME}.*.part"):  # left by a killed download; we hold the lock
        stale.unlink(missing_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f"{ARCHIVE_NAME}.", suffix=".part", dir=dest_dir)
    except OSError as e:
        raise DataError(f"{dest_dir}: cannot create the download file: {e.strerror or e}") from None
    part = Path(name)
    try:
        _fetch(url, fd, progress, timeout)
        # The checksum of the file as stored, not of the bytes as received: a bad disk or a
        # concurrent writer shows up here.
        got = _md5(part)
        if got != md5.lower():
            raise DataError(f"{url}: checksum mismatch: expected md5 {md5.lower()}, got {got} for the "
                            f"file on disk; deleted it; try again, {_HINT_BY_HAND}")
        os.replace(part, final)
    finally:
        # Whatever went wrong (network, checksum, Ctrl-C), a half file must not look usable.
        part.unlink(missing_ok=True)
    return final


def _fetch(url: str, fd: int, progress: Progress | None, timeout: float) -> None:
    """Stream url into the open file fd (closing it), flushed to disk."""
    try:
        with open(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while block := resp.read(_DOWNLOAD_CHUNK):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed: HTTP {e.code} {e.reason}; "
                        f"check the URL, {_HINT_BY_HAND}") from None
    except urllib.error.URLError as e:
        raise DataError(f"{url}: download failed: {e.reason}; check the network, {_HINT_BY_HAND}") from None
    except (OSError, ValueError) as e:  # timeouts, resets, disk full, malformed URL
        raise DataError(f"{url}: download failed: {e}; check the network and free disk space, "
                        f"{_HINT_BY_HAND}") from None
    if total is not None and done != total:
        raise DataError(f"{url}: download incomplete: {done} of {total} bytes; try again")


def extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract the archive into dest_dir and return dest_dir/cifar-10-batches-py.

    Every member is checked before anything is written, and extraction runs with tarfile's data
    filter as a second guard where Python has it (model.cifar10.archive), so nothing lands outside
    dest_dir. Files go to a staging folder first and are moved into place at the end, under
    dest_dir's lock: an interrupted extraction never leaves a half-filled cifar-10-batches-py that a later run would
    trust, and a complete copy, another process's included, is kept as it is.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    with _locked(dest_dir):
        return _extract(archive, dest_dir)


def _extract(archive: Path, dest_dir: Path) -> Path:
    target = dest_dir / BATCHES_DIR
    try:
        staging = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=dest_dir))
    except OSError as e:
        raise DataError(f"{dest_dir}: cannot extract here: {e.strerror or e}") from None
    try:
        extract_into(archive, staging)
        extracted = staging / BATCHES_DIR
        if not extracted.is_dir():
            raise DataError(f"{archive}: has no {BATCHES_DIR} folder; it is not {ARCHIVE_NAME}, "
                            f"{HINT_REFETCH}")
        if _complete(target):
            return target  # complete already: keep it, never replace a copy someone may be reading
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier copy; we hold the lock, no one is writing it
        os.replace(extracted, target)
    except OSError as e:
        raise DataError(f"{dest_dir}: extraction failed: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure(data_dir: str | os.PathLike | None = None, download_to: str | os.PathLike | None = None,
           progress: Progress | None = None) -> Path:
    """Return the cifar-10-batches-py folder, downloading and extracting it if needed.

    data_dir given: use it (see :func:`locate`), never download. Otherwise look in download_to
    (default ``./data``), reuse a complete copy there, else download, verify and extract, all under
    the folder's lock so that processes started together download once.
    """
    if data_dir is not None:
        return locate(data_dir)
    dest = Path(download_to if download_to is not None else DEFAULT_DOWNLOAD_DIR).expanduser()
    folder = dest / BATCHES_DIR
    if not _complete(folder):
        with _locked(dest):
            if not _complete(folder):  # another process may have finished while we waited
                # URL and MD5 are read at call time so a mirror can be configured by setting them.
                _extract(_download(dest, URL, MD5, progress, timeout=60), dest)
    _require_complete(folder)
    return folder
