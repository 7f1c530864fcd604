"""The `hpsearch` command line: parses options and calls into pipeline/; holds no logic of its own.

Heavy libraries (optuna, mlflow) are imported inside the commands so `hpsearch --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import Terminated, UserError

app = typer.Typer(
    name="hpsearch",
    help="Hyperparameter search for λ of a NumPy two-layer network on CIFAR-10, tracked in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
search_app = typer.Typer(
    help="Run a search stage (coarse, then fine); rerunning one completes it.", no_args_is_help=True
)
app.add_typer(search_app, name="search")

DEFAULT_STORAGE = "studies/optuna.journal"

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Settings file.", show_default="studies/<stage>.toml")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override one setting, e.g. --set train.n_s=300 (repeatable).")
]
TrialsOpt = Annotated[
    int | None,
    typer.Option(
        "--n-trials", help="Finished trials the stage should hold.", show_default="search.n_trials of the file"
    ),
]
SamplerOpt = Annotated[
    str | None, typer.Option("--sampler", help="random | tpe | qmc.", show_default="search.sampler of the file")
]
PruneOpt = Annotated[
    bool | None, typer.Option("--prune/--no-prune", help="Median pruning.", show_default="search.prune of the file")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(envvar="HPSEARCH_DATA", help="CIFAR-10 folder or archive; downloads when unset.")
    ] = None,
    storage: Annotated[
        str, typer.Option(envvar="HPSEARCH_STORAGE", help="Optuna storage: a journal file path or a database URL.")
    ] = DEFAULT_STORAGE,
    tracking_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI.", show_default="sqlite:///mlruns/mlflow.db"),
    ] = None,
    experiment: Annotated[str, typer.Option(envvar="HPSEARCH_EXPERIMENT", help="MLflow experiment and study prefix.")]
    = "cifar10-lambda",
) -> None:
    """Search λ (coarse → fine), train the final model, and compare runs in the MLflow UI."""
    ctx.obj = {"data_dir": data_dir, "storage_url": storage, "tracking_uri": tracking_uri, "experiment": experiment}


@contextlib.contextmanager
def session(ctx: typer.Context, progress: bool = True):
    """A Session for the command; any error a user can cause becomes one line and an exit code."""
    with _errors():
        from pipeline.progress import Progress, make_progress
        from pipeline.stages import Session

        bars = make_progress() if progress else Progress()
        with bars:
            yield Session(**ctx.obj, progress=bars)


@contextlib.contextmanager
def _errors():
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except UserError as e:
        _fail(str(e), e.exit_code)
    except Terminated:  # before KeyboardInterrupt, its base class
        _fail("terminated: the running trial is marked FAIL and its run KILLED; run the same command to resume", 143)
    except KeyboardInterrupt:
        _fail("interrupted: the running trial is marked FAIL and its run KILLED; run the same command to resume", 130)
    except Exception as e:  # an unexpected failure still ends in one line; HPSEARCH_DEBUG=1 shows the traceback
        if os.environ.get("HPSEARCH_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        _fail(f"{type(e).__name__}: {first[:400]} (set HPSEARCH_DEBUG=1 for the traceback)", 1)


def _raise_terminated(signum, frame):
    raise Terminated()


def _fail(message: str, code: int):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _stage_config(stage: str, config: Path | None, sets: list[str] | None, n_trials=None, sampler=None, prune=None):
    from pipeline import config as cfgmod

    overrides = list(sets or [])
    if n_trials is not None:
        overrides.append(f"search.n_trials={n_trials}")
    if sampler is not None:
        overrides.append(f'search.sampler="{sampler}"')
    if prune is not None:
        overrides.append(f"search.prune={str(prune).lower()}")
    return cfgmod.load(stage, config, overrides)


def _search(ctx, stage, config, sets, n_trials, sampler, prune):
    with session(ctx) as s:
        from pipeline.stages import run_search

        summary = run_search(s, stage, _stage_config(stage, config, sets, n_trials, sampler, prune))
        _print_summary(summary)


def _print_summary(summary) -> None:
    lo, hi = summary.bounds
    done = "complete" if summary.complete else "not complete yet (other workers still running?)"
    typer.echo(f"{summary.stage}: {summary.n_finished}/{summary.n_target} trials finished, {done}")
    typer.echo(f"  λ range       {lo:.3g} .. {hi:.3g} (log-uniform)")
    if summary.best_lambda is not None:
        typer.echo(f"  best λ        {summary.best_lambda:.4g}")
        typer.echo(f"  best val acc  {summary.best_value:.4f}")
    typer.echo(f"  study {summary.study_name}, MLflow parent run {summary.parent_run_id}")


@search_app.command("coarse")
def search_coarse(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, n_trials: TrialsOpt = None,
    sampler: SamplerOpt = None, prune: PruneOpt = None,
) -> None:
    """Sample λ log-uniformly over [lambda_min, lambda_max] until the study holds n_trials finished trials.

    Example: hpsearch search coarse --n-trials 8
    """
    _search(ctx, "coarse", config, set_, n_trials, sampler, prune)


@search_app.command("fine")
def search_fine(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, n_trials: TrialsOpt = None,
    sampler: SamplerOpt = None, prune: PruneOpt = None,
) -> None:
    """Search λ between the coarse study's two best values, widened by ±widen in log10.

    Example: hpsearch search fine
    """
    _search(ctx, "fine", config, set_, n_trials, sampler, prune)


@app.command("train-final")
def train_final(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Use this λ instead of the best searched one.")] = None,
    select: Annotated[
        str | None,
        typer.Option("--select", help="one-se | best: how to pick λ from the searches.", show_default="search.select"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Train again even if this exact run finished before.")]
    = False,
) -> None:
    """Train on 49,000 images with the best searched λ, test on test_batch, register it as cifar10-mlp@champion.

    --select one-se takes instead the largest λ within one standard error of the best validation accuracy.

    Example: hpsearch train-final
    """
    with session(ctx) as s:
        from pipeline.runs import train_final as run

        sets = [*(set_ or []), *([f'search.select="{select}"'] if select else [])]
        result = run(s, _stage_config("final", config, sets), lam, force)
        _print_run(result)


def _print_run(result) -> None:
    note = " (already trained with these settings; --force to retrain)" if result.reused else ""
    typer.echo(f"{result.name}: λ = {result.lam:.4g}{note}")
    typer.echo(f"  test accuracy  {result.test_accuracy:.4f}")
    typer.echo(f"  val accuracy   {result.val_accuracy:.4f}")
    typer.echo(f"  MLflow run     {result.run_id}")
    if result.model_version:
        typer.echo(f"  model          models:/cifar10-mlp/{result.model_version} (alias champion)")


@app.command("train")
def train_one(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", help="Settings file, e.g. studies/exercise-1.toml.")],
    set_: SetOpt = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="λ [default: train.lambda from the file].")] = None,
) -> None:
    """One tracked training with the file's settings (the report's exercises).

    Example: hpsearch train --config studies/exercise-1.toml
    """
    with session(ctx) as s:
        from pipeline.runs import train_run

        cfg = _stage_config(config.stem, config, set_)
        if lam is not None and lam < 0:
            raise UserError(f"--lambda must be ≥ 0; got {lam}")
        result = train_run(s, cfg, config.stem, cfg["train.lambda"] if lam is None else lam, role="single")
        _print_run(result)


@app.command("pipeline")
def pipeline(
    ctx: typer.Context,
    n_trials: TrialsOpt = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Final λ instead of the best searched one.")] = None,
) -> None:
    """Coarse search, fine search and final training in order; each step resumes where it stopped.

    Example: HPSEARCH_DATA=~/cifar hpsearch pipeline
    """
    with session(ctx) as s:
        from pipeline.runs import train_final as run_final
        from pipeline.stages import run_search

        for stage in ("coarse", "fine"):
            _print_summary(run_search(s, stage, _stage_config(stage, None, None, n_trials)))
        _print_run(run_final(s, _stage_config("final", None, None), lam))


@app.command("gradcheck")
def gradcheck(
    ctx: typer.Context,
    samples: Annotated[int, typer.Option(help="First samples to check on.")] = 10,
    dims: Annotated[int | None, typer.Option(help="First input dimensions only [default: all 3072].")] = None,
    hidden: Annotated[int, typer.Option(help="Hidden units.")] = 50,
    lam: Annotated[float, typer.Option("--lambda", help="λ of the checked cost.")] = 0.01,
) -> None:
    """Compare analytic and centered-difference gradients (h = 1e-5, float64): the report's Table 1.

    Example: hpsearch gradcheck --samples 10 --dims 20
    """
    with session(ctx, progress=False) as s:
        from model import gradcheck as gc

        data = s.dataset("exercise", 10000)  # the report checks on the first samples of data_batch_1
        table = gc.check(data.X_train, data.y_train, hidden=hidden, lam=lam, n=samples, dims=dims)
        typer.echo(f"gradient check: first {samples} samples, {dims or data.X_train.shape[1]} dims, "
                   f"m = {hidden}, λ = {lam}, float64")
        typer.echo(f"{'param':<6}{'mean abs err':>14}{'max abs err':>14}{'max rel err':>14}")
        for name, row in table.items():
            typer.echo(f"{name:<6}{row['mean_abs']:>14.3e}{row['max_abs']:>14.3e}{row['max_rel']:>14.3e}")


@app.command("report")
def report(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """A table per search stage (trial, λ, best and final val accuracy, state, duration) and the best trial.

    Example: hpsearch report --json
    """
    with session(ctx, progress=False) as s:
        from pipeline.stages import SEARCH_STAGES, best_trial, trial_table

        tables = {stage: trial_table(st) for stage in SEARCH_STAGES if (st := s.load_study(stage)) is not None}
        if not tables:
            raise UserError(f"no search study in {s.storage_url}; run `hpsearch search coarse` first")
        best = best_trial(s)
        best_d = None if best is None else {
            "stage": best.user_attrs.get("stage", "?"), "trial": best.number,
            "lambda": best.params["lambda"], "val_accuracy": best.value,
            "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        }
        if as_json:
            out = {stage: json.loads(t.to_json(orient="records")) for stage, t in tables.items()}
            typer.echo(json.dumps({"stages": out, "best": best_d}, indent=2))
            return
        for stage, table in tables.items():
            typer.echo(f"\n{s.study_name(stage)}")
            typer.echo(table.drop(columns=["reason"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if best_d:
            typer.echo(f"\nbest: {best_d['stage']} trial {best_d['trial']}, λ = {best_d['lambda']:.4g}, "
                       f"val acc {best_d['val_accuracy']:.4f}")


@app.command("predict")
def predict(
    ctx: typer.Context,
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE", help="PNG or JPEG images (any size), or CIFAR-10 batch files.",
                       show_default=False),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Classify images with the registered model models:/cifar10-mlp@champion; exit 1 if any file failed.

    Example: hpsearch predict cat.png ship.jpg
    """
    with session(ctx, progress=False) as s:
        from pipeline.predict import predict_files

        result = predict_files(s.tracking_uri, images)
    for line in result.errors:
        typer.echo(f"error: {line}", err=True)
    if as_json or len(result.names):
        typer.echo(result.to_json() if as_json else result.table())
    if result.errors:
        raise typer.Exit(1)


@app.command("ui")
def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """The MLflow UI on the project's tracking store at http://127.0.0.1:PORT, until Ctrl-C.

    Example: hpsearch ui --port 5001
    """
    with session(ctx, progress=False) as s:
        from pipeline.ui import serve

        serve(s, port, typer.echo)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
