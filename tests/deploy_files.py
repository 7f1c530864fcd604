"""The programs deploy/ starts, read from its files, and the parsers and environment variables of those programs.

    for where, argv, env in programs("hpsearch"):       # ("compose worker", ["hpsearch", "pipeline", ...], {...})
        parse(hpsearch_cli(), "hpsearch", argv[1:])     # click's contexts, or BadLine; nothing runs
        unknown_variables(env, hpsearch_reads())        # names hpsearch never reads

Used by tests/test_deploy.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer.main
import yaml

from pipeline.workers.local import THREAD_VARS
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
ENV_EXAMPLE = DEPLOY / ".env.example"
BLAS_VARS = set(THREAD_VARS)  # read by NumPy's BLAS; pipeline/workers/local.py sets them for its workers


# ---- collecting command lines and environments from the deploy files --------------------------------------
def compose_services() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def k8s_containers() -> list[tuple[str, dict]]:
    """(file name, container spec) of every container and init container in deploy/k8s."""
    found = []
    for path in K8S:
        for doc in yaml.safe_load_all(path.read_text()):
            pod = (doc.get("spec") or {}).get("template", {}).get("spec")
            for c in (pod or {}).get("initContainers", []) + (pod or {}).get("containers", []):
                found.append((path.name, c))
    return found


def dockerfile_cmd() -> list[str]:
    (line,) = [x for x in (DEPLOY / "Dockerfile").read_text().splitlines() if x.startswith("CMD ")]
    return yaml.safe_load(line.removeprefix("CMD "))  # the exec form is a JSON array


def command_lines() -> list[tuple[str, list[str], dict]]:
    """(where, argv, environment) of every program a deploy file starts; environment as name -> value."""
    lines = [("Dockerfile CMD", dockerfile_cmd(), {})]
    for name, service in compose_services().items():
        if "command" in service:
            argv = service["command"]
            lines.append((f"compose {name}", shlex.split(argv) if isinstance(argv, str) else argv,
                          service.get("environment") or {}))
    for file, c in k8s_containers():
        argv = c.get("command", []) + c.get("args", [])
        if not argv or argv[:2] == ["sh", "-c"]:
            continue  # the image's own program (postgres), or the init container's wait loop
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        lines.append((f"{file} {c['name']}", argv, env))
    return lines


def programs(name: str) -> list[tuple[str, list[str], dict]]:
    return [line for line in command_lines() if Path(line[1][0]).name == name]


# ---- the programs' own parsers ------------------------------------------------------------------------------
class BadLine(Exception):
    """A command line its program's parser refuses."""


def parse(group, prog: str, argv: list[str]) -> list:
    """Parse argv as `prog argv…` would, down to the subcommand, without running anything: the click contexts.

    group: a click command group (Typer brings its own copy of click, so its classes are not click's)."""
    try:
        contexts = [group.make_context(prog, list(argv))]
        rest = contexts[-1]._protected_args + contexts[-1].args
        while hasattr(contexts[-1].command, "resolve_command") and rest:
            name, cmd, rest = contexts[-1].command.resolve_command(contexts[-1], rest)
            contexts.append(cmd.make_context(name, rest, parent=contexts[-1]))
            rest = contexts[-1]._protected_args + contexts[-1].args
    except Exception as e:
        if not hasattr(e, "format_message"):  # click's UsageError and BadParameter, in either copy of click
            raise
        raise BadLine(f"{prog} {shlex.join(argv)}: {e.format_message()}") from None
    if rest:
        raise BadLine(f"{prog} {shlex.join(argv)}: left over {rest}")
    return contexts


def hpsearch_cli():
    from pipeline.cli import app

    return typer.main.get_command(app)


def mlflow_cli():
    from mlflow.cli import cli

    return cli


def envvars_of(group) -> set[str]:
    """The environment variables that the options of any command in the group read."""
    found, todo = set(), [group]
    while todo:
        cmd = todo.pop()
        for p in cmd.params:
            found.update([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])
        if hasattr(cmd, "commands"):
            todo.extend(cmd.commands.values())
    return found


def read_by_the_package() -> set[str]:
    """Environment variables pipeline/ and model/ read themselves: os.environ[…], .get(…), os.getenv(…)."""
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    names = set()
    for path in [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "model").rglob("*.py")]:
        names.update(pattern.findall(path.read_text()))
    return names


def hpsearch_reads() -> set[str]:
    return envvars_of(hpsearch_cli()) | read_by_the_package() | BLAS_VARS


def mlflow_reads() -> set[str]:
    import mlflow.environment_variables as mev

    return envvars_of(mlflow_cli()) | {v.name for v in vars(mev).values()
                                       if isinstance(getattr(v, "name", None), str) and v.name.isupper()}


def unknown_variables(env: dict, known: set[str]) -> list[str]:
    """Names in env that the program does not read, except those another value expands ($(NAME) in Kubernetes)."""
    expanded = {m for v in env.values() if isinstance(v, str) for m in re.findall(r"\$\((\w+)\)", v)}
    return sorted(set(env) - known - expanded)
