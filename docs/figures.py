#!/usr/bin/env python3
"""Refresh the README's figures in docs/ from a project folder's stores (after `make pipeline` and the
two exercise runs):

    cd PROJECT && python /path/to/hpsearch/docs/figures.py

Copies the learning curves of the latest exercise-2 run and of the champion's final run, and draws
validation accuracy vs λ for the coarse and fine studies together. The MLflow UI screenshot is taken
separately (see docs/README.md).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))


def main() -> None:
    from pipeline.search.results import lambda_points
    from pipeline.session import Session
    from pipeline.tracking import plots

    session = Session()
    tracker = session.tracker
    client = tracker.client
    exercise = tracker.find_runs(stage="exercise-2")
    champion = client.get_model_version_by_alias("cifar10-mlp", "champion")
    with tempfile.TemporaryDirectory() as tmp:
        runs = ((exercise[-1].info.run_id, "curves-exercise-2.png"), (champion.run_id, "curves-final.png"))
        for run_id, name in runs:
            shutil.copy(client.download_artifacts(run_id, "curves.png", tmp), DOCS / name)
    fine = session.load_study("fine")
    points = {stage: lambda_points(session.load_study(stage)) for stage in ("coarse", "fine")}
    fig = plots.accuracy_vs_lambda(points, "Validation accuracy vs λ: coarse and fine",
                                   (fine.user_attrs["lambda_min"], fine.user_attrs["lambda_max"]), 5000)
    fig.savefig(DOCS / "accuracy-vs-lambda.png", dpi=90)
    for png in sorted(DOCS.glob("*.png")):
        print(f"{png.name}: {png.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
