"""The `hpsearch` command line: parses options and calls into pipeline/; holds no logic of its own.

Heavy libraries (optuna, mlflow) are imported inside the commands so `hpsearch --help` stays fast.
"""

import gc

from pipeline.cli import inspect, search, train  # noqa: F401 - each module registers its commands
from pipeline.cli.common import app


def main() -> None:
    try:
        app()
    finally:
        # The interpreter's last garbage collection walks every object MLflow, SQLAlchemy and Optuna made: 0.65 s
        # of a process's exit (measured, docs/speed.md), paid by each `--jobs` worker and by the command after them.
        # Frozen objects are skipped; exit handlers still run and files still close.
        gc.freeze()
