"""model.cifar10.unpickle: hostile, corrupt and odd files are one DataError naming the file, and nothing in them runs.
(Genuine files: test_unpickle_genuine.py; mutation fuzzing: test_unpickle_fuzz.py.)"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from model.cifar10 import DataError, load_batch, opcodes, unpickle
from tests.cifar_fixtures import write_batch
from tests.pickle_ops import (
    APPEND,
    BUILD,
    EMPTY_DICT,
    EMPTY_LIST,
    FALSE,
    MARK,
    REDUCE,
    SETITEM,
    TUPLE,
    TUPLE2,
    TUPLE3,
    Asm,
    py2_batch,
)
from tests.test_unpickle_genuine import batch


def refused(tmp_path: Path, raw: bytes, match: str = "", name: str = "data_batch_1") -> str:
    """Write raw, load it, expect one DataError line naming the file; return the message."""
    path = tmp_path / name
    path.unlink(missing_ok=True)  # on ext4, overwriting a file in place costs ~1 ms (a flush on truncate)
    path.write_bytes(raw)
    with pytest.raises(DataError) as err:
        load_batch(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert match in message, message
    return message


# ------------------------------------------------------------------------------------------
# Hostile files: each is one DataError naming the file, and nothing in it runs


def scalar_exploit(core: str = "numpy.core", code: bytes = b"O", flags: int = 0) -> bytes:
    """scalar(dtype with its flags rewritten by BUILD, 8 bytes): NumPy would take the bytes for a
    PyObject*. Assembled here and never unpickled with the real pickle module (it crashes it)."""
    a = Asm(2).glob(f"{core}.multiarray", "scalar")
    a.dtype(code, (3, b"|", None, None, None, -1, -1, flags))
    return a.bytes(struct.pack("<Q", 0x4141414141414141)).raw(TUPLE2, REDUCE).done()


def dtype_then_scalar() -> bytes:
    """The same chain with the dtype built first, so the refusal must come from the dtype itself."""
    a = Asm(2).dtype(b"O", (3, b"|", None, None, None, -1, -1, 0)).glob("numpy.core.multiarray", "scalar")
    return a.raw(b"\x86").done()


def object_array() -> bytes:
    return Asm(2).raw(EMPTY_DICT).py2str(b"data").array((1, 1), b"\0" * 8, code=b"O").raw(SETITEM).done()


def with_dtype_state(state: tuple, code: bytes = b"u1") -> bytes:
    X, _ = batch(1)
    return Asm(2).raw(EMPTY_DICT).py2str(b"data").array(X.shape, X.tobytes(), code=code, state=state) \
        .raw(SETITEM).done()


def global_call(module: str, name: str, arg: str, stack: bool = False) -> bytes:
    a = Asm(4)
    (a.stack_glob if stack else a.glob)(module, name)
    return a.text(arg).raw(b"\x85", REDUCE).done()


def shape_and_bytes(shape, nbytes: int) -> bytes:
    return Asm(2).raw(EMPTY_DICT).py2str(b"data").array(shape, b"\7" * nbytes).raw(SETITEM).done()


class Reduce:
    """Pickles as a call of func(*args): what the real pickler writes for a hostile object."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file content, text the refusal must contain)."""
    touch = f"open({str(marker)!r}, 'w').close()"
    X, _ = batch(1)
    oob: list = []
    out_of_band = pickle.dumps({"data": X}, protocol=5, buffer_callback=oob.append)
    deep = Asm(4).raw(*[EMPTY_LIST] * 20, *[APPEND] * 19).done()
    cycle = Asm(2).raw(EMPTY_LIST, b"q\x00", b"h\x00", APPEND).done()
    return {
        "scalar exploit, numpy.core": (scalar_exploit(), "names numpy.core.multiarray.scalar"),
        "scalar exploit, numpy._core": (scalar_exploit("numpy._core"), "names numpy._core.multiarray.scalar"),
        "scalar exploit, u1 dtype with flags": (scalar_exploit(code=b"u1", flags=0x3F), "names"),
        "dtype O, then scalar": (dtype_then_scalar(), "asks for dtype"),
        "object array": (object_array(), "asks for dtype"),
        "object array, real pickler": (pickle.dumps({"data": np.array([1, "x"], dtype=object)}), "dtype"),
        "float array": (pickle.dumps({"data": X.astype(np.float32)}), "asks for dtype"),
        "big-endian labels": (pickle.dumps({"labels": np.zeros(3, ">i8")}), "not the standard"),
        "dtype flags": (with_dtype_state((3, b"|", None, None, None, -1, -1, 0x3F)), "not the standard"),
        "dtype elsize": (with_dtype_state((3, b"|", None, None, None, 8, 1, 0)), "not the standard"),
        "dtype byte order": (with_dtype_state((3, b">", None, None, None, -1, -1, 0)), "not the standard"),
        "dtype fields": (with_dtype_state((3, b"|", None, (b"a",), (b"x",), -1, -1, 0)), "not the standard"),
        "dtype version 4": (with_dtype_state((4, b"|", None, None, None, -1, -1, 0, None)), "not the standard"),
        "dtype flags as bool": (with_dtype_state((3, b"|", None, None, None, -1, -1, False)), "not the standard"),
        "scalar": (global_call("numpy.core.multiarray", "scalar", "x"), "names numpy.core.multiarray.scalar"),
        "os.system": (pickle.dumps(Reduce(os.system, f"touch {marker}")), "names posix.system"),
        "subprocess.Popen": (pickle.dumps(Reduce(subprocess.Popen, ["touch", str(marker)])), "names subprocess"),
        "builtins.eval": (pickle.dumps(Reduce(eval, touch)), "names builtins.eval"),
        "builtins.exec hidden in a batch": (
            pickle.dumps({b"data": Reduce(exec, touch), b"labels": [0]}, protocol=4), "names builtins.exec"),
        "hand-made exec": (global_call("builtins", "exec", touch), "names builtins.exec"),
        "hand-made STACK_GLOBAL": (global_call("builtins", "exec", touch, stack=True), "names builtins.exec"),
        "numpy.load": (global_call("numpy", "load", str(marker)), "names numpy.load"),
        "numpy runstring": (global_call("numpy.testing._private.utils", "runstring", touch), "names"),
        "copyreg": (global_call("copyreg", "_reconstructor", "x"), "names copyreg._reconstructor"),
        "ndarray called": (Asm(2).glob("numpy", "ndarray").value((3,)).raw(REDUCE).done(), "never writes"),
        "codecs rot13": (Asm(2).glob("_codecs", "encode").value(("x", "rot13")).raw(REDUCE).done(), "latin1"),
        "shape vs bytes": (shape_and_bytes((2, 3072), 3072), "3,072 bytes of data, not 6,144"),
        "huge shape": (shape_and_bytes((10**12, 3072), 3072), "more than any batch holds"),
        "zero-size huge shape": (shape_and_bytes((0, 2**62), 0), "more than any batch holds"),
        "negative shape": (shape_and_bytes((-1, 3072), 3072), "shape (-1, 3072)"),
        "5-d shape": (shape_and_bytes((1, 1, 1, 1, 3072), 3072), "shape"),
        "out-of-band buffer": (out_of_band, "out-of-band buffer"),
        "deep nesting": (deep, "nests deeper"),
        "self-reference": (cycle, "nests deeper"),
        "too many MARKs": (Asm(2).raw(MARK * 20).done(), "nested MARKs"),
        "unknown opcode": (b"\x80\x02\xff.", "unknown opcode"),
        "INST": (b"\x80\x02(i__main__\nX\n.", "INST"),
        "OBJ": (b"\x80\x02(cos\nsystem\no.", "names os.system"),
        "NEWOBJ": (Asm(4).raw(EMPTY_DICT, b")", b"\x81").done(), "NEWOBJ"),
        "protocol-0 STRING": (b"\x80\x02S'\\q'\n.", "STRING"),
        "BINFLOAT": (b"\x80\x02G" + struct.pack(">d", 0.5) + b".", "BINFLOAT"),
        "EXT1": (b"\x80\x02\x82\x01.", "EXT1"),
        "BINPERSID": (b"\x80\x02N" + b"Q.", "BINPERSID"),
        "protocol 0": (b"cos\nsystem\n(S'true'\ntR.", "protocol 2 or later"),
        "two values at STOP": (b"\x80\x02NN.", "leaves 2 values"),
        "open MARK at STOP": (b"\x80\x02(N.", "open MARKs"),
        "nothing at STOP": (b"\x80\x02.", "leaves 0 values"),
        "data after STOP": (b"\x80\x02N." + b"cos\nsystem\n", "after the pickle's STOP"),
        "unknown memo": (b"\x80\x02h\x05.", "memo entry 5"),
        "list as key": (Asm(2).raw(EMPTY_DICT, EMPTY_LIST, b"N", SETITEM).done(), "as a key"),
        "REDUCE on a dict": (Asm(2).raw(EMPTY_DICT, b")", REDUCE).done(), "calls a dict"),
        "BUILD on a dict": (Asm(2).raw(EMPTY_DICT, EMPTY_DICT, BUILD).done(), "sets the state of a dict"),
        "array without BUILD": (
            Asm(2).glob("numpy.core.multiarray", "_reconstruct").glob("numpy", "ndarray").value((0,))
            .py2str(b"b").raw(TUPLE3, REDUCE).done(), "unfinished array"),
        "array built twice": (
            Asm(2).raw(MARK).array((1,), b"\0").int(1).raw(BUILD, TUPLE).done(), "sets the state of a ndarray"),
        "huge LONG1": (b"\x80\x02\x8a\x09" + b"\xff" * 8 + b"\x7f.", "beyond 64 bits"),
        "BINBYTES8 claiming 2**62": (b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc", "truncated or corrupt"),
        "BINUNICODE8 claiming 2**62": (b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"abc", "truncated or corrupt"),
        "bad UTF-8": (b"\x80\x04\x8c\x02\xff\xfe.", "truncated or corrupt"),
        "empty file": (b"", "truncated"),
        "backslash in GLOBAL": (b"\x80\x02cos\\q\nsystem\n.", "names os"),
        "FALSE as a MARK": (Asm(2).raw(FALSE, TUPLE).done(), "no MARK"),
    }


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("kind", list(hostile(Path("m"))))
def test_hostile_file_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "MARKER"
    raw, match = hostile(marker)[kind]
    refused(tmp_path, raw, match)
    assert not marker.exists()


def test_huge_length_fields_allocate_nothing(tmp_path):
    path = tmp_path / "b"
    for op in (b"\x8e", b"\x8d", b"\x96"):  # BINBYTES8, BINUNICODE8, BYTEARRAY8
        path.write_bytes(b"\x80\x05" + op + struct.pack("<Q", 2**62) + b"x" * 100)
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match="truncated or corrupt"):
                load_batch(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, peak


def test_file_size_cap(tmp_path, monkeypatch):
    X, y = batch()
    path = write_batch(tmp_path / "b", X, y)
    monkeypatch.setattr(unpickle, "MAX_FILE_BYTES", path.stat().st_size - 1)
    refused(tmp_path, path.read_bytes(), "bytes, more than any batch", name="b")


def test_opcode_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(opcodes, "MAX_OPS", 50)
    refused(tmp_path, Asm(2).raw(EMPTY_LIST, MARK, *[b"N"] * 60, b"e").done(), "more than 50 opcodes")


def test_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "data_batch_1"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_batch(fifo)


@pytest.mark.parametrize("where", ["missing", "folder"])
def test_missing_file_or_folder(tmp_path, where):
    path = tmp_path / "data_batch_1"
    if where == "folder":
        path.mkdir()
    with pytest.raises(DataError, match="file not found" if where == "missing" else "is a folder"):
        load_batch(path)


@pytest.mark.filterwarnings("error")
def test_every_truncation_is_a_data_error(tmp_path):
    X, y = batch(1)
    for raw in (py2_batch(X, y), pickle.dumps({"data": X, "labels": y}, protocol=5)):
        start = raw.find(X.tobytes())
        # Every cut in the structure, every 64th in the pixel bytes.
        for cut in [*range(start + 1), *range(start + 1, start + 3072, 64), *range(start + 3072, len(raw))]:
            refused(tmp_path, raw[:cut])
