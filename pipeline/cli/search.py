"""`hpsearch search coarse|fine` and `hpsearch pipeline`."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import ConfigOpt, PruneOpt, SamplerOpt, SetOpt, TrialsOpt, app, session, settings
from pipeline.cli.train import print_run

search_app = typer.Typer(help="Run a search stage (coarse, then fine); rerunning one completes it.",
                         no_args_is_help=True)
app.add_typer(search_app, name="search")


def _typed(n_trials, sampler, prune) -> dict:
    return {"search.n_trials": n_trials, "search.sampler": sampler, "search.prune": prune}


def _search(ctx, stage, config, sets, n_trials, sampler, prune):
    with session(ctx) as s:
        from pipeline.stages import run_search

        print_summary(run_search(s, stage, settings(stage, config, sets, _typed(n_trials, sampler, prune))))


def print_summary(summary) -> None:
    from pipeline.objective import describe

    done = "complete" if summary.complete else "not complete yet (other workers still running?)"
    typer.echo(f"{summary.stage}: {summary.n_finished}/{summary.n_target} trials finished, {done}")
    for dim in summary.space.values():
        typer.echo(f"  searched      {dim.describe()}")
    if summary.best_settings is not None:
        typer.echo(f"  best          {describe(summary.best_settings)}")
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
        from pipeline.stages import run_search
        from pipeline.trainings import train_final

        for stage in ("coarse", "fine"):
            print_summary(run_search(s, stage, settings(stage, typed={"search.n_trials": n_trials})))
        print_run(train_final(s, settings("final"), lam))
