"""model.cifar10: batch validation, splits, normalisation and the digest (reading: test_unpickle_*.py,
fetching: test_fetch_*.py)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from model import cifar10 as data
from model.cifar10 import DataError, load_batch, load_dataset
from tests.cifar_fixtures import make_cifar, write_batch

N = 200  # images per generated batch


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    """A read-only generated dataset shared by the tests that only read it."""
    return make_cifar(tmp_path_factory.mktemp("cifar"), n_per_batch=N, seed=0)


def random_batch(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def raw_rows(folder: Path, names) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 rows and labels of the named batch files, concatenated (reference only)."""
    parts = [load_batch(folder / name) for name in names]
    return np.concatenate([X for X, _ in parts]), np.concatenate([y for _, y in parts])


def raw_batches(folder: Path) -> tuple[list, tuple]:
    """dataset_digest's inputs: the training batches in order and the test batch, as read from the files."""
    return [load_batch(folder / name) for name in data.TRAIN_FILES], load_batch(folder / data.TEST_FILE)


# ------------------------------------------------------------------------------------------
# load_batch: round trip and validation


def test_not_a_dict_names_the_file(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"data_batch_1: holds a list, expected a dict"):
        load_batch(path)


@pytest.mark.parametrize("shape", [(N, 3, 32, 32), (N * 3, 1024), (N * 3072,)])
def test_wrong_shape_names_the_file_and_shape(tmp_path, shape):
    X, y = random_batch()
    path = write_batch(tmp_path / "data_batch_2", X.reshape(shape), y)
    with pytest.raises(DataError) as err:
        load_batch(path)
    assert str(path) in str(err.value) and str(shape) in str(err.value)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_wrong_dtype_is_refused(tmp_path, dtype):
    X, y = random_batch()
    path = write_batch(tmp_path / "b", X.astype(dtype), y)
    with pytest.raises(DataError, match=f"dtype {np.dtype(dtype).name}, expected uint8"):
        load_batch(path)


@pytest.mark.parametrize("bad", [10, -1])
def test_labels_out_of_range(tmp_path, bad):
    X, y = random_batch()
    y[7] = bad
    with pytest.raises(DataError, match=rf"label {bad} at index 7 is outside 0\.\.9"):
        load_batch(write_batch(tmp_path / "b", X, y))


def test_label_count_must_match(tmp_path):
    X, y = random_batch()
    with pytest.raises(DataError, match=rf"{N - 1} labels for {N} images"):
        load_batch(write_batch(tmp_path / "b", X, y[:-1]))


@pytest.mark.parametrize("labels", [["a"] * N, [0] * (N - 1) + [[1]], [0] * (N - 1) + [None], None, True,
                                    np.zeros((N, 1), np.int64)])
def test_labels_must_be_ints(tmp_path, labels):
    X, _ = random_batch()
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": X, b"labels": labels}))
    with pytest.raises(DataError, match="b: 'labels'"):
        load_batch(path)


