"""Reading the official archive safely: every member checked before anything is written, then extracted.

The checks refuse everything tarfile's ``filter="data"`` would refuse or change in a way that matters: a name
that lands outside the target (absolute, a drive, a ``..`` part), links, devices and fifos, and set-user-ID,
set-group-ID or sticky bits. The official archive holds none of these, so each is a one-line DataError.

Extraction then uses the data filter where this Python has it (3.12+, and 3.10.12 / 3.11.4 as a security
backport), as a second guard. Where it has none (Debian 12's 3.11.2), the checks are the guard, and the
members they let through, folders and plain files, are written as the filter would leave them: the contents
only, owned by this process and with its default permissions, never the archive's owner or mode.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from model.cifar10.layout import HINT_DATA_DIR, HINT_REFETCH, DataError

_HIGH_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
# FilterError exists only where the data filter does; an empty tuple catches nothing
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


def has_data_filter() -> bool:
    """Whether this Python's tarfile has extraction filters (read at call time: tests take it away)."""
    return hasattr(tarfile, "data_filter")


def _escapes(name: str) -> bool:
    """A name that could land outside the target: absolute, with a drive, or with a '..' part, read with '/'
    and with '\\' as separators (tarfile on Windows takes both)."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return posix.is_absolute() or bool(windows.drive or windows.root) or ".." in posix.parts + windows.parts


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that could write outside the target folder, are not plain files or folders, or carry
    permission bits a data set never needs."""
    if _escapes(member.name):
        raise DataError(f"{archive}: refused member {member.name!r}: it would land outside the "
                        f"target folder; the archive is not the official one, {HINT_REFETCH}")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refused member {member.name!r}: links and special files are "
                        f"not part of the CIFAR archive; {HINT_REFETCH}")
    if member.mode & _HIGH_BITS:
        raise DataError(f"{archive}: refused member {member.name!r}: it carries set-user-ID, set-group-ID or "
                        f"sticky bits ({stat.filemode(member.mode)}), which the CIFAR archive has not; {HINT_REFETCH}")


def extract_into(archive: Path, into: Path) -> None:
    """Check every member of archive, then extract them all into the folder into (a fresh one)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads the whole index: a corrupt archive fails here
            for m in members:
                check_member(m, archive)
            if has_data_filter():
                tar.extractall(into, members=members, filter="data")
            else:
                _write_checked(tar, members, into)
    except FileNotFoundError:
        raise DataError(f"{archive}: archive not found; {HINT_DATA_DIR}") from None
    except _FILTER_ERROR as e:
        raise DataError(f"{archive}: refused member: {e}; {HINT_REFETCH}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: cannot extract, the archive is corrupt or not a .tar.gz "
                        f"({type(e).__name__}: {e}); {HINT_REFETCH}") from None


def _write_checked(tar: tarfile.TarFile, members: list[tarfile.TarInfo], into: Path) -> None:
    """Where tarfile has no data filter: the folders, and the plain files' contents, nothing else.

    members: all passed check_member, so each name is relative, without '..', and only folders and
    files remain (no link that a later name could be written through).
    """
    for m in members:
        path = into.joinpath(*PurePosixPath(m.name).parts)
        if m.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(m) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
