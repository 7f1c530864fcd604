"""model.cifar10.fetch: downloading (from a local server only) and the folder lock: concurrent downloads, what is on
disk, complete copies kept. (Locating and extracting: test_fetch_locate_extract.py.)"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from numpy.testing import assert_array_equal

from model.cifar10 import TEST_FILE, TRAIN_FILES, DataError, fetch, load_batch, load_dataset
from tests.cifar_fixtures import make_archive, make_cifar, md5_of
from tests.test_fetch_locate_extract import contents

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return make_cifar(tmp_path_factory.mktemp("cifar"), n_per_batch=20, seed=0)


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
    got = fetch.download(tmp_path / "dl", url=f"{base}/{archive.name}", md5=md5_of(archive),
                        progress=lambda done, total: calls.append((done, total)))
    assert got == tmp_path / "dl" / "cifar-10-python.tar.gz"
    assert got.read_bytes() == archive.read_bytes()
    assert contents(got.parent) == [got.name]  # no temporary file left
    size = archive.stat().st_size
    assert calls and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    ds = load_dataset(got, "exercise")
    assert_array_equal(ds.y_test, load_batch(cifar / "test_batch")[1])


def test_download_checksum_mismatch_removes_the_part_file(tmp_path, cifar, http_dir):
    root, base = http_dir
    archive = make_archive(cifar.parent, root)
    with pytest.raises(DataError, match=r"checksum mismatch: expected md5 0{32}, got " + md5_of(archive)):
        fetch.download(tmp_path / "dl", url=f"{base}/{archive.name}", md5="0" * 32)
    assert contents(tmp_path / "dl") == []


def test_download_skips_a_verified_archive(tmp_path, cifar):
    archive = make_archive(cifar.parent, tmp_path)
    # Nothing listens on this URL: a download attempt would fail.
    assert fetch.download(tmp_path, url="http://127.0.0.1:9/x", md5=md5_of(archive)) == archive


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_errors_are_data_errors(tmp_path, http_dir):
    _, base = http_dir
    with pytest.raises(DataError, match=r"download failed: HTTP 404"):
        fetch.download(tmp_path / "dl", url=f"{base}/missing.tar.gz")
    with pytest.raises(DataError, match=r"download failed"):
        fetch.download(tmp_path / "dl", url=f"http://127.0.0.1:{closed_port()}/x.tar.gz", timeout=5)
    assert contents(tmp_path / "dl") == []


def test_ensure_downloads_once_then_reuses(tmp_path, cifar, http_dir, monkeypatch):
    root, base = http_dir
    archive = make_archive(cifar.parent, root)
    monkeypatch.setattr(fetch, "URL", f"{base}/{archive.name}")
    monkeypatch.setattr(fetch, "MD5", md5_of(archive))
    folder = fetch.ensure(download_to=tmp_path / "dl")
    assert folder == tmp_path / "dl" / "cifar-10-batches-py"
    archive.unlink()  # a second call must not need the network
    assert fetch.ensure(download_to=tmp_path / "dl") == folder
    assert fetch.ensure(data_dir=cifar.parent) == cifar




# ------------------------------------------------------------------------------------------
# the folder lock: concurrent downloads, what is on disk, complete copies kept


@pytest.fixture
def counted_server(tmp_path, cifar):
    """(URL, md5, request counter) of the archive on a local server that counts its downloads."""
    root = tmp_path / "www"
    archive = make_archive(cifar.parent, root)
    hits = []

    class Counting(QuietHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{archive.name}", md5_of(archive), hits
    server.shutdown()
    server.server_close()
    thread.join(5)


def check_one_download(dest: Path, cifar: Path, results: list, hits: list) -> None:
    assert results == [dest / "cifar-10-batches-py"] * len(results), results
    assert hits == [f"/{fetch.ARCHIVE_NAME}"], hits  # the others waited for the lock, then reused it
    assert contents(dest) == ["cifar-10-batches-py", fetch.ARCHIVE_NAME]  # no .part, no staging folder
    for name in (*TRAIN_FILES, TEST_FILE):
        assert (dest / "cifar-10-batches-py" / name).read_bytes() == (cifar / name).read_bytes()


def test_threads_downloading_into_one_folder_download_once(tmp_path, cifar, counted_server, monkeypatch):
    url, md5, hits = counted_server
    monkeypatch.setattr(fetch, "URL", url)
    monkeypatch.setattr(fetch, "MD5", md5)
    dest, results, errors = tmp_path / "dl", [], []
    start = threading.Barrier(4)

    def worker():
        start.wait()
        try:
            results.append(fetch.ensure(download_to=dest))
        except Exception as e:  # reported below, with the others' results
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    check_one_download(dest, cifar, results, hits)


@pytest.mark.slow
def test_processes_downloading_into_one_folder_download_once(tmp_path, cifar, counted_server):
    url, md5, hits = counted_server
    dest = tmp_path / "dl"
    code = ("import sys; from model.cifar10 import fetch; fetch.URL, fetch.MD5 = sys.argv[1:3]; "
            "print(fetch.ensure(download_to=sys.argv[3]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, md5, str(dest)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    check_one_download(dest, cifar, [Path(out.strip()) for out, _ in outs], hits)


def test_the_checksum_is_of_the_file_on_disk(tmp_path, counted_server):
    """A byte changed on disk during the download (bad disk, another writer) is caught, although the
    bytes received were right."""
    url, md5, _ = counted_server
    dest = tmp_path / "dl"

    def corrupt_on_disk(done, total):
        if done == total:
            (part,) = dest.glob("*.part")
            with open(part, "r+b") as f:
                f.seek(100)
                byte = f.read(1)
                f.seek(100)
                f.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(DataError, match=f"checksum mismatch: expected md5 {md5}, got .* for the file on disk"):
        fetch.download(dest, url=url, md5=md5, progress=corrupt_on_disk)
    assert contents(dest) == []


def test_stale_part_files_are_removed(tmp_path, counted_server):
    url, md5, _ = counted_server
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / f"{fetch.ARCHIVE_NAME}.abc123.part").write_bytes(b"left by a killed download")
    fetch.download(dest, url=url, md5=md5)
    assert contents(dest) == [fetch.ARCHIVE_NAME]


def test_download_waits_for_the_lock(tmp_path, counted_server):
    url, md5, hits = counted_server
    dest = tmp_path / "dl"
    done = threading.Event()
    with fetch._locked(dest):
        t = threading.Thread(target=lambda: (fetch.download(dest, url=url, md5=md5), done.set()))
        t.start()
        assert not done.wait(0.5) and hits == []  # blocked while someone else holds the folder
    t.join(30)
    assert done.is_set() and len(hits) == 1


def test_a_complete_copy_is_never_replaced(tmp_path, cifar):
    archive = make_archive(cifar.parent, tmp_path / "a")
    dest = tmp_path / "dest"
    folder = make_cifar(dest, n_per_batch=3, seed=9)  # complete, and different from the archive
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    inode = folder.stat().st_ino
    assert fetch.extract(archive, dest) == folder
    assert folder.stat().st_ino == inode and {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert contents(dest) == ["cifar-10-batches-py"]  # staging removed
