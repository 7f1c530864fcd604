"""NumPy arrays as NumPy pickles them, recognised by pattern and built here from checked pieces.

NumPy writes an array as ``_reconstruct(ndarray, (0,), b'b')`` followed by BUILD with the state
``(1, shape, dtype, is_fortran, raw_bytes)``, or in protocol 5 as ``_frombuffer(raw, dtype, shape,
order)``; the dtype is ``dtype(code, False, True)`` followed by BUILD with its state. Real unpickling
calls those functions with whatever the file says, and a forged dtype state is enough to make NumPy
read pointers from the file. Here the globals are inert markers, a dtype must be one of three plain
codes with exactly its standard state, and the array is made by ``np.frombuffer`` once the byte
count matches the shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from model.cifar10.opcodes import Refused, clip, short

MAX_ARRAY_BYTES = 1 << 30     # all arrays of one file together; an official batch holds 31 MB
MAX_NDIM = 4

# dtype code -> (the dtype built, the byte order its pickled state must name). uint8 is the pixel
# data; labels are a list of ints in the official files, int arrays are accepted too.
DTYPES = {"u1": ("|u1", "|"), "i4": ("<i4", "<"), "i8": ("<i8", "<")}
GLOBALS = {
    **{(f"{core}.multiarray", "_reconstruct"): "reconstruct" for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.numeric", "_frombuffer"): "frombuffer" for core in ("numpy.core", "numpy._core")},
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",          # how Python 3 writes bytes in protocol 2
    ("__builtin__", "bytes"): "bytes",        # ... and empty bytes
    ("builtins", "bytes"): "bytes",
}


class Global:
    """A function or class the file names: never imported, never called."""

    __slots__ = ("kind",)
    what = "global"

    def __init__(self, kind: str) -> None:
        self.kind = kind


class DType:
    """numpy.dtype(code) as the file asks for it; BUILD must then give the standard state."""

    __slots__ = ("code", "built")
    what = "dtype"

    def __init__(self, code: str) -> None:
        self.code, self.built = code, False


class Partial:
    """_reconstruct(ndarray, (0,), b'b'), waiting for the BUILD that gives its contents."""

    __slots__ = ()
    what = "array (no BUILD)"


def _is_int(value: Any, *allowed: int) -> bool:
    return type(value) is int and (not allowed or value in allowed)


def _is_flag(value: Any, flag: bool) -> bool:
    """False/True, or 0/1 as NumPy 1.x under Python 2 wrote dtype arguments."""
    return type(value) in (bool, int) and value == flag


def _text(value: Any) -> str | None:
    """A str, or a Python 2 str read as bytes; None for anything else."""
    if type(value) is str:
        return value
    return value.decode("latin-1") if type(value) is bytes else None


def _kind(value: Any) -> str:
    return getattr(value, "what", type(value).__name__)


class ArrayRebuilder:
    """The Rebuilder for CIFAR batches: NumPy arrays and the bytes Python 3 writes in protocol 2."""

    finished = (np.ndarray,)

    def __init__(self) -> None:
        self.array_bytes = 0

    def find(self, module: str, name: str) -> Global:
        kind = GLOBALS.get((module, name))
        if kind is None:
            raise Refused(f"names {clip(repr(module)[1:-1])}.{clip(repr(name)[1:-1])}, which a CIFAR batch never "
                          f"needs (it only rebuilds NumPy arrays)")
        return Global(kind)

    def reduce(self, func: Any, args: tuple) -> Any:
        kind = func.kind if type(func) is Global else None
        if kind == "reconstruct":
            if not (len(args) == 3 and type(args[0]) is Global and args[0].kind == "ndarray"
                    and type(args[1]) is tuple and len(args[1]) == 1 and _is_int(args[1][0], 0)
                    and type(args[2]) is bytes and args[2] == b"b"):
                raise Refused(f"calls _reconstruct with {short(args)}, not (ndarray, (0,), b'b')")
            return Partial()
        if kind == "dtype":
            code = _text(args[0]) if len(args) == 3 else None
            if code not in DTYPES or not (_is_flag(args[1], False) and _is_flag(args[2], True)):
                raise Refused(f"asks for dtype{short(args)}; batches use {', '.join(DTYPES)}")
            return DType(code)
        if kind == "encode":
            if not (len(args) == 2 and type(args[0]) is str and _text(args[1]) in ("latin1", "latin-1")):
                raise Refused(f"calls _codecs.encode{short(args)}; only latin1 text stands for bytes")
            try:
                return args[0].encode("latin-1")
            except UnicodeEncodeError:
                raise Refused("has latin1 bytes with characters beyond latin1") from None
        if kind == "bytes" and args == ():
            return b""
        if kind == "frombuffer" and len(args) == 4 and type(args[3]) is str and args[3] in ("C", "F"):
            buffer, dtype, shape, order = args
            return self._array(shape, dtype, order == "F", buffer)
        raise Refused(f"calls a {_kind(func) if kind is None else kind} with {short(args)}, "
                      f"which NumPy never writes")

    def build(self, obj: Any, state: Any) -> Any:
        if type(obj) is DType and not obj.built:
            order = DTYPES[obj.code][1]
            if not (type(state) is tuple and len(state) == 8 and _is_int(state[0], 3)
                    and _text(state[1]) == order and all(v is None for v in state[2:5])
                    and all(_is_int(v) for v in state[5:]) and state[5:] == (-1, -1, 0)):
                raise Refused(f"sets dtype {obj.code} to {short(state)}, not the standard "
                              f"(3, {order!r}, None, None, None, -1, -1, 0)")
            obj.built = True
            return obj
        if type(obj) is Partial:
            if not (type(state) is tuple and len(state) == 5 and _is_int(state[0], 1)
                    and type(state[3]) in (bool, int) and state[3] in (0, 1)):
                raise Refused(f"sets an array to {short(state)}, not (1, shape, dtype, fortran, bytes)")
            return self._array(state[1], state[2], bool(state[3]), state[4])
        raise Refused(f"sets the state of a {_kind(obj)}; only NumPy arrays and dtypes are rebuilt")

    def _array(self, shape: Any, dtype: Any, fortran: bool, raw: Any) -> np.ndarray:
        """The array NumPy would rebuild, made here: a fresh, writable, C-contiguous copy."""
        if type(dtype) is not DType or not dtype.built:
            raise Refused(f"gives an array the dtype {short(dtype)}")
        if type(raw) not in (bytes, bytearray):
            raise Refused(f"gives an array its data as a {_kind(raw)}, not bytes")
        if not (type(shape) is tuple and len(shape) <= MAX_NDIM and all(_is_int(n) and n >= 0 for n in shape)):
            raise Refused(f"gives an array the shape {short(shape)}")
        dt = np.dtype(DTYPES[dtype.code][0])
        count = math.prod(shape)
        # Zero-size dimensions count as 1 here, so (0, 2**62) is refused before NumPy sees it.
        if math.prod(max(n, 1) for n in shape) * dt.itemsize > MAX_ARRAY_BYTES - self.array_bytes:
            raise Refused(f"asks for an array of shape {short(shape)}, more than any batch holds")
        if len(raw) != count * dt.itemsize:
            raise Refused(f"gives an array of shape {short(shape)} and dtype {dt} {len(raw):,} bytes "
                          f"of data, not {count * dt.itemsize:,}")
        self.array_bytes += len(raw)
        flat = np.frombuffer(raw, dt, count)
        return np.array(flat.reshape(shape, order="F" if fortran else "C"), order="C")
