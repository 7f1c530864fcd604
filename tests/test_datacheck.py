"""`hpsearch data check`: per-file lines, the digest runs record, and hostile folders survived."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from model.cifar10 import TEST_FILE, TRAIN_FILES, load_batch, load_dataset
from tests.cifar_fixtures import make_cifar, md5_of, write_batch
from tests.conftest import hpsearch
from tests.test_unpickle_fuzz import mutants
from tests.test_unpickle_hostile import Reduce, scalar_exploit


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A complete folder big enough for the default holdout split (val_size 5000)."""
    return make_cifar(tmp_path_factory.mktemp("good"), n_per_batch=1010, learnable=False)


def file_line(out: str, name: str) -> str:
    (line,) = [line for line in out.splitlines() if line.split()[:1] == [name]]
    return line


def test_a_good_folder(good):
    out = hpsearch("data", "check", str(good.parent)).stdout  # the folder above works too
    assert out.splitlines()[0] == str(good)
    for name in (*TRAIN_FILES, TEST_FILE):
        _, y = load_batch(good / name)
        counts = np.bincount(y, minlength=10)
        line = file_line(out, name)
        assert f"md5 {md5_of(good / name)}" in line
        assert f"1010 images, {counts.min()}–{counts.max()} per class" in line
    assert "class names airplane automobile" in file_line(out, "batches.meta")
    digest = load_dataset(good, "holdout", val_size=5000).digest
    assert out.splitlines()[-1].startswith(f"digest {digest} (holdout split, val_size 5000")


def test_the_default_is_the_data_folder(good, monkeypatch, tmp_path):
    monkeypatch.setenv("HPSEARCH_DATA", str(good))
    assert file_line(hpsearch("data", "check").stdout, "test_batch")
    monkeypatch.delenv("HPSEARCH_DATA")
    monkeypatch.chdir(tmp_path)  # no data/ here: one error line, exit 1
    result = hpsearch("data", "check", code=1)
    assert result.stderr.startswith("error: data: file not found")


def test_a_small_folder_has_no_digest(cifar_dir):
    out = hpsearch("data", "check", str(cifar_dir)).stdout
    assert "100 images" in file_line(out, "data_batch_1")
    assert out.splitlines()[-1].startswith("no digest:") and "val_size 5000 leaves no training images" in out


def test_good_and_hostile_files(good, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(good, folder)
    marker = tmp_path / "PWNED"
    X, y = load_batch(good / "data_batch_1")
    (folder / "data_batch_3").write_bytes((good / "data_batch_3").read_bytes()[:5000])
    (folder / "evil_exploit").write_bytes(scalar_exploit())
    (folder / "evil_system").write_bytes(pickle.dumps(Reduce(os.system, f"touch {marker}")))
    (folder / "evil_huge").write_bytes(b"\x80\x05\x8e" + (2**62).to_bytes(8, "little") + b"x")
    (folder / "evil_random").write_bytes(np.random.default_rng(0).bytes(10_000))
    os.mkfifo(folder / "evil_fifo")
    write_batch(folder / "extra_batch", X[:7], y[:7])
    result = hpsearch("data", "check", str(folder), code=1)
    errors = result.stderr.splitlines()
    bad = ["data_batch_3", "evil_exploit", "evil_fifo", "evil_huge", "evil_random", "evil_system"]
    assert [line.split(":")[1].strip().rsplit("/", 1)[-1] for line in errors] == bad, errors
    assert all(line.startswith(f"error: {folder}/") for line in errors)
    assert not marker.exists()
    for name in ("data_batch_1", "data_batch_2", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"):
        assert f"md5 {md5_of(folder / name)}" in file_line(result.stdout, name)
    assert "7 images" in file_line(result.stdout, "extra_batch")
    last = result.stdout.splitlines()[-1]
    assert last == "not a complete dataset (missing or unreadable: data_batch_3), so no digest"


def test_200_mutants_in_under_30_seconds(tmp_path):
    """The issue's one speed requirement, with a wide margin: a hostile folder is read quickly."""
    X, y = load_batch(make_cifar(tmp_path / "src", n_per_batch=20) / "data_batch_1")
    base = pickle.dumps({b"data": X, b"labels": [int(v) for v in y], b"filenames": [b"x.png"] * 20}, protocol=2)
    folder = tmp_path / "mutants"
    folder.mkdir()
    for i, raw in enumerate(mutants(base, np.random.default_rng(7), 200)):
        (folder / f"m{i:03d}").write_bytes(raw)
    start = time.perf_counter()
    result = hpsearch("data", "check", str(folder), code=1)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, elapsed
    lines = result.stdout.splitlines()[1:-1] + result.stderr.splitlines()  # between folder and digest lines
    assert len(lines) == 200 and result.stderr.count("error: ") >= 100  # every file once, most refused
    print(f"data check of 200 mutants: {elapsed:.2f} s")
