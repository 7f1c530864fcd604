"""Looking at results and data: `hpsearch report`, `predict`, `ui`, `dashboard`, `compare` and `data check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import JsonOpt, OpenOpt, PortOpt, app, errors, session
from pipeline.names import DASHBOARD_PORT, RANK_ATTR, UI_PORT

data_app = typer.Typer(help="Look at the CIFAR-10 files themselves.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("report")
def report(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """A table per search stage (trial, λ, best and final val accuracy, state, duration) and the best trial.

    Example: hpsearch report --json
    """
    with session(ctx, progress=False) as s:
        from pipeline.api import Project

        result = Project.of(s).report()
        doc = result.json
        if as_json:
            typer.echo(json.dumps(doc, indent=2))
            return
        for stage, table in result.tables.items():
            typer.echo(f"\n{s.study_name(stage)}")
            typer.echo(table.drop(columns=["reason"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            ranked = result.importance[stage]
            typer.echo(ranked.attrs.get("note") or "importance (PED-ANOVA over its completed trials):\n"
                       + ranked.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if best := doc["best"]:
            typer.echo(f"\nbest: {best['stage']} trial {best['trial']}, λ = {best['lambda']:.4g}, "
                       f"val acc {best['val_accuracy']:.4f}")
        from pipeline.search.confirm.agreement import lines as rank_lines

        for line in rank_lines(doc[RANK_ATTR]):
            typer.echo(line)


def _items(metavar: str, help: str):
    """A command's positional arguments, one or more."""
    return typer.Argument(metavar=metavar, help=help, show_default=False)


@app.command("predict")
def predict(
    ctx: typer.Context,
    images: Annotated[list[Path], _items("IMAGE", "PNG or JPEG images (any size), or CIFAR-10 batch files.")],
    as_json: JsonOpt = False,
) -> None:
    """Classify images with the registered model models:/cifar10-mlp@champion; exit 1 if any file failed.

    Example: hpsearch predict cat.png ship.jpg
    """
    with session(ctx, progress=False) as s:
        from pipeline.api import Project

        result = Project.of(s).predict_files(images)
    for line in result.errors:
        typer.echo(f"error: {line}", err=True)
    if as_json or len(result.names):
        typer.echo(result.to_json() if as_json else result.table())
    if result.errors:
        raise typer.Exit(1)


@app.command("ui")
def ui(ctx: typer.Context, port: PortOpt = UI_PORT, open_: OpenOpt = False) -> None:
    """The MLflow UI on the project's tracking store at http://127.0.0.1:PORT, until Ctrl-C.

    Prints the experiment's runs view (stage runs with their best λ and validation accuracy, trials nested
    under them), the trials ranked by accuracy, and the compare pages of the latest coarse and fine trials.

    Example: hpsearch ui --open
    """
    with session(ctx, progress=False) as s:
        from pipeline.views.ui import serve

        serve(s, port, typer.echo, open_browser=open_)


@app.command("dashboard")
def dashboard(ctx: typer.Context, port: Annotated[int, typer.Option(
        "--port", min=1, max=65535, help="Port of optuna-dashboard on 127.0.0.1.")] = DASHBOARD_PORT,
        open_: OpenOpt = False) -> None:
    """optuna-dashboard on the project's studies (--storage: the journal file or a database) at
    http://127.0.0.1:PORT/dashboard/, until Ctrl-C. Needs the extra: pip install 'hpsearch[dashboard]'.

    Example: hpsearch dashboard --open
    """
    with session(ctx, progress=False) as s:
        from pipeline.views.dashboard import serve

        serve(s, port, typer.echo, open_browser=open_)


@app.command("compare")
def compare(
    ctx: typer.Context,
    stages: Annotated[list[str], _items("STAGE...", "coarse, fine, confirm (their trials), final (the final runs).")],
    port: PortOpt = UI_PORT,
    open_: OpenOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The MLflow compare page for the runs of the named stages: its URL, or the page itself with --open.

    A local store's page is on `hpsearch ui --port PORT`; a tracking server's on that server. --json prints
    `report --json` for these stages with the URL and the run ids.

    Example: hpsearch compare coarse fine --open
    """
    with session(ctx, progress=False) as s:
        from pipeline.tracking import links

        tracker = s.tracker
        run_ids = links.compare_run_ids(tracker, stages)
        url = links.compare_url(links.ui_base(s.tracking_uri, port), run_ids, [tracker.experiment_id])
        if as_json:
            from pipeline.search.results import report_json, stage_tables

            doc = report_json(s, stage_tables(s, stages))
            typer.echo(json.dumps(doc | {"url": url, "run_ids": run_ids}, indent=2))
        else:
            typer.echo(url)
    if open_:
        import webbrowser

        webbrowser.open(url)


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
        from pipeline.data.check import check

        paths = paths or [ctx.obj.data_dir or DEFAULT_DOWNLOAD_DIR]
        code = check(paths, typer.echo, lambda line: typer.echo(line, err=True))
    raise typer.Exit(code)
