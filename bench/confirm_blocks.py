"""Can one block of 5,000 validation images rank λ at the confirm stage's budget? Trains (λ, seed) pairs at
studies/confirm.toml's schedule on the holdout split with validation block --fold (0: the last 5,000 training
images), and prints each λ's mean validation accuracy next to the same networks' test accuracy (10,000 images,
never used for a choice: here only to judge the validation block).

    HPSEARCH_DATA=/path/to/cifar .venv/bin/python bench/confirm_blocks.py [--fold 0] [--seeds 4] [--jobs 2]

Pure NumPy, no tracking: pairs run in --jobs processes of one BLAS thread each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (3e-4, 1.3e-3, 2.5e-3, 5e-3, 1e-2)


def run(lam: float, seed: int, fold: int) -> tuple[float, int, float, float]:
    sys.path.insert(0, str(ROOT))
    from model import network
    from model.train import train
    from pipeline.data import sources
    from pipeline.settings import config

    cfg = config.load("confirm", ROOT / "studies" / "confirm.toml",
                      {"train.lambda": lam, "train.seed": seed, "data.val_fold": fold})
    d = sources.dataset(sources.resolve(Path(os.environ["HPSEARCH_DATA"])), cfg.data.split, cfg.data.val_size, fold)
    r = train(d.X_train, d.y_train, d.X_val, d.y_val, cfg.train_settings())
    return lam, seed, r.history["val_accuracy"][-1], network.accuracy(r.params, d.X_test, d.y_test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--lambdas", type=float, nargs="*", default=LAMBDAS)
    a = ap.parse_args()
    if not os.environ.get("HPSEARCH_DATA"):
        sys.exit("set HPSEARCH_DATA to a folder holding cifar-10-batches-py")
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"  # before the workers load NumPy
    pairs = [(lam, seed) for seed in range(a.seeds) for lam in a.lambdas]
    with ProcessPoolExecutor(a.jobs) as pool:
        done = list(pool.map(run, *zip(*pairs, strict=True), [a.fold] * len(pairs)))
    print(f"validation block {a.fold}, {a.seeds} seeds, the confirm stage's schedule")
    print(f"{'λ':>8}  {'val acc % (mean ± SE)':<22} {'test acc % (mean ± SE)':<22}")
    for lam in a.lambdas:
        val = [100 * v for l, _, v, _ in done if l == lam]
        test = [100 * t for l, _, _, t in done if l == lam]
        se = lambda xs: statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")  # noqa: E731
        print(f"{lam:>8.2g}  {statistics.fmean(val):6.2f} ± {se(val):.2f}          "
              f"{statistics.fmean(test):6.2f} ± {se(test):.2f}")


if __name__ == "__main__":
    main()
