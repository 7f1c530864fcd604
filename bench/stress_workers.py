"""Fault injection, many times: three `hpsearch pipeline` workers on one machine (journal file, tiny data), each run
with a random set of kill points and a random signal per point; every killed worker is replaced by a restarted one.
After each run the stores are checked for "exactly once" (tests/fault_harness.py: n finished trials per stage, one
FINISHED run per finished trial and no other, every stage run FINISHED, one FINISHED final run, one model version).

    .venv/bin/python bench/stress_workers.py --runs 20 --seed 1

Prints one line per run and the totals: runs, kills (by point and signal), runs with anything lost or duplicated.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.workers.faults import POINTS  # noqa: E402
from tests.cifar_fixtures import make_cifar  # noqa: E402
from tests.fault_harness import run_with_faults  # noqa: E402

SIGNALS = ("SIGKILL", "SIGINT")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    kills, bad, unfired = Counter(), [], 0
    with tempfile.TemporaryDirectory(prefix="stress-workers-") as tmp:
        cifar = make_cifar(Path(tmp) / "cifar", n_per_batch=100)
        for i in range(1, args.runs + 1):
            chosen = rng.sample(POINTS, rng.randint(1, len(POINTS)))
            faults = [(p, rng.choice(SIGNALS)) for p in sorted(chosen)]
            folder = Path(tmp) / f"run{i}"
            folder.mkdir()
            out = run_with_faults(folder, cifar, faults, workers=args.workers)
            kills.update(out.fired)
            unfired += len(faults) - len(out.fired)
            if out.problems:
                bad.append((i, out.problems))
            print(f"run {i:2d}: faults {faults}; fired {out.fired}; {out.started} workers; {out.seconds:.0f} s; "
                  f"{'; '.join(out.problems) or 'each thing once'}", flush=True)
    print(f"\n{args.runs} runs, {sum(kills.values())} kills ({unfired} chosen points never reached), "
          f"{len(bad)} runs with something lost or duplicated")
    for point in POINTS:
        print(f"  {point:8s} " + "  ".join(f"{s} {kills[f'{point}-{s}']}" for s in SIGNALS))
    for i, problems in bad:
        print(f"  run {i}: {problems}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
