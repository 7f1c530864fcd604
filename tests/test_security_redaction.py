"""Issue #8: passwords never leave the process. redact() and redact_text() hide them in URLs and messages; an
unreachable or refusing store is one error line that names it without its password; a failure that quotes a URL is
recorded without it.

Each command runs against store URLs that hold a password in the userinfo (SECRET) and in the query
(TOKEN); the tests look for those strings wherever a URL could end up (whole commands and `ps`:
test_security_commands.py).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from pathlib import Path

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.conftest import hpsearch
from tests.servers import free_port

SECRET = "Sesame7Open"  # a password in a URL's userinfo
TOKEN = "Tok3nValue9"  # a password in a URL's query
CLOSED = free_port()  # nothing listens on it: connecting fails at once
PG_USERINFO = f"postgresql+psycopg2://hp:{SECRET}@127.0.0.1:{CLOSED}/optuna"
PG_QUERY = f"postgresql+psycopg2://hp@127.0.0.1:{CLOSED}/optuna?sslmode=disable&password={TOKEN}"
HTTP_DOWN = f"http://hp:{SECRET}@127.0.0.1:{CLOSED}"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (SECRET, TOKEN):
            at = text.find(secret)
            assert at < 0, f"{secret!r} shown: ...{text[max(0, at - 150): at + 50]}..."


def sqlite_urls(folder: Path) -> tuple[str, str]:
    """Working Optuna and MLflow stores with a password in the query (SQLAlchemy ignores it for sqlite)."""
    return (f"sqlite:///{folder}/studies/optuna.db?password={TOKEN}",
            f"sqlite:///{folder}/mlruns/mlflow.db?password={TOKEN}")


def cli(*args: str, code: int = 0) -> str:
    result = hpsearch(*args, code=code)
    return result.stdout + "\n" + result.stderr


def mlflow_records(client: MlflowClient) -> str:
    """Every param, tag, name and registered model version field of every run, as one text."""
    texts = []
    for exp in client.search_experiments(view_type=ViewType.ALL):
        texts.append(f"{exp.name} {exp.artifact_location} {exp.tags}")
        for run in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL):
            texts.append(json.dumps([run.info.run_name, run.info.artifact_uri, run.data.params, run.data.tags]))
    for version in client.search_model_versions():
        texts.append(json.dumps([version.source, version.description, version.tags, version.run_link]))
    assert len(texts) > 1, "no runs: nothing was checked"
    return "\n".join(texts)


def optuna_records(storage) -> str:
    """The user and system attrs of every study and trial in an Optuna storage, as one text."""
    texts = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        texts.append(json.dumps([study.user_attrs, storage.get_study_system_attrs(study._study_id)], default=str))
        texts += [json.dumps([t.user_attrs, t.system_attrs], default=str) for t in study.trials]
    return "\n".join(texts)


# ---- redaction --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, shown", [
    (PG_USERINFO, f"postgresql+psycopg2://hp:***@127.0.0.1:{CLOSED}/optuna"),
    (PG_QUERY, f"postgresql+psycopg2://hp@127.0.0.1:{CLOSED}/optuna?sslmode=disable&password=***"),
    (f"postgresql://hp:{SECRET}@db/optuna?sslpassword={TOKEN}", "postgresql://hp:***@db/optuna?sslpassword=***"),
    (f"sqlite:////abs/optuna.db?password={TOKEN}", "sqlite:////abs/optuna.db?password=***"),
    (f"sqlite:///rel/mlflow.db?password={TOKEN}", "sqlite:///rel/mlflow.db?password=***"),
    (f"http://hp:{SECRET}@127.0.0.1:5000/?access_token={TOKEN}#/experiments",
     "http://hp:***@127.0.0.1:5000/?access_token=***#/experiments"),
    (f"https://s3.example/b/k?X-Amz-Credential={SECRET}&X-Amz-Signature={TOKEN}&versionId=3",
     "https://s3.example/b/k?X-Amz-Credential=***&X-Amz-Signature=***&versionId=3"),
    ("sqlite:////abs/mlflow.db?mode=ro", "sqlite:////abs/mlflow.db?mode=ro"),
    ("studies/optuna.journal", "studies/optuna.journal"),
])
def test_redact_hides_userinfo_and_query_passwords_and_keeps_the_rest_of_the_url(url, shown):
    from pipeline.urls import redact

    assert redact(url) == shown


def test_redact_text_hides_every_url_password_in_a_message_and_keeps_its_words():
    from pipeline.urls import redact, redact_text

    message = (f"could not reach http://hp:{SECRET}@mlflow.example/api?token={TOKEN} nor "
               f"'postgresql://hp@db/optuna?password={TOKEN}': refused")
    assert redact_text(message) == ("could not reach http://hp:***@mlflow.example/api?token=*** nor "
                                    "'postgresql://hp@db/optuna?password=***': refused")
    # The error handler runs every message through redact_text, also those built with redact() already.
    built = f"no search study in {redact(f'sqlite:////abs/optuna.db?password={TOKEN}')}; run `hpsearch ...`"
    assert redact_text(built) == built == "no search study in sqlite:////abs/optuna.db?password=***; run `hpsearch ...`"


# ---- error paths: one line, the store named, no password -----------------------------------------------
class _Answer(http.server.BaseHTTPRequestHandler):
    """A fake tracking server: 200 to everyone (an MLflow server's API answers the probe with 200)."""

    code = 200

    def do_GET(self):
        self.send_response(self.code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class _Refuse(_Answer):
    code = 401


@contextlib.contextmanager
def fake_tracking_server(handler):
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://hp:{SECRET}@127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("args, shown", [
    (["--storage", PG_USERINFO, "report"], f"Optuna storage postgresql+psycopg2://hp:***@127.0.0.1:{CLOSED}/optuna"),
    (["--storage", PG_QUERY, "search", "coarse", "--n-trials", "1"], "password=*** is unreachable"),
    (["--storage", PG_QUERY, "report", "--json"], "password=*** is unreachable"),
    (["--tracking-uri", HTTP_DOWN, "search", "coarse", "--n-trials", "1"],
     f"MLflow tracking server http://hp:***@127.0.0.1:{CLOSED} is unreachable"),
    (["--tracking-uri", HTTP_DOWN, "train", "--config", "studies/exercise-1.toml"], "hp:***@127.0.0.1"),
    (["--tracking-uri", HTTP_DOWN, "train-final", "--lambda", "0.01"], "hp:***@127.0.0.1"),
    (["--tracking-uri", HTTP_DOWN, "predict", "cat.png"], "hp:***@127.0.0.1"),
    (["--tracking-uri", HTTP_DOWN, "ui"], "hp:***@127.0.0.1"),
])
def test_unreachable_stores_are_one_line_without_the_password(project, args, shown):
    result = hpsearch(*args, code=1)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error:") and shown in line, line
    assert_no_secret(line)


