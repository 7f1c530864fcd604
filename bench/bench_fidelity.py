"""Does a cheap fidelity rank settings like the final's budget? Train k settings at several fidelities, then
print Spearman's ρ between every pair of fidelities (with its uncertainty) and the cost per candidate.

A fidelity is a named set of overrides on the base study file (a shorter full schedule, a narrower layer, ...);
a setting is the values a search would vary (λ, η_max, eps). Each (setting, fidelity) training appends one row
to --out (CSV) as soon as it finishes, so the script resumes where it stopped and two processes can share the
work (--only picks the fidelities this process trains). --known adds rows measured elsewhere (same columns).
Trainings run in this process through the pipeline's data path (the whitening fitted once per split), untracked;
each row holds the validation accuracy, the test accuracy with and without mirror averaging (of the last
weights), the CPU seconds of the training, and with train.average_cycles = cycles also the test accuracy
(mirror) of the averages of the last j cycle ends (avg_j): weight averaging measured on the same training.

    OPENBLAS_NUM_THREADS=1 HPSEARCH_DATA=/path/to/cifar .venv/bin/python bench/bench_fidelity.py \\
        --config studies/wide-final.toml --out fidelity.csv \\
        --setting a:train.lambda=8.34e-4,train.eta_max=0.0995,data.whiten_eps=1 --setting b:... \\
        --fidelity full48: --fidelity m700:model.hidden=700 --fidelity e12:train.n_s=735,train.cycles=2
    .venv/bin/python bench/bench_fidelity.py --out fidelity.csv --report [--metric test_mirror]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["setting", "fidelity", "values", "overrides", "val", "test_mirror", "test_plain", "cpu_s", "wall_s",
           "epochs", "averages"]


def parse_named(item: str) -> tuple[str, dict]:
    """'name:key=v,key=v' -> (name, {key: value}) with values read as TOML."""
    from pipeline.settings.config import parse_override

    name, _, rest = item.partition(":")
    return name, dict(parse_override(x) for x in rest.split(",") if x.strip())


def done_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)


def train_one(cfg, folder) -> dict:
    """One untracked training as the final trains: test with and without mirror averaging, CPU seconds."""
    from model.network import evaluate
    from model.train import train
    from pipeline.data.sources import dataset

    data = dataset(folder, cfg.data.split, cfg.data.val_size, cfg.data.val_fold, cfg.data.whitening)
    s = cfg.train_settings()
    cpu, wall = time.process_time(), time.perf_counter()
    result = train(data.X_train, data.y_train, data.X_val, data.y_val, s)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    net = result.last if result.last is not None else result.params  # the trained weights, not averaged
    test = evaluate(net, data.X_test, data.y_test, s.lam, tta_flip=True)["accuracy"]
    plain = evaluate(net, data.X_test, data.y_test, s.lam)["accuracy"]
    averages = ""
    if result.last is not None:  # the averages of the last j cycle ends (test, mirror averaged)
        from model.average import average

        ends = result.cycle_ends
        acc = {j: evaluate(average(ends[-j:]), data.X_test, data.y_test, s.lam, tta_flip=True)["accuracy"]
               for j in range(2, len(ends) + 1)}
        averages = " ".join(f"avg_{j}={v:.4f}" for j, v in acc.items())
    epochs = s.total_steps * s.batch_size / len(data.y_train)
    return {"val": f"{result.history['val_accuracy'][-1]:.4f}", "test_mirror": f"{test:.4f}",
            "test_plain": f"{plain:.4f}",
            "cpu_s": f"{cpu:.0f}", "wall_s": f"{wall:.0f}", "epochs": f"{epochs:.1f}", "averages": averages}


def run(a) -> None:
    from pipeline.data.sources import resolve
    from pipeline.settings.config import load

    folder = resolve(Path(os.environ["HPSEARCH_DATA"]))
    settings = [parse_named(x) for x in a.setting]
    fidelities = [parse_named(x) for x in a.fidelity if not a.only or parse_named(x)[0] in a.only]
    for fname, over in fidelities:  # fidelity-major: one whitening split per fidelity
        for sname, values in settings:
            if any(r["setting"] == sname and r["fidelity"] == fname for r in done_rows(a.out)):
                continue
            cfg = load("final", a.config, values | over)
            print(f"{time.strftime('%H:%M:%S')} training {sname} at {fname} (load {os.getloadavg()[0]:.1f})",
                  flush=True)
            row = {"setting": sname, "fidelity": fname, "values": values, "overrides": over} | train_one(cfg, folder)
            append(a.out, row)
            print(row, flush=True)


def report(a) -> None:
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from pipeline.search.confirm.fidelity import correlate

    rows = done_rows(a.out) + sum((done_rows(Path(k)) for k in a.known), [])
    table = pd.DataFrame(rows)
    ref = a.reference or table["fidelity"].iloc[0]
    # the cheap fidelities' metric (the search scores val), the reference's own (the final is judged on test)
    table["score"] = [float(row[a.reference_metric if f == ref else a.metric] or "nan")
                      for f, (_, row) in zip(table["fidelity"], table.iterrows(), strict=True)]
    wide = table.pivot_table(index="setting", columns="fidelity", values="score", aggfunc="first")
    print(wide.map(lambda v: f"{100 * v:.2f}").to_string())
    cost = table.assign(cpu=pd.to_numeric(table["cpu_s"], errors="coerce")).groupby("fidelity")["cpu"].mean()
    print(f"\nSpearman ρ of each fidelity's {a.metric} with {ref}'s {a.reference_metric}, over the settings "
          "measured at both:")
    for f in wide.columns:
        if f == ref:
            continue
        both = wide[[f, ref]].dropna()
        r = correlate(both[f].to_numpy(), both[ref].to_numpy())
        fisher = "n ≤ 3" if r.fisher is None else f"{r.fisher[0]:+.2f}..{r.fisher[1]:+.2f}"
        boot = "-" if r.bootstrap is None else f"{r.bootstrap[0]:+.2f}..{r.bootstrap[1]:+.2f}"
        print(f"  {f:>12}: ρ {r.rho:+.2f} over {r.n} (90 % Fisher z {fisher}, bootstrap {boot}); "
              f"CPU s per candidate {cost.get(f, float('nan')):.0f} (one thread)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "studies" / "wide-final.toml")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--setting", action="append", default=[], help="name:key=value,...")
    ap.add_argument("--fidelity", action="append", default=[], help="name:key=value,... (overrides)")
    ap.add_argument("--only", nargs="*", default=[], help="train these fidelities only")
    ap.add_argument("--report", action="store_true", help="print the table and the correlations, train nothing")
    ap.add_argument("--known", nargs="*", default=[], help="CSV files of rows measured elsewhere")
    ap.add_argument("--metric", default="test_mirror", choices=["test_mirror", "test_plain", "val"])
    ap.add_argument("--reference", help="the fidelity the others are compared with (default: the first)")
    ap.add_argument("--reference-metric", default="test_mirror", choices=["test_mirror", "test_plain", "val"])
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    report(a) if a.report else run(a)


if __name__ == "__main__":
    main()
