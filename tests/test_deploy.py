"""deploy/: what can be checked without a container runtime.

No image can be built or pulled here, so: Debian's `docker-compose config` validates the compose file (it needs no
daemon); every `hpsearch` and `mlflow server` command line in every deploy file parses with that program's own
click parser; the containers that run them set only environment variables the program reads; no store URL or
password is in an argv; and the Kubernetes manifests refer only to objects they define.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy_files import (
    BLAS_VARS,
    DEPLOY,
    ENV_EXAMPLE,
    K8S,
    BadLine,
    command_lines,
    hpsearch_cli,
    hpsearch_reads,
    mlflow_cli,
    mlflow_reads,
    parse,
    programs,
    unknown_variables,
)


# ---- tests ----------------------------------------------------------------------------------------------------
def test_every_hpsearch_command_line_parses_and_sets_only_variables_it_reads(monkeypatch):
    for var in [v for v in os.environ if v.startswith(("HPSEARCH_", "MLFLOW_"))]:
        monkeypatch.delenv(var)  # click reads envvars while parsing: only the files' own lines count
    lines = programs("hpsearch")
    assert {where.split()[0] for where, _, _ in lines} == {"Dockerfile", "compose", "worker-job.yaml"}, lines
    known = hpsearch_reads()
    for where, argv, env in lines:
        contexts = parse(hpsearch_cli(), "hpsearch", argv[1:])
        assert contexts[-1].command.name == "pipeline", (where, argv)
        assert contexts[-1].params["jobs"] == 1, f"{where}: one worker per container, BLAS threads set to 1"
        assert unknown_variables(env, known) == [], f"{where} sets variables hpsearch never reads"
    workers = [env for where, _, env in lines if where != "Dockerfile CMD"]
    for env in workers:  # the stores come by environment, never by argv
        assert {"HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI"} <= set(env)
        assert env["HPSEARCH_STORAGE"].startswith("postgresql+psycopg2://")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert BLAS_VARS <= set(env) and {env[v] for v in BLAS_VARS} == {"1"}


def test_every_mlflow_server_command_line_parses_and_serves_artifacts(monkeypatch):
    for var in [v for v in os.environ if v.startswith("MLFLOW_")]:
        monkeypatch.delenv(var)
    lines = programs("mlflow")
    assert {where.split()[0] for where, _, _ in lines} == {"compose", "mlflow.yaml"}, lines
    for where, argv, env in lines:
        server = parse(mlflow_cli(), "mlflow", argv[1:])[-1]
        assert server.command.name == "server", where
        assert server.params["artifacts_destination"] == "/mlartifacts", where
        assert server.params["serve_artifacts"], f"{where}: the workers upload through the server"
        assert "mlflow:5000" in server.params["allowed_hosts"].split(","), f"{where}: the workers' Host header"
        assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
        assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow"), "MLflow's own database"
        assert unknown_variables(env, mlflow_reads()) == [], f"{where} sets variables MLflow never reads"


def test_the_image_holds_what_the_package_and_the_worker_need():
    """What deploy/Dockerfile copies exists, is let through by its .dockerignore, and covers pyproject's packages,
    its readme and the study files the worker reads from ./studies."""
    import setuptools

    from pipeline.settings import toml

    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    sources = [src for line in lines if line.startswith("COPY ") for src in line.split()[1:-1]]
    assert all(list(ROOT.glob(src)) for src in sources), sources
    allowed = {line[1:].removesuffix("/**") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert set(sources) <= allowed, set(sources) - allowed
    project = toml.loads((ROOT / "pyproject.toml").read_text())
    packages = setuptools.find_packages(ROOT, include=project["tool"]["setuptools"]["packages"]["find"]["include"])
    assert {"pipeline.cli", "pipeline.search.confirm", "model.cifar10"} <= set(packages), packages  # subpackages too
    needed = {*(name.split(".")[0] for name in packages), project["project"]["readme"], "pyproject.toml"}
    assert needed <= set(sources), needed - set(sources)
    assert "studies/*.toml" in sources
    assert any(line.startswith("RUN pip install") and "[postgres]" in line for line in lines)


def test_no_password_or_store_url_in_any_argv():
    for where, argv, _ in command_lines():
        line = shlex.join(argv)
        assert "PASSWORD" not in line and "postgresql" not in line and "change-me" not in line, where


@pytest.mark.parametrize("argv, env, complaint", [
    (["hpsearch", "pipeline", "--job", "1"], {}, "No such option"),
    (["hpsearch", "pipline"], {}, "No such command"),
    (["hpsearch", "pipeline", "--jobs", "0"], {}, "--jobs"),
    (["hpsearch", "pipeline"], {"HPSEARCH_STORAGE_URL": "x"}, "HPSEARCH_STORAGE_URL"),
])
def test_the_checks_catch_a_wrong_option_or_variable(argv, env, complaint):
    """The helpers above fail on what a typo in a deploy file would be."""
    with pytest.raises((BadLine, AssertionError), match=complaint):
        parse(hpsearch_cli(), "hpsearch", argv[1:])
        assert not unknown_variables(env, hpsearch_reads()), unknown_variables(env, hpsearch_reads())


def test_kubernetes_manifests_refer_only_to_what_they_define():
    docs = [d for p in K8S for d in yaml.safe_load_all(p.read_text())]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("StatefulSet", "postgres"), ("Service", "postgres"), ("Deployment", "mlflow"), ("Service", "mlflow"),
            ("PersistentVolumeClaim", "mlflow-artifacts"), ("Job", "hpsearch-worker")} <= kinds
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in docs if d["kind"] == "Secret"}
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    config_maps = {g["name"] for g in kustomization["configMapGenerator"]}
    for g in kustomization["configMapGenerator"]:
        assert all((DEPLOY / f).is_file() for f in g["files"]), g
    assert sorted(kustomization["resources"]) == sorted(f"k8s/{p.name}" for p in K8S if p.name != "worker-job.yaml")
    pods = [d for d in docs if "template" in d.get("spec", {})]
    for d in pods:
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        if "selector" in d["spec"]:
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps, v
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in kinds, v
        claims = {v["name"] for v in spec.get("volumes", [])}
        claims |= {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert {m["name"] for m in c.get("volumeMounts", [])} <= claims, c["name"]
            defined = []
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], ()), ref
                # Kubernetes expands $(NAME) only from variables listed before it.
                assert set(re.findall(r"\$\((\w+)\)", e.get("value", ""))) <= set(defined), e["name"]
                defined.append(e["name"])
    services = [d for d in docs if d["kind"] == "Service"]
    for s in services:
        assert any(s["spec"]["selector"].items() <= p["spec"]["template"]["metadata"]["labels"].items()
                   for p in pods), s["metadata"]["name"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["spec"]["parallelism"] > 1 and "completions" not in job["spec"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


# ---- docker-compose config ------------------------------------------------------------------------------------
def compose_config(env_file: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = "Debian's docker-compose is not installed (apt-get install docker-compose); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "CIFAR10_DIR", "WORKERS")}
    return subprocess.run([exe, "--env-file", str(env_file), "-f", str(DEPLOY / "compose.yaml"), "config"],
                          capture_output=True, text=True, env=env, timeout=60)


def test_docker_compose_validates_the_compose_file():
    done = compose_config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "mlflow", "worker"}
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert worker["environment"]["HPSEARCH_DATA"] == "/data"
    assert any(v.endswith(":/data:ro") for v in worker["volumes"]), worker["volumes"]
    mlflow = services["mlflow"]
    assert (worker["image"], worker["build"]) == (mlflow["image"], mlflow["build"]), "one image, built by compose"
    assert mlflow["build"]["dockerfile"] == "deploy/Dockerfile" and Path(mlflow["build"]["context"]) == ROOT
    assert any(v.startswith("mlflow-artifacts:/mlartifacts") for v in mlflow["volumes"]), mlflow["volumes"]
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "optuna"
    initdb = [v for v in services["postgres"]["volumes"] if "/docker-entrypoint-initdb.d" in v]
    assert initdb and Path(initdb[0].split(":")[0], "create-mlflow-db.sql").is_file(), initdb


def test_docker_compose_refuses_a_missing_password(tmp_path):
    env_file = tmp_path / "no-password.env"
    env_file.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines()
                                if not line.startswith("POSTGRES_PASSWORD=")))
    done = compose_config(env_file)
    assert done.returncode != 0 and "set POSTGRES_PASSWORD" in done.stderr, (done.returncode, done.stderr)
