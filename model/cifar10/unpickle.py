"""Reading a CIFAR batch pickle without running anything from it.

``pickle.Unpickler``, even with an allow-list of globals, calls what the file names with arguments
the file chooses: ``numpy.dtype`` plus BUILD can forge an object dtype, and NumPy's ``scalar`` then
takes bytes from the file for a pointer (a crash, or code execution). So nothing here calls into the
file's objects: opcodes.py interprets the opcode stream with a small stack machine, and ndarrays.py
recognises NumPy's array pattern and builds the array itself. Everything else is refused with a
:class:`DataError` naming the file.

Accepted: the official Python 2 files (protocol 2, ``numpy.core``, str fields read as bytes) and
files written by Python 3 with protocols 2 to 5 (``numpy._core``; bytes via ``_codecs.encode`` in
protocol 2, in-band ``_frombuffer`` in protocol 5).
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

from model.cifar10.layout import HINT_DATA_DIR, HINT_REFETCH, DataError
from model.cifar10.ndarrays import ArrayRebuilder
from model.cifar10.opcodes import Machine, Refused, clip

MAX_FILE_BYTES = 1 << 30      # an official batch is 31 MB


def _read_capped(path: Path) -> bytes:
    """The file's bytes, read once; refuses anything but a regular file of a plausible size."""
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):
            raise Refused("is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise Refused(f"is {info.st_size:,} bytes, more than any batch ({MAX_FILE_BYTES:,} allowed)")
        # read(n) allocates n bytes up front: ask for the size on disk (+1 to notice growth), no more.
        with open(fd, "rb", closefd=False) as f:
            data = f.read(info.st_size + 1)
    finally:
        os.close(fd)
    if len(data) > info.st_size:
        raise Refused("changed size while being read; try again once it is complete")
    return data


def read_pickle(path: str | os.PathLike) -> Any:
    """The value a batch file holds: dicts, lists, tuples, bytes, str, ints, None and NumPy arrays.

    Raises DataError naming the file if it is missing, unreadable, truncated, corrupt or asks for
    anything else; nothing from the file is ever called.
    """
    path = Path(path)
    try:
        # A BytesIO over the whole file: a length field larger than the file reads what is there
        # and fails the length check, instead of allocating what the field claims.
        return Machine(io.BytesIO(_read_capped(path)), ArrayRebuilder()).run()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {HINT_DATA_DIR}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a CIFAR batch file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except Refused as e:
        raise DataError(f"{path}: not a CIFAR batch: {e}; {HINT_REFETCH}") from None
    except ValueError as e:  # pickletools' readers on a short or garbled argument
        raise DataError(f"{path}: not a readable CIFAR batch (truncated or corrupt: {clip(str(e))}); "
                        f"{HINT_REFETCH}") from None
