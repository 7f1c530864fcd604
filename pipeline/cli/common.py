"""What every command shares: the Typer app, the global options, one session per command, one-line errors."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import Terminated, UserError
from pipeline.names import (
    DATA_ENV,
    DEBUG_ENV,
    DEFAULT_EXPERIMENT,
    DEFAULT_GRACE_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    EXPERIMENT_ENV,
    GRACE_ENV,
    HEARTBEAT_ENV,
    STORAGE_ENV,
    TRACKING_ENV,
)

# NumPy asks the kernel for transparent huge pages on every large array (madvise). Where the kernel then
# compacts memory synchronously (THP "madvise" with defrag "madvise", as on this project's 2-core VMs),
# loading CIFAR-10 took 11.3 s instead of 1.9 s, and training speed was the same either way (docs/speed.md).
# Read once, when NumPy is imported, which no command has done yet; a user's own setting wins, and workers
# inherit it.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

app = typer.Typer(
    name="hpsearch",
    help="Hyperparameter search for λ of a NumPy two-layer network on CIFAR-10, tracked in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Settings file.", show_default="studies/<stage>.toml")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override one setting, e.g. --set train.n_s=300 (repeatable).")
]
TrialsOpt = Annotated[
    int | None,
    typer.Option("--n-trials", help="Finished trials the stage should hold.",
                 show_default="search.n_trials of the file"),
]
SamplerOpt = Annotated[
    str | None, typer.Option("--sampler", help="random | tpe | qmc.", show_default="search.sampler of the file")
]
PruneOpt = Annotated[
    bool | None, typer.Option("--prune/--no-prune", help="Median pruning.", show_default="search.prune of the file")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the MLflow UI on 127.0.0.1.")]
OpenOpt = Annotated[bool, typer.Option("--open", help="Open the page in the web browser.")]


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(envvar=DATA_ENV, help="CIFAR-10 folder or archive; downloads when unset.")
    ] = None,
    storage: Annotated[
        str, typer.Option(envvar=STORAGE_ENV, help="Optuna storage: a journal file path or a database URL.")
    ] = DEFAULT_STORAGE,
    tracking_uri: Annotated[
        str | None,
        typer.Option(envvar=TRACKING_ENV, help="MLflow tracking URI.", show_default=DEFAULT_TRACKING_URI),
    ] = None,
    experiment: Annotated[
        str, typer.Option(envvar=EXPERIMENT_ENV, help="MLflow experiment and study prefix.")
    ] = DEFAULT_EXPERIMENT,
    heartbeat_s: Annotated[
        int, typer.Option(envvar=HEARTBEAT_ENV, help="Seconds between a worker's heartbeats on a database storage.")
    ] = DEFAULT_HEARTBEAT_S,
    grace_s: Annotated[
        int, typer.Option(envvar=GRACE_ENV, help="A trial whose heartbeat is older than this "
                                                                  "(seconds) is failed: its worker died.")
    ] = DEFAULT_GRACE_S,
) -> None:
    """Search λ (coarse → fine), train the final model, and compare runs in the MLflow UI."""
    from pipeline.session import Stores
    from pipeline.terminal.quiet import quiet_libraries

    quiet_libraries()
    ctx.obj = Stores(data_dir, storage, tracking_uri, experiment, heartbeat_s, grace_s)


@contextlib.contextmanager
def session(ctx: typer.Context, progress: bool = True):
    """A Session for the command; any error a user can cause becomes one line and an exit code."""
    from pipeline.workers.local import await_go

    await_go()  # a --jobs worker: until its starter has opened the stores
    with errors():
        from pipeline.api import naming_the_tracking_server
        from pipeline.session import Session
        from pipeline.terminal.lines import Lines, open_terminal

        with open_terminal() if progress else Lines() as terminal:
            s = Session(ctx.obj, terminal)
            with naming_the_tracking_server(s):
                yield s


@contextlib.contextmanager
def errors():
    signal.signal(signal.SIGTERM, _raise_terminated)
    # Python leaves SIGINT ignored when it starts ignored (a shell's background job): Ctrl-C and `kill -INT`
    # must still stop a search the documented way, marking its trial FAIL.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except UserError as e:
        fail(str(e), e.exit_code)
    except Terminated:  # before KeyboardInterrupt, its base class
        fail("terminated: the running trial is marked FAIL and its run KILLED; run the same command to resume", 143)
    except KeyboardInterrupt:
        fail("interrupted: the running trial is marked FAIL and its run KILLED; run the same command to resume", 130)
    except Exception as e:  # an unexpected failure still ends in one line; HPSEARCH_DEBUG=1 shows the traceback
        if os.environ.get(DEBUG_ENV):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        fail(f"{type(e).__name__}: {first[:400]} (set HPSEARCH_DEBUG=1 for the traceback)", 1)


def _raise_terminated(signum, frame):
    raise Terminated()


def fail(message: str, code: int):
    from pipeline.urls import redact_text

    typer.echo(f"error: {redact_text(message)}", err=True)
    raise typer.Exit(code)


def settings(stage: str, config: Path | None = None, sets: list[str] | None = None, typed: dict | None = None):
    """The stage's settings file with --set strings and typed options ("search.n_trials": 3) applied."""
    from pipeline.api import load_settings

    return load_settings(stage, config, typed, sets)
