"""The libraries kept quiet: our own lines say what happened.

Optuna's and MLflow's INFO logs and experimental warnings stay quiet, MLflow prints no "View run at <tracking
URI>" lines (the URI may hold a password), and an unreachable MLflow server fails in seconds instead of retrying
for minutes. The command line sets this once for its process (`quiet_libraries`); the Python API for the
duration of each call (`quietly`), then gives the notebook its own settings back. A value the user set wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

# MLflow's own environment knobs; a variable the user set keeps its value (os.environ.setdefault).
QUIET_ENV = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
             "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
QUIET_LEVELS = {"mlflow": logging.WARNING, "optuna": logging.ERROR}
EXPERIMENTAL = r".*is (an )?experimental"  # QMCSampler, heartbeats, metric names


def quiet_libraries() -> None:
    """The command line's process-wide settings, made once when it starts (see QUIET_ENV)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name, level in QUIET_LEVELS.items():  # in case the library was imported before: tests, notebooks
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", message=EXPERIMENTAL)


@contextlib.contextmanager
def quietly():
    """The same settings for the duration of one API call, then the notebook's own again."""
    added = [key for key in QUIET_ENV if key not in os.environ]
    levels = {name: logging.getLogger(name).level for name in QUIET_LEVELS}
    try:
        with warnings.catch_warnings():
            quiet_libraries()
            yield
    finally:
        for key in added:
            os.environ.pop(key, None)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
