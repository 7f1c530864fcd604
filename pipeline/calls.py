"""What every API call and command shares: quiet libraries, and a failing tracking server named in one line.

Our own lines say what happened: Optuna's and MLflow's INFO logs and experimental warnings stay quiet, MLflow
prints no "View run at <tracking URI>" lines (the URI may hold a password), and an unreachable MLflow server
fails in seconds instead of retrying for minutes. A value the user set wins.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings

from pipeline.errors import UserError

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


@contextlib.contextmanager
def naming_the_tracking_server(session):
    """A request that an MLflow tracking server failed (an HTTP error, a proxy's page) says which server."""
    from mlflow.exceptions import MlflowException

    from pipeline.urls import is_http

    try:
        yield
    except MlflowException as e:
        if not is_http(session.tracking_uri):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"MLflow tracking server {session.shown_tracking} failed a request: {first[:300]}") from None


def api_call(method):
    """A public method: quiet libraries, and a failing tracking server named in one line."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with quietly(), naming_the_tracking_server(self.session):
            return method(self, *args, **kwargs)

    return call
