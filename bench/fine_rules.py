"""The fine stage's two rules on real coarse studies: the range each derives, and whether it holds a given λ
(the one the final-budget sweep found best).

    .venv/bin/python bench/fine_rules.py --experiment draws-1 --experiment draws-2 … [--target 5e-3]

Run it where the studies are (it opens studies/optuna.journal unless --storage says otherwise).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", action="append", required=True)
    ap.add_argument("--storage", default="studies/optuna.journal")
    ap.add_argument("--target", type=float, default=5e-3)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.search.results import completed, trial_settings
    from pipeline.search.stages import coarse_space_of
    from pipeline.session import Session, Stores
    from pipeline.settings import config, space

    cfg = config.load("fine", ROOT / "studies" / "fine.toml")
    for experiment in a.experiment:
        coarse = Session(Stores(storage_url=a.storage, experiment=experiment)).load_study("coarse")
        done = completed(coarse)
        base = coarse_space_of(coarse)
        top = sorted(done, key=lambda t: (-t.value, t.number))[:2]
        rules = {"top2": space.refine_top2(base, [trial_settings(t) for t in top], cfg.fine.widen),
                 "region": space.refine_region(base, [(trial_settings(t), t.value) for t in done],
                                               cfg.fine.half_width)}
        for rule, fine in rules.items():
            d = fine["train.lambda"]
            decades = math.log10(d.high / d.low)
            holds = "holds" if d.low <= a.target <= d.high else "misses"
            print(f"{experiment:>10} {rule:>6}: λ {d.low:.3g} .. {d.high:.3g} ({decades:.2f} decades), "
                  f"{holds} {a.target:g}")


if __name__ == "__main__":
    main()
