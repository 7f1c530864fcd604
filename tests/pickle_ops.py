"""Pickles assembled opcode by opcode: the official Python 2 layout, and hostile files.

Hostile files are built here as bytes and never given to the real pickle module: some of them
(the dtype-state + ``scalar`` chain) crash or take over the process that unpickles them.

    from tests.pickle_ops import Asm, py2_batch
    raw = py2_batch(X, labels)                 # what cPickle.dump wrote for the official batches
    a = Asm(2); a.glob("os", "system"); ...    # anything else, one opcode at a time
"""

from __future__ import annotations

import struct

import numpy as np

MARK, STOP, TUPLE, TUPLE1, TUPLE2, TUPLE3 = b"(", b".", b"t", b"\x85", b"\x86", b"\x87"
REDUCE, BUILD, NONE, TRUE, FALSE = b"R", b"b", b"N", b"\x88", b"\x89"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE = b"}", b"]", b")"
APPEND, APPENDS, SETITEM, SETITEMS = b"a", b"e", b"s", b"u"
STACK_GLOBAL, MEMOIZE = b"\x93", b"\x94"
U1_STATE = (3, b"|", None, None, None, -1, -1, 0)


class Asm:
    """Appends opcodes to a bytearray; put=True memoizes each value the way cPickle does."""

    def __init__(self, protocol: int | None = 2, put: bool = False) -> None:
        self.out = bytearray()
        self.put_all, self.n_put = put, 0
        if protocol is not None:
            self.out += b"\x80" + bytes([protocol])

    def raw(self, *ops: bytes) -> Asm:
        for op in ops:
            self.out += op
        return self

    def put(self) -> Asm:
        if self.put_all:
            self.out += (b"q" + bytes([self.n_put])) if self.n_put < 256 else (b"r" + struct.pack("<I", self.n_put))
            self.n_put += 1
        return self

    def glob(self, module: str, name: str) -> Asm:
        return self.raw(b"c" + f"{module}\n{name}\n".encode()).put()

    def stack_glob(self, module: str, name: str) -> Asm:
        return self.text(module).text(name).raw(STACK_GLOBAL)

    def int(self, n: int) -> Asm:
        if 0 <= n < 256:
            return self.raw(b"K" + bytes([n]))
        if 0 <= n < 65536:
            return self.raw(b"M" + struct.pack("<H", n))
        if -(2**31) <= n < 2**31:
            return self.raw(b"J" + struct.pack("<i", n))
        body = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return self.raw(b"\x8a" + bytes([len(body)]) + body)

    def text(self, s: str) -> Asm:
        b = s.encode()
        return self.raw(b"X" + struct.pack("<I", len(b)) + b).put()

    def py2str(self, b: bytes) -> Asm:
        """A Python 2 str: SHORT_BINSTRING or BINSTRING, read back as bytes."""
        op = (b"U" + bytes([len(b)])) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)))
        return self.raw(op + b).put()

    def bytes(self, b: bytes) -> Asm:
        return self.raw(b"B" + struct.pack("<I", len(b)) + b).put()

    def value(self, v) -> Asm:
        """None, bool, int, bytes (as Python 2 str), str, or a tuple of those."""
        if v is None:
            return self.raw(NONE)
        if isinstance(v, bool):
            return self.raw(TRUE if v else FALSE)
        if isinstance(v, int):
            return self.int(v)
        if isinstance(v, bytes):
            return self.py2str(v)
        if isinstance(v, str):
            return self.text(v)
        self.raw(MARK)
        for item in v:
            self.value(item)
        return self.raw(TUPLE).put()

    def dtype(self, code: bytes = b"u1", state: tuple = U1_STATE, flags=(0, 1)) -> Asm:
        """numpy.dtype(code, 0, 1) then BUILD state, as NumPy 1.x under Python 2 wrote it."""
        self.glob("numpy", "dtype").py2str(code).int(flags[0]).int(flags[1]).raw(TUPLE3, REDUCE).put()
        return self.value(state).raw(BUILD)

    def array(self, shape: tuple, raw: bytes, *, code: bytes = b"u1", state: tuple = U1_STATE,
              core: str = "numpy.core", fortran: bool = False) -> Asm:
        """_reconstruct(ndarray, (0,), 'b') then BUILD (1, shape, dtype, fortran, raw)."""
        self.glob(f"{core}.multiarray", "_reconstruct").glob("numpy", "ndarray")
        self.int(0).raw(TUPLE1).put().py2str(b"b").raw(TUPLE3).put().raw(REDUCE).put()
        self.raw(MARK).int(1).value(shape).dtype(code, state).raw(TRUE if fortran else FALSE)
        return self.py2str(raw).raw(TUPLE).put().raw(BUILD)

    def done(self) -> bytes:
        return bytes(self.out + STOP)


def py2_batch(X: np.ndarray, labels, label: bytes = b"training batch 1 of 5") -> bytes:
    """A batch as cPickle wrote the official files under Python 2: protocol 2, str keys read as bytes,
    numpy.core paths, dtype arguments 0/1, the pixels as one BINSTRING, everything memoized."""
    a = Asm(2, put=True).raw(EMPTY_DICT).put().raw(MARK)
    a.py2str(b"data").array(X.shape, X.tobytes())
    a.py2str(b"labels").raw(EMPTY_LIST).put()
    for i in range(0, len(labels), 1000):  # cPickle batches APPENDS by 1000
        a.raw(MARK)
        for v in labels[i:i + 1000]:
            a.int(int(v))
        a.raw(APPENDS)
    a.py2str(b"batch_label").py2str(label)
    a.py2str(b"filenames").raw(EMPTY_LIST).put().raw(MARK)
    for i in range(len(labels)):
        a.py2str(f"img_{i:05d}.png".encode())
    a.raw(APPENDS, SETITEMS)
    return a.done()
