"""model.cifar10.fetch: locating the data (a folder, its parent or the archive) and extracting the archive.
(Downloading, from a local server only, and the folder lock: test_fetch_download.py; hostile archives, with and
without tarfile's data filter: test_fetch_hostile.py.)"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from numpy.testing import assert_array_equal

from model.cifar10 import DataError, fetch, load_batch, load_dataset, locate
from tests.cifar_fixtures import make_archive, make_cifar


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return make_cifar(tmp_path_factory.mktemp("cifar"), n_per_batch=20, seed=0)


def contents(folder: Path) -> list[str]:
    """What a folder holds besides the lock file, which stays once made."""
    return sorted(p.name for p in folder.iterdir() if p.name != fetch.LOCK_NAME)


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

    monkeypatch.setattr(fetch, "_extract", fail)
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


@pytest.mark.parametrize("content", [b"", b"not a tarball at all", "truncated"])
def test_corrupt_archive_is_a_data_error(tmp_path, cifar, content):
    archive = tmp_path / "cifar-10-python.tar.gz"
    if content == "truncated":
        content = make_archive(cifar.parent, tmp_path / "good").read_bytes()[:5000]
    archive.write_bytes(content)
    with pytest.raises(DataError, match="corrupt or not a .tar.gz"):
        fetch.extract(archive, tmp_path / "dest")


def test_archive_without_the_batches_folder(tmp_path):
    archive = tar_with(tmp_path / "a.tar.gz", {"other/file": b"x"})
    with pytest.raises(DataError, match="has no cifar-10-batches-py folder"):
        fetch.extract(archive, tmp_path / "dest")
