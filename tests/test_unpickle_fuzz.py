"""model.cifar10.unpickle under mutation fuzzing: whatever the bytes, a DataError or a valid batch, nothing else.
(Genuine files: test_unpickle_genuine.py; hostile ones: test_unpickle_hostile.py.)"""

from __future__ import annotations

import itertools
import pickle
import pickletools
import time

import numpy as np
import pytest

from model.cifar10 import DataError, load_batch
from tests.pickle_ops import py2_batch
from tests.test_unpickle_genuine import batch

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


def holds_the_pixels(base: bytes, span: tuple[int, int], X: np.ndarray) -> bool:
    """Whether span is exactly the pixels: as they are, or as protocol 2's latin-1 text (UTF-8 encoded)."""
    return base[span[0]:span[1]] in (X.tobytes(), X.tobytes().decode("latin-1").encode("utf-8"))


def test_the_payload_is_found_in_every_base():
    X, y = batch(20)
    for base in fuzz_bases(X, y):
        assert holds_the_pixels(base, payload(base), X)


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
        assert holds_the_pixels(base, span, X)  # else the structure count below measures the wrong span
        structural.append(0)
        for raw in mutants(base, rng, 800):
            structural[-1] += changes_structure(raw, base, span)
            path.unlink(missing_ok=True)  # see refused() in test_unpickle_hostile.py
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
