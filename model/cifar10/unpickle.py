"""Reading a CIFAR batch pickle without letting it run code: an allow-list of globals."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy._core.multiarray as _multiarray
import numpy._core.numeric as _numeric

from model.cifar10.layout import HINT_DATA_DIR, HINT_REFETCH, DataError


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
                f"the file is not genuine CIFAR-10 data, {HINT_REFETCH}"
            ) from None


# Everything a truncated or scrambled pickle can throw at the unpickler; a wild length field can
# ask for more memory than exists, which is corruption too, not a real out-of-memory.
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError)


def read_pickle(path: Path) -> Any:
    """The object a batch file holds; DataError naming the file for anything else."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {HINT_DATA_DIR}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a CIFAR batch file") from None
    except _CORRUPT as e:
        raise DataError(f"{path}: not a readable CIFAR batch (truncated or corrupt: "
                        f"{type(e).__name__}: {e}); {HINT_REFETCH}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
