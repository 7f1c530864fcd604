"""Issue #8: passwords never leave the process (output, MLflow, stores, `ps`); parallel TPE and QMC workers
draw distinct λ; a trial's owner is a process instance, so a repeated pid is not taken for a live owner.

Each command runs against store URLs that hold a password in the userinfo (SECRET) and in the query
(TOKEN); the tests look for those strings wherever a URL could end up.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import hpsearch, hpsearch_env
from tests.servers import free_port, mlflow_server

SECRET = "Sesame7Open"  # a password in a URL's userinfo
TOKEN = "Tok3nValue9"  # a password in a URL's query
CLOSED = free_port()  # nothing listens on it: connecting fails at once
PG_USERINFO = f"postgresql+psycopg2://hp:{SECRET}@127.0.0.1:{CLOSED}/optuna"
PG_QUERY = f"postgresql+psycopg2://hp@127.0.0.1:{CLOSED}/optuna?sslmode=disable&password={TOKEN}"
HTTP_DOWN = f"http://hp:{SECRET}@127.0.0.1:{CLOSED}"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


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


def files_under(folder: Path) -> list[Path]:
    """The files under folder (databases, artifacts, logs) whose bytes hold a secret."""
    return [f for f in folder.rglob("*") if f.is_file() and any(s.encode() in f.read_bytes() for s in (SECRET, TOKEN))]


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
    import pipeline.objective

    url = f"http://hp:{SECRET}@mlflow.example:5000/api/2.0/mlflow/runs/log-batch?token={TOKEN}"

    def lost_connection(*args, **kwargs):
        raise ConnectionError(f"API request to {url} failed: connection reset")

    monkeypatch.setattr(pipeline.objective, "train", lost_connection)
    storage, tracking = sqlite_urls(project)
    stores = ("--storage", storage, "--tracking-uri", tracking)
    shown = [cli(*stores, "search", "coarse", "--n-trials", "1", code=1), cli(*stores, "report"),
             report := cli(*stores, "report", "--json")]
    assert "mlflow.example:5000" in report, "the reason still says what failed"
    from pipeline.session import open_storage

    assert_no_secret(*shown, mlflow_records(MlflowClient(tracking)), optuna_records(open_storage(storage)))


# ---- whole commands on working stores with passwords ----------------------------------------------------
def run_every_command(stores: tuple[str, ...], cifar_dir: Path) -> dict[str, str]:
    """Each command that opens a store, the failing ones first (no study yet): their output."""
    commands = {
        "report before any study": (["report"], 1),
        "fine before coarse": (["search", "fine"], 1),
        "coarse": (["search", "coarse", "--n-trials", "2"], 0),
        "fine": (["search", "fine", "--n-trials", "2"], 0),
        "train": (["train", "--config", "studies/exercise-1.toml"], 0),
        "train-final": (["train-final"], 0),
        "predict": (["predict", str(cifar_dir / "test_batch")], 0),
        "report": (["report"], 0),
        "report --json": (["report", "--json"], 0),
    }
    return {name: cli(*stores, *args, code=code) for name, (args, code) in commands.items()}


@pytest.mark.slow
def test_no_command_shows_or_stores_a_password_of_sqlite_stores(project, cifar_dir, capfd):
    storage, tracking = sqlite_urls(project)
    out = run_every_command(("--storage", storage, "--tracking-uri", tracking), cifar_dir)
    assert "test accuracy" in out["train-final"] and "cifar10-lambda-fine" in out["report"], out
    assert f"sqlite:///{project}/studies/optuna.db?password=***;" in out["report before any study"]
    from pipeline.session import open_storage

    captured = capfd.readouterr()  # whatever reached the file descriptors besides typer's streams
    assert_no_secret(*out.values(), captured.out, captured.err, mlflow_records(MlflowClient(tracking, tracking)),
                     optuna_records(open_storage(storage)))
    assert files_under(project) == []


@pytest.mark.slow
def test_no_command_shows_or_stores_the_password_of_a_tracking_server(project, cifar_dir, tmp_path_factory, capfd):
    storage, _ = sqlite_urls(project)
    with mlflow_server(tmp_path_factory.mktemp("server")) as server:
        tracking = server.url.replace("http://", f"http://hp:{SECRET}@")
        stores = ("--storage", storage, "--tracking-uri", tracking)
        ui = cli(*stores, "ui")
        out = run_every_command(stores, cifar_dir)
        records = mlflow_records(MlflowClient(server.url, server.url))
    first = ui.splitlines()[0]  # the runs view on the server itself, with no credentials in the link
    assert first.startswith(f"MLflow UI: {server.url}/#/experiments/") and "hp:" not in ui, ui
    assert "test accuracy" in out["train-final"], out
    from pipeline.session import open_storage

    captured = capfd.readouterr()
    assert_no_secret(ui, *out.values(), captured.out, captured.err, records, optuna_records(open_storage(storage)))
    assert files_under(project) == []


# ---- the UI server's command line ---------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, process group) of every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return table


def process_family(root: int) -> set[int]:
    """root, its descendants, and every process in the process group of any of them."""
    table = _proc_table()
    family, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in family:
                family.add(pid)
                todo.append(pid)
    groups = {table[pid][1] for pid in family if pid in table} - {os.getpgrp()}
    return family | {pid for pid, (_, group) in table.items() if group in groups}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the command lines in /proc")
def test_the_ui_server_command_line_holds_no_password(project):
    _, tracking = sqlite_urls(project)
    port = free_port()
    env = hpsearch_env(project, MLFLOW_TRACKING_URI=tracking)  # the environment: flags would be in `ps` too
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    seen: dict[int, str] = {}
    groups: set[int] = set()  # the process groups this `hpsearch ui` started (the server leads its own)
    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("MLflow UI:") for line in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert any(line.startswith("MLflow UI:") for line in lines), lines
        watch_until = time.monotonic() + 10  # the server's job runner starts its workers a few seconds later
        while time.monotonic() < watch_until:
            family = process_family(proc.pid)
            seen |= {pid: cmd for pid in family if (cmd := cmdline(pid))}
            groups |= {group for pid, (_, group) in _proc_table().items() if pid in family}
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for group in groups - {os.getpgrp()}:  # whatever survived the stop
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    assert any("uvicorn" in cmd for cmd in seen.values()), seen  # the server itself was looked at
    assert_no_secret(*seen.values(), "".join(lines), err)
    assert files_under(project) == []  # the server's log included


# ---- parallel workers draw distinct λ ---------------------------------------------------------------------
def _workers_draw(kind: str, folder: Path, n_workers: int = 3, rounds: int = 3) -> list[list[float]]:
    """Workers started at once, each with its own sampler on one study: round r is every worker's r-th
    trial, each sampled before any λ of that round is stored (as processes starting together do: Optuna
    settles a trial's relative search space at its first suggest). λ per round, per worker."""
    from pipeline import config
    from pipeline.sampling import make_sampler
    from pipeline.session import open_storage

    cfg = config.load("coarse", overrides={"search.sampler": kind, "search.n_trials": n_workers * rounds})
    studies = [optuna.create_study(study_name="cifar10-lambda-coarse", storage=open_storage(str(folder / "o.journal")),
                                   sampler=make_sampler(cfg), direction="maximize", load_if_exists=True)
               for _ in range(n_workers)]
    drawn = []
    for _ in range(rounds):
        trials = [study.ask() for study in studies]
        for trial in trials:
            assert trial.relative_params is not None  # sampled now, while no trial of the round holds a λ
        drawn.append([t.suggest_float("lambda", 1e-5, 1e-1, log=True) for t in trials])
        for study, trial in zip(studies, trials, strict=True):
            study.tell(trial, 0.4 + 0.01 * trial.number)
    return drawn


@pytest.mark.parametrize("kind", ["tpe", "qmc"])
def test_workers_with_their_own_sampler_never_repeat_each_other(kind, tmp_path):
    drawn = _workers_draw(kind, tmp_path)
    assert len(set(drawn[0])) == 3, f"{kind}: the workers' first trials drew the same λ: {drawn[0]}"
    assert len({lam for row in drawn for lam in row}) == 9, drawn


def start_worker(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=project,
                            env=hpsearch_env(project, **ONE_THREAD), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tpe", "qmc"])
def test_three_processes_on_one_study_draw_distinct_lambdas(project, kind):
    procs = [start_worker(project, "search", "coarse", "--n-trials", "9", "--sampler", kind) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    from pipeline.session import open_storage

    study = optuna.load_study(study_name="cifar10-lambda-coarse",
                              storage=open_storage(str(project / "studies/optuna.journal")))
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 9
    firsts = {}  # each process's first trial
    for t in sorted(finished, key=lambda t: t.number):
        firsts.setdefault(t.user_attrs["pid"], t)
    assert len(firsts) >= 2, "one process ran every trial: nothing shared"
    assert len({t.params["lambda"] for t in firsts.values()}) == len(firsts), firsts
    if kind == "tpe":  # QMC's later points come from a study-wide counter that Optuna does not lock
        assert len({t.params["lambda"] for t in finished}) == 9, [t.params["lambda"] for t in finished]


# ---- a trial's owner is a process instance, not (host, pid) ---------------------------------------------------
def running_trial(study: optuna.Study, **attrs) -> optuna.Trial:
    trial = study.ask()
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    return trial


def test_a_running_trial_of_this_pid_but_another_process_instance_is_recovered():
    """As after a container restart: pid 1 again, but not the process that ran the trial."""
    from pipeline.workers import instance_of, owner, recover_orphans

    me = owner()
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process whose pid the trials below claim
    try:
        study = optuna.create_study(direction="maximize")
        earlier = running_trial(study, host=me["host"], pid=os.getpid(), instance="another-boot:4242")
        mine = running_trial(study, **me)
        reused = running_trial(study, host=me["host"], pid=sleeper.pid, instance="another-boot:4242")
        live = running_trial(study, host=me["host"], pid=sleeper.pid, instance=instance_of(sleeper.pid))
        remote = running_trial(study, host="another-machine", pid=os.getpid(), instance="another-boot:4242")
        assert sorted(recover_orphans(study)) == [earlier.number, reused.number]
    finally:
        sleeper.kill()
        sleeper.wait()
    states = {t.number: t.state for t in study.trials}
    assert states[earlier.number] == states[reused.number] == TrialState.FAIL
    assert states[mine.number] == states[live.number] == states[remote.number] == TrialState.RUNNING


def test_a_trial_whose_owner_is_half_written_is_not_an_orphan():
    """Another worker is writing the owner of its new trial, one user attr at a time: a reader that sees the host
    but not yet the pid must not fail the trial (CI saw "Cannot tell a FAIL trial" from three QMC workers)."""
    from pipeline.workers import owner, recover_orphans

    study = optuna.create_study(direction="maximize")
    running_trial(study, host=owner()["host"])
    running_trial(study, host=owner()["host"], instance="another-boot:4242")
    assert recover_orphans(study) == []
    assert {t.state for t in study.trials} == {TrialState.RUNNING}


def test_waiting_for_other_workers_ignores_a_trial_of_this_pid_from_another_instance():
    from pipeline.workers import owner, wait_until_settled

    study = optuna.create_study(direction="maximize")
    running_trial(study, host=owner()["host"], pid=os.getpid(), instance="another-boot:4242")
    settled = threading.Event()
    waiter = threading.Thread(target=lambda: (wait_until_settled(study, print, poll_s=0.05), settled.set()),
                              daemon=True)
    waiter.start()
    assert settled.wait(10), "waits for a trial whose process is long gone"


def test_search_fine_does_not_wait_for_a_dead_instance_of_its_own_pid(project):
    from pipeline.session import open_storage
    from pipeline.workers import owner

    storage = open_storage("studies/optuna.journal")
    coarse = optuna.create_study(study_name="cifar10-lambda-coarse", storage=storage, direction="maximize")
    dist = {"lambda": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    for lam, acc in [(1e-4, 0.40), (1e-2, 0.45)]:
        coarse.add_trial(optuna.trial.create_trial(params={"lambda": lam}, distributions=dist, value=acc))
    coarse.set_user_attr("n_trials", 2)
    running_trial(coarse, host=owner()["host"], pid=os.getpid(), instance="another-boot:4242")

    def too_slow(signum, frame):
        raise TimeoutError("search fine still waits after 120 s")

    before = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(120)
    try:
        out = cli("search", "fine", "--n-trials", "1")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert "fine: 1/1 trials finished, complete" in out
    assert "waiting for" not in out
