"""model.cifar10.unpickle: genuine batches load (the official Python 2 files, Python 3 pickles of protocols 2 to 5),
and so does the meta file. Hostile files: test_unpickle_hostile.py; mutation fuzzing: test_unpickle_fuzz.py."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from model.cifar10 import CLASSES, DataError, load_batch, load_meta
from model.cifar10.unpickle import read_pickle
from tests.cifar_fixtures import make_cifar
from tests.pickle_ops import EMPTY_DICT, EMPTY_LIST, MARK, Asm, py2_batch


def batch(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


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
