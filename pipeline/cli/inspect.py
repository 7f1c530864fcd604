"""Looking at results and data: `hpsearch report`, `predict`, `ui` and `data check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import JsonOpt, app, errors, session
from pipeline.errors import UserError

data_app = typer.Typer(help="Look at the CIFAR-10 files themselves.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("report")
def report(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """A table per search stage (trial, λ, best and final val accuracy, state, duration) and the best trial.

    Example: hpsearch report --json
    """
    with session(ctx, progress=False) as s:
        from pipeline.names import LAMBDA, RUN_ATTR, SEARCH_STAGES
        from pipeline.results import best_trial, trial_table

        tables = {stage: trial_table(st) for stage in SEARCH_STAGES if (st := s.load_study(stage)) is not None}
        if not tables:
            raise UserError(f"no search study in {s.shown_storage}; run `hpsearch search coarse` first")
        best = best_trial(s)
        best_d = None if best is None else {
            "stage": best.user_attrs.get("stage", "?"), "trial": best.number,
            "lambda": best.params[LAMBDA], "val_accuracy": best.value, "mlflow_run_id": best.user_attrs.get(RUN_ATTR),
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


@data_app.command("check")
def data_check(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="PATH", help="Batch files or folders.", show_default="the data folder (--data-dir)"),
    ] = None,
) -> None:
    """Read every batch file safely: images, images per class, md5, and the digest runs record; exit 1 if any failed.

    Example: hpsearch data check ~/data/cifar-10-batches-py
    """
    with errors():
        from model.cifar10 import DEFAULT_DOWNLOAD_DIR
        from pipeline.datacheck import check

        paths = paths or [ctx.obj.data_dir or DEFAULT_DOWNLOAD_DIR]
        code = check(paths, typer.echo, lambda line: typer.echo(line, err=True))
    raise typer.Exit(code)
