"""model.cifar10.unpickle: genuine batches load; hostile, corrupt and odd files are one DataError and run nothing."""

from __future__ import annotations

import itertools
import os
import pickle
import pickletools
import struct
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from model.cifar10 import CLASSES, DataError, load_batch, load_meta, opcodes, unpickle
from model.cifar10.unpickle import read_pickle
from tests.cifar_fixtures import make_cifar, write_batch
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


def batch(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


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
# What genuine files look like


def test_official_python2_layout(tmp_path):
    X, y = batch()
    raw = py2_batch(X, y)
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    X2, y2 = load_batch(path)
    assert_array_equal(X2, X)
    assert_array_equal(y2, y)
    # The assembled file means to pickle what it means to us: nothing hostile in it, so this is safe.
    ref = pickle.loads(raw, encoding="bytes")
    assert set(ref) == {b"data", b"labels", b"batch_label", b"filenames"}
    ours = read_pickle(path)
    assert ours[b"filenames"] == ref[b"filenames"] and ours[b"batch_label"] == ref[b"batch_label"]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("keys", [bytes, str])
def test_python3_protocols_and_key_types(tmp_path, protocol, keys):
    X, y = batch()
    d = {keys(k, "ascii") if keys is bytes else k: v
         for k, v in {"data": X, "labels": y, "batch_label": b"", "filenames": [b"a.png", b"b.png"]}.items()}
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    X2, y2 = load_batch(path)
    assert_array_equal(X2, X)
    assert_array_equal(y2, y)
    assert X2.dtype == np.uint8 and X2.flags.c_contiguous and X2.flags.writeable and X2.shape == (20, 3072)
    assert y2.dtype == np.int64
    # The same value as the real unpickler gives for these benign files.
    ref, ours = pickle.loads(path.read_bytes(), encoding="bytes"), read_pickle(path)
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        assert_array_equal(ours[key], value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_fortran_order_shared_arrays_and_int_labels(tmp_path, protocol):
    X, y = batch()
    labels = np.array(y, np.int64)
    d = {"data": np.asfortranarray(X), "labels": labels, "again": labels, "i4": labels.astype(np.int32),
         "u1": labels.astype(np.uint8), "empty": np.zeros((0, 3072), np.uint8), "nothing": b""}
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    got = read_pickle(path)
    for key, value in d.items():
        assert_array_equal(got[key], value)
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype and got[key].flags.c_contiguous, key
    assert_array_equal(load_batch(path)[0], X)


def test_fixture_layout_and_meta_file(tmp_path):
    folder = make_cifar(tmp_path, n_per_batch=5)
    with open(folder / "data_batch_1", "rb") as f:
        genuine = pickle.load(f, encoding="bytes")
    assert set(genuine) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert isinstance(genuine[b"labels"], list)
    assert load_meta(folder / "batches.meta") == CLASSES
    (tmp_path / "meta2").write_bytes(pickle.dumps({"label_names": list(CLASSES), "num_vis": 3072}, protocol=2))
    assert load_meta(tmp_path / "meta2") == CLASSES


def test_real_meta_layout_by_hand(tmp_path):
    a = Asm(2, put=True).raw(EMPTY_DICT).put().raw(MARK).py2str(b"label_names").raw(EMPTY_LIST).put().raw(MARK)
    for name in CLASSES:
        a.py2str(name.encode())
    a.raw(b"e").py2str(b"num_cases_per_batch").int(10000).py2str(b"num_vis").int(3072).raw(b"u")
    (tmp_path / "batches.meta").write_bytes(a.done())
    assert load_meta(tmp_path / "batches.meta") == CLASSES
    with pytest.raises(DataError, match="'label_names' is not a list of 10"):
        (tmp_path / "m").write_bytes(pickle.dumps({b"label_names": [b"cat"]}))
        load_meta(tmp_path / "m")


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


# ------------------------------------------------------------------------------------------
# Mutation fuzzing: whatever the bytes, a DataError or a valid batch, nothing else


# Bytes of the length field of an opcode whose argument is counted (pickletools' TAKEN_FROM_ARGUMENT*).
LENGTH_FIELD = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}


def payload(raw: bytes) -> tuple[int, int]:
    """Where the pixels lie in a pickle: the longest counted string or bytes argument, found opcode by opcode.
    raw.find(pixels) misses them where they are not stored as they are (protocol 2 writes latin-1 text)."""
    ops = list(pickletools.genops(raw))
    spans = [(pos + 1 + LENGTH_FIELD[op.arg.n], end) for (op, _, pos), (_, _, end) in itertools.pairwise(ops)
             if op.arg is not None and op.arg.n in LENGTH_FIELD]
    return max(spans, key=lambda span: span[1] - span[0])


def changes_structure(mutant: bytes, raw: bytes, span: tuple[int, int]) -> bool:
    """Whether the mutant differs from raw anywhere but the payload."""
    head, tail = raw[:span[0]], raw[span[1]:]
    return not (mutant.startswith(head) and mutant.endswith(tail) and len(mutant) >= len(head) + len(tail))


def mutants(raw: bytes, rng: np.random.Generator, n: int):
    """Flip, insert and delete 1 to 3 random bytes, and truncate about one mutant in seven. Four in five edits
    aim outside the payload, where the structure is: nine mutants in ten change the structure (the test counts)."""
    start, end = payload(raw)
    outside = np.r_[0:start, end:len(raw)]
    for _ in range(n):
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.choice(outside) if rng.random() < 0.8 else rng.integers(0, len(b)))
            pos = min(pos, len(b) - 1)
            kind = rng.integers(0, 4)
            if kind == 0:
                b[pos] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:
                b[pos] = int(rng.integers(0, 256))
            elif kind == 2:
                b[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
            else:
                del b[pos:pos + int(rng.integers(1, 9))]
        if rng.random() < 0.15:
            b = b[:int(rng.integers(0, len(b) + 1))]
        yield bytes(b)


def fuzz_bases(X: np.ndarray, y) -> list[bytes]:
    return [py2_batch(X, y), *(pickle.dumps({b"data": X, b"labels": y, b"filenames": [b"x.png"] * 20}, protocol=p)
                               for p in (2, 3, 4, 5))]


def test_the_payload_is_found_in_every_base():
    X, y = batch(20)
    for base in fuzz_bases(X, y):
        start, end = payload(base)
        data = base[start:end]
        assert data == X.tobytes() or data.decode("utf-8").encode("latin-1") == X.tobytes()


@pytest.mark.filterwarnings("error")  # a warning from a parser would be something else escaping
def test_mutation_fuzz(tmp_path):
    rng = np.random.default_rng(20240607)
    X, y = batch(20)
    path = tmp_path / "data_batch_1"
    counts = {"refused": 0, "loaded": 0}
    structural = []
    start = time.perf_counter()
    for base in fuzz_bases(X, y):
        span = payload(base)
        structural.append(0)
        for raw in mutants(base, rng, 800):
            structural[-1] += changes_structure(raw, base, span)
            path.unlink(missing_ok=True)  # see refused()
            path.write_bytes(raw)
            try:
                Xm, ym = load_batch(path)
            except DataError as e:
                assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
                counts["refused"] += 1
                continue
            counts["loaded"] += 1
            assert Xm.dtype == np.uint8 and Xm.ndim == 2 and Xm.shape[1] == 3072 and len(Xm) >= 1
            assert Xm.flags.c_contiguous and Xm.flags.writeable
            assert ym.dtype == np.int64 and ym.shape == (len(Xm),) and ym.min() >= 0 and ym.max() <= 9
    elapsed = time.perf_counter() - start
    assert sum(counts.values()) == 4000
    assert counts["refused"] > 500 and counts["loaded"] > 100, counts  # the edits reach both outcomes
    assert min(structural) >= 0.7 * 800, structural  # in every base, most mutants change the structure
    print(f"fuzz: {counts}, structure changed {structural} of 800 each, in {elapsed:.2f} s")
