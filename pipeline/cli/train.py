"""`hpsearch train`, `hpsearch train-final` and `hpsearch gradcheck`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import ConfigOpt, SetOpt, app, session, settings


def print_run(result) -> None:
    from pipeline.final.trainings import model_line

    note = " (already trained with these settings; --force to retrain)" if result.reused else ""
    typer.echo(f"{result.name}: λ = {result.lam:.4g}{note}")
    typer.echo(f"  test accuracy  {result.test_accuracy:.4f}")
    typer.echo(f"  val accuracy   {result.val_accuracy:.4f}")
    typer.echo(f"  MLflow run     {result.run_id}")
    if result.model_version:
        typer.echo(f"  model          {model_line(result)}")


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
    no_confirm: Annotated[bool, typer.Option("--no-confirm", help="Ignore the confirm stage's choice.")] = False,
) -> None:
    """Train on 49,000 images with the promoted λ, test on test_batch, register it as cifar10-mlp@champion.

    The confirm stage's choice when that stage exists, else the best searched trial (--select one-se: the largest
    λ within one standard error of the best validation accuracy).

    Example: hpsearch train-final
    """
    with session(ctx) as s:
        from pipeline.api import Project

        cfg = settings("final", config, set_, {"search.select": select})
        print_run(Project.of(s).train_final(lam, force=force, confirmed=not no_confirm, settings=cfg))


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
        from pipeline.api import Project

        print_run(Project.of(s).train(config, lam, sets=set_))


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
