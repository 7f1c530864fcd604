"""model.cifar10: safe loading, validation, locating, download + extraction, splits, normalisation."""

from __future__ import annotations

import functools
import io
import pickle
import socket
import subprocess
import sys
import tarfile
import threading
import tracemalloc
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from model import cifar10 as data
from model.cifar10 import DataError, fetch, load_batch, load_dataset, locate
from tests.cifar_fixtures import make_archive, make_cifar, md5_of, write_batch

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
# locate


def test_locate_accepts_the_folder_its_parent_and_the_archive(tmp_path, cifar):
    assert locate(cifar) == cifar
    assert locate(str(cifar.parent)) == cifar
    archive = make_archive(cifar.parent, tmp_path / "dl")
    found = locate(archive)
    assert found == tmp_path / "dl" / "cifar-10-batches-py"
    assert_array_equal(load_batch(found / "test_batch")[0], load_batch(cifar / "test_batch")[0])
    assert locate(tmp_path / "dl") == found  # the folder holding archive and extraction
    assert not list((tmp_path / "dl").glob(".cifar-extract-*"))  # staging cleaned up


def test_locate_reuses_an_existing_extraction(tmp_path, cifar, monkeypatch):
    archive = make_archive(cifar.parent, tmp_path)
    locate(archive)

    def fail(*_):
        raise AssertionError("extracted again")

    monkeypatch.setattr(fetch, "extract", fail)
    assert locate(archive) == tmp_path / "cifar-10-batches-py"


def test_locate_reextracts_an_incomplete_extraction(tmp_path, cifar):
    archive = make_archive(cifar.parent, tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"partial")
    folder = locate(archive)
    assert_array_equal(load_batch(folder / "data_batch_1")[0], load_batch(cifar / "data_batch_1")[0])


def test_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: not found; point the data folder at"):
        locate(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"holds no cifar-10-batches-py"):
        locate(tmp_path)


def test_missing_batch_file_is_named(tmp_path):
    folder = make_cifar(tmp_path, n_per_batch=4)
    (folder / "data_batch_4").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=r"missing data_batch_4, test_batch"):
        locate(tmp_path)
    with pytest.raises(DataError, match=r"missing data_batch_4"):
        load_dataset(folder)


def test_a_plain_file_is_not_a_source(cifar):
    with pytest.raises(DataError, match=r"is a file but not cifar-10-python.tar.gz"):
        locate(cifar / "data_batch_1")


# ------------------------------------------------------------------------------------------
# extract


def tar_with(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize("evil", ["../escape", "cifar-10-batches-py/../../escape", "/ABS"])
def test_member_outside_the_target_is_refused_and_nothing_escapes(tmp_path, evil):
    evil = evil.replace("/ABS", str(tmp_path / "abs-escape"))
    archive = tar_with(tmp_path / "a.tar.gz", {"cifar-10-batches-py/data_batch_1": b"x", evil: b"pwned"})
    dest = tmp_path / "inner" / "dest"
    with pytest.raises(DataError, match="refused member") as err:
        data.extract(archive, dest)
    assert repr(evil) in str(err.value)
    assert not (tmp_path / "inner" / "escape").exists()
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "abs-escape").exists()
    assert list(dest.iterdir()) == []  # checked before anything is written, staging removed


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="links and special files"):
        data.extract(archive, tmp_path / "dest")


@pytest.mark.parametrize("content", [b"", b"not a tarball at all", "truncated"])
def test_corrupt_archive_is_a_data_error(tmp_path, cifar, content):
    archive = tmp_path / "cifar-10-python.tar.gz"
    if content == "truncated":
        content = make_archive(cifar.parent, tmp_path / "good").read_bytes()[:5000]
    archive.write_bytes(content)
    with pytest.raises(DataError, match="corrupt or not a .tar.gz"):
        data.extract(archive, tmp_path / "dest")


def test_archive_without_the_batches_folder(tmp_path):
    archive = tar_with(tmp_path / "a.tar.gz", {"other/file": b"x"})
    with pytest.raises(DataError, match="has no cifar-10-batches-py folder"):
        data.extract(archive, tmp_path / "dest")


# ------------------------------------------------------------------------------------------
# download, against a local server only


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """(folder served, base URL) of a ThreadingHTTPServer on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_download_extract_and_load_from_localhost(tmp_path, cifar, http_dir):
    root, base = http_dir
    archive = make_archive(cifar.parent, root)
    calls = []
    got = data.download(tmp_path / "dl", url=f"{base}/{archive.name}", md5=md5_of(archive),
                        progress=lambda done, total: calls.append((done, total)))
    assert got == tmp_path / "dl" / "cifar-10-python.tar.gz"
    assert got.read_bytes() == archive.read_bytes()
    assert not got.with_name(got.name + ".part").exists()
    size = archive.stat().st_size
    assert calls and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    ds = load_dataset(got, "exercise")
    assert_array_equal(ds.y_test, load_batch(cifar / "test_batch")[1])


def test_download_checksum_mismatch_removes_the_part_file(tmp_path, cifar, http_dir):
    root, base = http_dir
    archive = make_archive(cifar.parent, root)
    with pytest.raises(DataError, match=r"checksum mismatch: expected md5 0{32}, got " + md5_of(archive)):
        data.download(tmp_path / "dl", url=f"{base}/{archive.name}", md5="0" * 32)
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_skips_a_verified_archive(tmp_path, cifar):
    archive = make_archive(cifar.parent, tmp_path)
    # Nothing listens on this URL: a download attempt would fail.
    assert data.download(tmp_path, url="http://127.0.0.1:9/x", md5=md5_of(archive)) == archive


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_errors_are_data_errors(tmp_path, http_dir):
    _, base = http_dir
    with pytest.raises(DataError, match=r"download failed: HTTP 404"):
        data.download(tmp_path / "dl", url=f"{base}/missing.tar.gz")
    with pytest.raises(DataError, match=r"download failed"):
        data.download(tmp_path / "dl", url=f"http://127.0.0.1:{closed_port()}/x.tar.gz", timeout=5)
    assert list((tmp_path / "dl").iterdir()) == []


def test_ensure_downloads_once_then_reuses(tmp_path, cifar, http_dir, monkeypatch):
    root, base = http_dir
    archive = make_archive(cifar.parent, root)
    monkeypatch.setattr(fetch, "URL", f"{base}/{archive.name}")
    monkeypatch.setattr(fetch, "MD5", md5_of(archive))
    folder = data.ensure(download_to=tmp_path / "dl")
    assert folder == tmp_path / "dl" / "cifar-10-batches-py"
    archive.unlink()  # a second call must not need the network
    assert data.ensure(download_to=tmp_path / "dl") == folder
    assert data.ensure(data_dir=cifar.parent) == cifar


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
