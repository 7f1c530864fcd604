"""The Makefile picks a Python that works (scripts/python.sh): PYTHON if set, else python3 if new enough, else the
newest python3.X on PATH; when none fits, one line naming the versions that work. `make -n` shows the choice
without making anything; the PATH holds only what a test puts there (make, sh, sed, sort and pythons)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import toml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = toml.loads((ROOT / "pyproject.toml").read_text())["project"]
FLOOR = PROJECT["requires-python"].removeprefix(">=")
TESTED = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.fullmatch(r".* :: 3\.\d+", c)]


def fake_python(folder: Path, version: str) -> Path:
    """This interpreter, reporting another version (sys.version_info, sys.version) through a sitecustomize."""
    site = folder / f"site-{version}"
    site.mkdir(parents=True, exist_ok=True)
    parts = tuple(int(p) for p in version.split("."))
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.version_info = {(*parts, 'final', 0)!r}\n"
        f"sys.version = {version!r} + sys.version[sys.version.index(' '):]\n")
    exe = folder / f"fake-{version}"
    exe.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    exe.chmod(0o755)
    return exe


@pytest.fixture
def bin_dir(tmp_path) -> Path:
    """A PATH folder with the tools the Makefile and its script need, and no Python."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("make", "sh", "sed", "sort"):
        (folder / tool).symlink_to(shutil.which(tool))
    return folder


def make_n(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": str(bin_dir)}
    return subprocess.run(["make", "-n", "-C", str(ROOT), "--no-print-directory", *args, "test"], env=env,
                          capture_output=True, text=True, timeout=60)


def venv_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if "python.sh venv" in line)


def test_the_floor_and_the_tested_versions_agree():
    assert TESTED and TESTED[0] == FLOOR, (FLOOR, TESTED)


def test_only_too_old_pythons_get_one_line_naming_the_versions_that_work(tmp_path, bin_dir):
    old = fake_python(tmp_path, "3.9.18")
    (bin_dir / "python3").symlink_to(old)
    (bin_dir / "python3.9").symlink_to(old)
    result = make_n(bin_dir, f"VENV={tmp_path / 'venv'}")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stdout == "", result.stderr
    assert f"needs Python {FLOOR} or newer (tested: {', '.join(TESTED)})" in lines[0]
    assert "python3 is Python 3.9.18, python3.9 is Python 3.9.18" in lines[0]
    assert "point PYTHON= at it" in lines[0] and "pip" not in lines[0]
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("given", ["fake", "missing"])
def test_a_too_old_or_missing_PYTHON_gets_the_same_one_line(tmp_path, bin_dir, given):
    (bin_dir / "python3").symlink_to(sys.executable)  # one that fits is there, but PYTHON= names another
    python = str(fake_python(tmp_path, "2.7.18")) if given == "fake" else "python3.99"
    result = make_n(bin_dir, f"PYTHON={python}", f"VENV={tmp_path / 'venv'}")
    assert result.returncode != 0 and len(result.stderr.splitlines()) == 1, result.stderr
    said = "is Python 2.7.18" if given == "fake" else "is not found"
    assert f"PYTHON={python} {said}" in result.stderr and f"needs Python {FLOOR} or newer" in result.stderr


def test_python3_when_new_enough(tmp_path, bin_dir):
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "python3.12").symlink_to(sys.executable)
    assert f"'{bin_dir / 'python3'}'" in venv_line(make_n(bin_dir, f"VENV={tmp_path / 'venv'}"))


def test_else_the_newest_python3x_that_fits(tmp_path, bin_dir):
    (bin_dir / "python3").symlink_to(fake_python(tmp_path, "3.9.18"))
    (bin_dir / "python3.10").symlink_to(sys.executable)
    (bin_dir / "python3.12").symlink_to(sys.executable)
    (bin_dir / "python3.14").symlink_to(fake_python(tmp_path, "3.8.10"))  # newest name, but does not fit
    assert f"'{bin_dir / 'python3.12'}'" in venv_line(make_n(bin_dir, f"VENV={tmp_path / 'venv'}"))


def test_a_venv_is_kept_for_its_own_python_and_made_again_for_another(tmp_path, bin_dir):
    """PYTHON= naming the venv's own Python finds it up to date; naming another makes the venv again."""
    (bin_dir / "python3").symlink_to(sys.executable)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "bin" / ".installed").touch()
    same = make_n(bin_dir, f"PYTHON={sys.executable}", f"VENV={venv}")
    assert same.returncode == 0 and "python.sh venv" not in same.stdout, same.stdout
    other = fake_python(tmp_path, "3.12.1")
    assert f"'{other}'" in venv_line(make_n(bin_dir, f"PYTHON={other}", f"VENV={venv}"))
    unset = make_n(bin_dir, f"VENV={venv}")  # PYTHON unset: any venv that fits is kept
    assert unset.returncode == 0 and "python.sh venv" not in unset.stdout, unset.stdout


@pytest.mark.slow  # makes a venv with pip: about 10 s
def test_a_venv_of_a_too_old_python_is_made_again(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(fake_python(tmp_path, "3.9.18"))
    (venv / "stale").touch()
    result = subprocess.run(["sh", str(ROOT / "scripts" / "python.sh"), "venv", sys.executable, str(venv)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "made by Python 3.9.18, too old; making it again" in result.stderr
    assert not (venv / "stale").exists() and (venv / "pyvenv.cfg").is_file()