@pytest.mark.parametrize("labels", [np.arange(N) % 10, (np.arange(N) % 10).astype(np.int32),
                                    (np.arange(N) % 10).astype(np.uint8), tuple(range(10)) * (N // 10)])
def test_labels_may_be_an_int_array_or_a_tuple(tmp_path, labels):
    X, _ = random_batch()
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": X, b"labels": labels}))
    assert_array_equal(load_batch(path)[1], np.arange(N) % 10)


def test_missing_entry_is_named(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": random_batch()[0]}))
    with pytest.raises(DataError, match="no 'labels' entry"):
        load_batch(path)


# ------------------------------------------------------------------------------------------
# splits, normalisation, digest


def test_exercise_split_uses_batches_1_2_and_test(cifar):
    ds = load_dataset(cifar, "exercise", val_size=123)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (N, N, N)
    assert ds.val_size == N and ds.split == "exercise"
    assert_array_equal(ds.y_train, load_batch(cifar / "data_batch_1")[1])
    assert_array_equal(ds.y_val, load_batch(cifar / "data_batch_2")[1])
    assert_array_equal(ds.y_test, load_batch(cifar / "test_batch")[1])


@pytest.mark.parametrize("val_size", [100, N, 3 * N - 7, 5 * N - 1])
def test_holdout_validates_on_the_last_rows(cifar, val_size):
    ds = load_dataset(cifar, "holdout", val_size=val_size)
    X, y = raw_rows(cifar, data.TRAIN_FILES)
    cut = 5 * N - val_size
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (cut, val_size, N)
    assert_array_equal(ds.y_train, y[:cut])
    assert_array_equal(ds.y_val, y[cut:])
    # Exact rows: undo the normalisation and compare with the raw images.
    assert_allclose(ds.X_train * ds.std + ds.mean, X[:cut], atol=1e-3)
    assert_allclose(ds.X_val * ds.std + ds.mean, X[cut:], atol=1e-3)


@pytest.mark.parametrize("val_size, fold", [(100, 1), (N, 2), (N - 3, 4)])
def test_a_fold_validates_on_the_block_before_the_last_ones(cifar, val_size, fold):
    ds = load_dataset(cifar, "holdout", val_size=val_size, val_fold=fold)
    X, y = raw_rows(cifar, data.TRAIN_FILES)
    lo, hi = 5 * N - (fold + 1) * val_size, 5 * N - fold * val_size
    assert_array_equal(ds.y_val, y[lo:hi])
    assert_array_equal(ds.y_train, np.concatenate([y[:lo], y[hi:]]))  # the rest, in file order
    assert_allclose(ds.X_val * ds.std + ds.mean, X[lo:hi], atol=1e-3)
    assert_allclose(ds.X_train * ds.std + ds.mean, np.concatenate([X[:lo], X[hi:]]), atol=1e-3)
    assert ds.digest != load_dataset(cifar, "holdout", val_size=val_size).digest
    assert ds.digest == data.dataset_digest(*raw_batches(cifar), val_size=val_size, val_fold=fold)


def test_fold_zero_is_the_split_recorded_before_folds(cifar):
    assert (load_dataset(cifar, "holdout", val_size=100, val_fold=0).digest
            == load_dataset(cifar, "holdout", val_size=100).digest
            == data.dataset_digest(*raw_batches(cifar), val_size=100))


@pytest.mark.parametrize("val_size, fold, match", [(N, 5, "val_fold 5 of val_size"), (N, -1, "val_fold must be"),
                                                   (N, 1.0, "val_fold must be"), (2 * N, 3, "val_fold 3 of")])
def test_a_fold_beyond_the_data(cifar, val_size, fold, match):
    with pytest.raises(DataError, match=match):
        load_dataset(cifar, "holdout", val_size=val_size, val_fold=fold)


@pytest.mark.parametrize("split, val_size", [("nope", 5000), ("holdout", 0), ("holdout", 50_000),
                                             ("holdout", 2.5), ("holdout", True)])
def test_bad_split_or_val_size(cifar, split, val_size):
    with pytest.raises(DataError, match="split|val_size"):
        load_dataset(cifar, split, val_size)


def test_val_size_larger_than_the_data(cifar):
    with pytest.raises(DataError, match=rf"val_size {5 * N} leaves no training images"):
        load_dataset(cifar, "holdout", val_size=5 * N)


def test_normalisation_uses_training_statistics(cifar):
    ds = load_dataset(cifar, "holdout", val_size=100)
    for X in (ds.X_train, ds.X_val, ds.X_test):
        assert X.dtype == np.float32 and X.flags.c_contiguous and X.shape[1] == 3072
    assert ds.y_train.dtype == ds.y_val.dtype == ds.y_test.dtype == np.int64
    assert_allclose(ds.X_train.mean(axis=0, dtype=np.float64), 0, atol=1e-5)
    assert_allclose(ds.X_train.std(axis=0, dtype=np.float64), 1, atol=1e-4)
    X, _ = raw_rows(cifar, data.TRAIN_FILES)
    train = X[:-100].astype(np.float64)
    assert_allclose(ds.mean, train.mean(axis=0), rtol=1e-6)
    assert_allclose(ds.std, train.std(axis=0), rtol=1e-6)
    X_test = load_batch(cifar / "test_batch")[0]
    assert_allclose(ds.X_test, (X_test - train.mean(axis=0)) / train.std(axis=0), atol=1e-4)
    assert_allclose(ds.X_val, (X[-100:] - train.mean(axis=0)) / train.std(axis=0), atol=1e-4)


def test_constant_feature_gets_unit_std():
    X = np.random.default_rng(0).integers(0, 256, (50, 3072), dtype=np.uint8)
    X[:, 5] = 17
    Xn, Xo, mean, std = data.normalise(X, X[:3])
    assert std[5] == 1 and mean[5] == 17
    assert np.all(Xn[:, 5] == 0) and np.isfinite(Xn).all()
    assert_array_equal(Xo, Xn[:3])


def test_normalise_of_blocks_equals_normalise_of_the_whole():
    X = np.random.default_rng(1).integers(0, 256, (3000, 3072), dtype=np.uint8)
    blocks = [X[:700], X[700:2900], X[2900:]]
    whole = data.normalise(X)
    parts = data.normalise(blocks)
    assert len(blocks) == 3  # the caller's list is left alone
    for a, b in zip(whole, parts, strict=True):
        assert_array_equal(a, b)


def test_digest_is_stable_and_tracks_data_and_split(tmp_path):
    folder = make_cifar(tmp_path, n_per_batch=20, seed=3)
    first = load_dataset(folder, "holdout", val_size=10).digest
    assert load_dataset(tmp_path, "holdout", val_size=10).digest == first
    assert len(first) == 64
    assert load_dataset(folder, "holdout", val_size=11).digest != first
    assert load_dataset(folder, "exercise").digest != first
    X, y = load_batch(folder / "test_batch")
    X[3, 100] ^= 1
    write_batch(folder / "test_batch", X, y)
    assert load_dataset(folder, "holdout", val_size=10).digest != first


@pytest.mark.parametrize("split, val_size", [("holdout", 100), ("holdout", 3 * N + 1), ("exercise", 5000)])
def test_dataset_digest_from_raw_batches_is_load_datasets(cifar, split, val_size):
    batches = [load_batch(cifar / name) for name in data.TRAIN_FILES]
    got = data.dataset_digest(batches, load_batch(cifar / data.TEST_FILE), split, val_size)
    assert got == load_dataset(cifar, split, val_size).digest


def test_digest_is_the_same_in_another_process(cifar):
    here = load_dataset(cifar, "holdout", val_size=100).digest
    code = ("import sys; from model.cifar10 import load_dataset; "
            "print(load_dataset(sys.argv[1], 'holdout', val_size=100).digest)")
    out = subprocess.run([sys.executable, "-c", code, str(cifar)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == here


def test_no_full_size_temporaries(tmp_path):
    """Peak memory stays near the float32 output: no concatenated copy, no float64 temporary."""
    n = 500
    folder = make_cifar(tmp_path, n_per_batch=n, learnable=False)
    out_bytes = 6 * n * 3072 * 4
    raw_bytes = 6 * n * 3072
    tracemalloc.start()
    try:
        ds = load_dataset(folder, "holdout", val_size=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ds.y_train) == 5 * n - 100
    # Measured: out_bytes + ~2 MB. A float64 temporary of the training part would add 2x
    # out_bytes, concatenating the raw batches another raw_bytes.
    assert peak < out_bytes + raw_bytes / 2, (peak / 1e6, out_bytes / 1e6)


def test_generated_data_is_learnable(cifar):
    """A nearest-class-mean classifier beats chance by far on the fixture's learnable data."""
    ds = load_dataset(cifar, "exercise")
    centres = np.stack([ds.X_train[ds.y_train == k].mean(axis=0) for k in range(10)])
    dist = ((ds.X_test[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert (dist.argmin(axis=1) == ds.y_test).mean() > 0.5


def test_repr_is_short(cifar):
    assert len(repr(load_dataset(cifar, "exercise"))) < 120
