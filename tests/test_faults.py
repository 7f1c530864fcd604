"""Three workers on one machine (the journal file), killed at every point where a worker can die, then replaced by
a restarted one: each stage still holds exactly n finished trials, each with one FINISHED run, every stage run is
FINISHED, and there is one final run and one model version. Each point is reached twice: kill -9 at the first
arrival, Ctrl-C (SIGINT) at the second.
"""

from __future__ import annotations

import pytest

from pipeline.workers.faults import POINTS
from tests.fault_harness import run_with_faults

pytestmark = pytest.mark.slow


def test_workers_killed_at_every_point_still_do_everything_once(tmp_path, cifar_dir):
    faults = [(point, sig) for point in POINTS for sig in ("SIGKILL", "SIGINT")]  # each point reached twice
    out = run_with_faults(tmp_path, cifar_dir, faults)
    assert out.fired == sorted(f"{point}-{sig}" for point, sig in faults), f"fired: {out.fired}\n{out.output}"
    assert out.started == 3 + len(faults), out.codes  # every killed worker was replaced by a restarted one
    assert out.problems == [], "\n".join(out.problems) + "\n" + out.output
    print(f"\nkill -9 and Ctrl-C at {', '.join(POINTS)}: {out.started} workers, {out.seconds:.0f} s")
