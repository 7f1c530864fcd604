"""model.cifar10.archive: a hostile archive is refused with one line and writes nothing, with tarfile's data filter
and without it (Debian 12's 3.11.2 has none; here it is taken away, so both paths run on every Python)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from numpy.testing import assert_array_equal

from model.cifar10 import DataError, archive, fetch, load_batch
from tests.cifar_fixtures import make_archive, make_cifar

GOOD = "cifar-10-batches-py/data_batch_1"


@pytest.fixture(params=["as this Python has it", "no data filter"])
def filter_kind(request, monkeypatch) -> str:
    if request.param == "no data filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        assert not archive.has_data_filter()
    return request.param


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info


def hostile_archive(path: Path, outside: Path, case: str) -> tuple[Path, str]:
    """An archive holding one good file and then the hostile member; returns it and the hostile member's name."""
    hostile = {
        "absolute path": [member(str(outside / "abs-escape"))],
        "dot-dot": [member("cifar-10-batches-py/../../escape")],
        "symlink out": [member("cifar-10-batches-py/out", tarfile.SYMTYPE, link=str(outside)),
                        member("cifar-10-batches-py/out/escape")],  # written through the link if it were made
        "relative symlink out": [member("cifar-10-batches-py/up", tarfile.SYMTYPE, link="../../../../outside"),
                                 member("cifar-10-batches-py/up/escape")],  # staging/…/up → outside
        "hard link out": [member("cifar-10-batches-py/hard", tarfile.LNKTYPE, link=str(outside / "target"))],
        "character device": [member("cifar-10-batches-py/null", tarfile.CHRTYPE)],
        "block device": [member("cifar-10-batches-py/disk", tarfile.BLKTYPE)],
        "fifo": [member("cifar-10-batches-py/pipe", tarfile.FIFOTYPE)],
        "setuid file": [member("cifar-10-batches-py/run", mode=0o4755)],
        "setgid file": [member("cifar-10-batches-py/run", mode=0o2755)],
        "sticky folder": [member("cifar-10-batches-py/shared", tarfile.DIRTYPE, mode=0o1777)],
    }[case]
    with tarfile.open(path, "w:gz") as tar:
        for info in [member(GOOD), *hostile]:
            payload = b"pwned" if info.isfile() else b""
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload else None)
    return path, hostile[0].name


def tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("case", ["absolute path", "dot-dot", "symlink out", "relative symlink out", "hard link out",
                                  "character device", "block device", "fifo", "setuid file", "setgid file",
                                  "sticky folder"])
def test_a_hostile_member_is_one_line_and_nothing_is_written(tmp_path, filter_kind, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_bytes(b"precious")
    path, name = hostile_archive(tmp_path / "a.tar.gz", outside, case)
    dest = tmp_path / "in" / "dest"
    before = tree(tmp_path)
    with pytest.raises(DataError, match="refused member") as err:
        fetch.extract(path, dest)
    message = str(err.value)
    assert "\n" not in message and repr(name) in message, message
    # only the folder and its lock file are new: no staging left, no good file, nothing outside
    assert tree(tmp_path) - before == {tmp_path / "in", dest, dest / fetch.LOCK_NAME}
    assert (outside / "target").read_bytes() == b"precious"


def test_the_genuine_layout_extracts_without_the_filter(tmp_path, filter_kind):
    cifar = make_cifar(tmp_path / "src", n_per_batch=4)
    folder = fetch.extract(make_archive(cifar.parent, tmp_path / "dl"), tmp_path / "dl")
    assert folder == tmp_path / "dl" / "cifar-10-batches-py"
    for name in ("data_batch_1", "test_batch"):
        assert_array_equal(load_batch(folder / name)[0], load_batch(cifar / name)[0])


def test_without_the_filter_only_contents_are_written_not_the_archives_owner_or_mode(tmp_path, monkeypatch):
    """What the data filter drops, the fallback never takes: group/other write bits and the archive's owner."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = member(GOOD, mode=0o666)
        info.uid = info.gid = 4242
        info.uname = info.gname = "nobody-here"
        info.size = 4
        tar.addfile(info, io.BytesIO(b"data"))
    old_umask = os.umask(0o022)
    try:
        archive.extract_into(path, tmp_path / "out")
    finally:
        os.umask(old_umask)
    written = tmp_path / "out" / GOOD
    assert written.read_bytes() == b"data"
    assert stat.S_IMODE(written.stat().st_mode) & 0o022 == 0, oct(written.stat().st_mode)
    assert (written.stat().st_uid, written.stat().st_gid) == (os.getuid(), os.getgid())


def test_the_filter_is_used_where_python_has_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tarfile, "data_filter", object(), raising=False)  # present, as on 3.12+
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda self, *a, **kw: calls.append(kw))
    cifar = make_cifar(tmp_path / "src", n_per_batch=2)
    archive.extract_into(make_archive(cifar.parent, tmp_path / "dl"), tmp_path / "out")
    assert [kw.get("filter") for kw in calls] == ["data"]
