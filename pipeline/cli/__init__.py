"""The `hpsearch` command line: parses options and calls into pipeline/; holds no logic of its own.

Heavy libraries (optuna, mlflow) are imported inside the commands so `hpsearch --help` stays fast.
"""

from pipeline.cli import inspect, search, train  # noqa: F401 - each module registers its commands
from pipeline.cli.common import app


def main() -> None:
    app()