def test_a_tracking_server_refusing_the_request_is_named_without_the_password(project):
    with fake_tracking_server(_Refuse) as uri:
        result = hpsearch("--tracking-uri", uri, "search", "coarse", "--n-trials", "1", code=1)
    port = uri.rsplit(":", 1)[1]
    assert result.stderr.splitlines() == [
        f"error: MLflow tracking server http://hp:***@127.0.0.1:{port} refused the request (HTTP 401); check its "
        "--allowed-hosts and credentials"]


def test_ui_on_a_tracking_server_names_it_without_the_password(project):
    """A server that answers the probe but not the API: the error names it, without the password."""
    with fake_tracking_server(_Answer) as uri:
        result = hpsearch("--tracking-uri", uri, "ui", code=1)
    assert SECRET not in result.output
    assert f"http://hp:***@127.0.0.1:{uri.rsplit(':', 1)[1]}" in result.stderr


def test_store_errors_name_a_sqlite_store_without_the_password(project):
    storage, tracking = sqlite_urls(project)
    shown_storage = f"sqlite:///{project}/studies/optuna.db?password=***"
    assert hpsearch("--storage", storage, "report", code=1).stderr.splitlines() == [
        f"error: no search study in {shown_storage}; run `hpsearch search coarse` first"]
    assert hpsearch("--storage", storage, "search", "fine", code=1).stderr.splitlines() == [
        f"error: no coarse study 'cifar10-lambda-coarse' in {shown_storage}; run `hpsearch search coarse` first"]
    assert hpsearch("--tracking-uri", tracking, "predict", "cat.png", code=1).stderr.splitlines() == [
        f"error: no model registered as cifar10-mlp@champion in sqlite:///{project}/mlruns/mlflow.db?password=***; "
        "run `hpsearch train-final` first"]


def test_a_failure_that_quotes_a_url_is_recorded_without_the_password(project, monkeypatch):
    """A trial whose exception quotes a URL (MLflow's "API request to http://u:pw@... failed"): the error
    line, the run's tags, the trial's stored reason and `report --json` keep the host and drop the password."""
    import pipeline.search.objective

    url = f"http://hp:{SECRET}@mlflow.example:5000/api/2.0/mlflow/runs/log-batch?token={TOKEN}"

    def lost_connection(*args, **kwargs):
        raise ConnectionError(f"API request to {url} failed: connection reset")

    monkeypatch.setattr(pipeline.search.objective, "train", lost_connection)
    storage, tracking = sqlite_urls(project)
    stores = ("--storage", storage, "--tracking-uri", tracking)
    shown = [cli(*stores, "search", "coarse", "--n-trials", "1", code=1), cli(*stores, "report"),
             report := cli(*stores, "report", "--json")]
    assert "mlflow.example:5000" in report, "the reason still says what failed"
    from pipeline.session import open_storage

    assert_no_secret(*shown, mlflow_records(MlflowClient(tracking)), optuna_records(open_storage(storage)))
