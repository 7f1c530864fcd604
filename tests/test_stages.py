"""Stage mechanics without training: the pruner's schedule, storage URLs, orphan detection."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest

from pipeline import config
from pipeline.errors import UserError
from pipeline.stages import make_pruner, open_storage, pid_alive, redact


def test_pruner_judges_only_at_cycle_ends():
    cfg = config.load("coarse", overrides=["train.n_s=10", "train.checkpoints_per_cycle=4"])
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    steps = cfg.train_settings().checkpoint_steps()  # 5, 10, 15, 20 (end of cycle 1), 25, ...
    for _ in range(3):  # good trials that set the median
        t = study.ask()
        for s in steps:
            t.report(0.8, s)
        study.tell(t, 0.8)
    bad = study.ask()
    decisions = {}
    for s in steps:
        bad.report(0.1, s)
        decisions[s] = bool(bad.should_prune())
    assert decisions[5] is decisions[10] is decisions[15] is False  # mid-cycle: η is high, don't judge
    assert decisions[20] is True  # the end of the first cycle


def test_no_prune_means_no_pruning():
    cfg = config.load("coarse", overrides=["search.prune=false"])
    assert isinstance(make_pruner(cfg), optuna.pruners.NopPruner)


def test_storage_urls(tmp_path):
    assert isinstance(open_storage(str(tmp_path / "s" / "optuna.journal")), optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/o.db"), optuna.storages.RDBStorage)
    with pytest.raises(UserError, match="unknown storage scheme 'ftp'"):
        open_storage("ftp://host/x")
    assert redact("postgresql+psycopg2://u:pw@h/db") == "postgresql+psycopg2://u:***@h/db"


def test_pid_alive_tells_dead_and_zombie_processes():
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert not pid_alive(zombie.pid)
    finally:
        zombie.wait()
