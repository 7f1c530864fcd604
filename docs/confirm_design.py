"""Design aid for the confirm stage: which rule lands in the sweep's top band, on real searches, by simulation.

For each experiment's stored coarse and fine studies, the candidates of each design are placed exactly as the
stage would place them; then each confirm training is simulated, image by image, around the sweep's mean
accuracy at its λ (interpolated in log10 λ): round r's images share a difficulty, each training adds its seed's
shift (σ 0.25 point) and flips 7 % of images at random, so two networks agree on about 86 % of images, as
measured (docs/promotion.md). The stage's own planning and choosing code (pipeline.search.confirm.racing) decides.
Prints, per design, how often the chosen λ lies within 0.5 points of the sweep's best and its mean sweep value.

    .venv/bin/python docs/confirm_design.py --storage S --tracking-uri T draws-1 draws-2 ... [--reps 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.search.confirm.candidates import choose_candidates, spread  # noqa: E402
from pipeline.search.confirm.racing import Training, decide, plan  # noqa: E402
from pipeline.settings.config import ConfirmSection  # noqa: E402

# The sweep the design was made on (2026-11-30, docs/promotion.md): λ -> mean test accuracy over 3 seeds.
SWEEP = {1e-5: 0.5104, 1e-4: 0.5105, 1e-3: 0.5178, 2.5e-3: 0.5241, 5e-3: 0.5289, 1e-2: 0.5162, 3e-2: 0.4800}
DESIGNS = {
    "top3 grid2 best-mean (today)": dict(placement="top", k=3, seeds=2, select="best-mean"),
    "top3 grid2 fit": dict(placement="top", k=3, seeds=2, select="fit"),
    "spread3 span1 grid2 best-mean": dict(placement="spread", k=3, span=1.0, seeds=2, select="best-mean"),
    "spread3 span1 grid2 fit": dict(placement="spread", k=3, span=1.0, seeds=2, select="fit"),
    "spread3 span.8 grid2 fit": dict(placement="spread", k=3, span=0.8, seeds=2, select="fit"),
    "spread3 span.6 grid2 fit": dict(placement="spread", k=3, span=0.6, seeds=2, select="fit"),
    "spread3 span.8 reach.15 grid2 fit": dict(placement="spread", k=3, span=0.8, reach=0.15, seeds=2, select="fit"),
    "spread3 span1 reach.25 grid2 fit": dict(placement="spread", k=3, span=1.0, reach=0.25, seeds=2, select="fit"),
    "spread4 span1 race6 fit": dict(placement="spread", k=4, span=1.0, strategy="race", budget=6, select="fit"),
    "spread4 span1 reach.15 race6 fit": dict(placement="spread", k=4, span=1.0, reach=0.15, strategy="race",
                                             budget=6, select="fit"),
    "spread3 span.8 race5 fit": dict(placement="spread", k=3, span=0.8, strategy="race", budget=5, select="fit"),
    "spread3 span.8 grid1 fit (3 trainings)": dict(placement="spread", k=3, span=0.8, seeds=1, select="fit"),
    "spread4 span1 grid1 fit (4 trainings)": dict(placement="spread", k=4, span=1.0, seeds=1, select="fit"),
    "spread3 span.8 grid2 best-mean": dict(placement="spread", k=3, span=0.8, seeds=2, select="best-mean"),
}


def tied_up_to(hi: float) -> list:
    """Ranked (stage, trial) of a synthetic search: 1e-5 best, hi tied within one SE, 3e-2 well below."""
    from types import SimpleNamespace

    def trial(i, lam, value):
        return "coarse", SimpleNamespace(number=i, params={"lambda": lam}, value=value, user_attrs={"n_val": 5000})

    return [trial(0, 1e-5, 0.50), trial(1, hi, 0.495), trial(2, 3e-2, 0.47)]


def truth(lam: float, sweep: dict) -> float:
    xs = sorted(sweep)
    lx = [math.log10(v) for v in xs]
    return float(np.interp(math.log10(lam), lx, [sweep[v] for v in xs]))


def simulate(lams: list[float], c: ConfirmSection, sweep: dict, rng: np.random.Generator, n: int = 5000):
    trainings: list[Training] = []
    for r in range(c.max_rounds):
        entrants = plan(r, len(lams), c, trainings)
        if not entrants:
            break
        u = rng.random(n)
        for i in entrants:
            p = truth(lams[i], sweep) + rng.normal(0, 0.0025)
            correct = (u < p) ^ (rng.random(n) < 0.07)
            trainings.append(Training(i, r, float(correct.mean()), correct))
    return trainings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="*")
    ap.add_argument("--storage")
    ap.add_argument("--tracking-uri")
    ap.add_argument("--hi", type=float, nargs="*", default=[],
                    help="also: searches whose tie ends at each of these λ (all λ from 1e-5 up to it tied)")
    ap.add_argument("--designs", nargs="*", help="only the designs whose name holds one of these strings")
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    from pipeline.session import Session, Stores

    best = max(SWEEP.values())
    designs = {n: kw for n, kw in DESIGNS.items() if not a.designs or any(d in n for d in a.designs)}
    rows = {name: [] for name in designs}
    sources = [(e, Session(Stores(experiment=e, storage_url=a.storage, tracking_uri=a.tracking_uri)))
               for e in a.experiments] + [(f"tie≤{hi:.2g}", tied_up_to(hi)) for hi in a.hi]
    for e, source in sources:
        for name, kw in designs.items():
            c = dataclasses.replace(ConfirmSection(), **kw)
            if isinstance(source, list):  # synthetic: every λ from 1e-5 up to hi tied
                if c.placement != "spread":
                    continue
                cands = spread(source, c.k, c.span, c.reach, c.min_gap)
            else:
                cands = choose_candidates(source, c)
            lams = [x.settings["train.lambda"] for x in cands]
            rng = np.random.default_rng(0)
            got = []
            for _ in range(a.reps):
                d = decide(cands, simulate(lams, c, SWEEP, rng), c.select, c, 5000)
                got.append(truth(d.chosen["train.lambda"], SWEEP))
            inband = np.mean([g >= best - 0.005 for g in got])
            rows[name].append((inband, np.mean(got)))
            print(f"{e:10} {name:40} cands {' '.join(f'{v:.2g}' for v in lams):28} in band {inband:5.0%} "
                  f"sweep mean at choice {100 * np.mean(got):.2f} %", flush=True)
    print("\nover the experiments:")
    for name, got in rows.items():
        if not got:
            continue
        trainings = DESIGNS[name].get("budget") or DESIGNS[name]["k"] * DESIGNS[name].get("seeds", 2)
        print(f"  {name:40} ≤{trainings} trainings  in band {np.mean([g[0] for g in got]):5.0%}  worst "
              f"{min(g[0] for g in got):5.0%}  sweep mean {100 * np.mean([g[1] for g in got]):.2f} %")


if __name__ == "__main__":
    main()
