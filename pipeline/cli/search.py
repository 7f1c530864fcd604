"""`hpsearch search coarse|fine|confirm` and `hpsearch pipeline`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import ConfigOpt, PruneOpt, SamplerOpt, SetOpt, TrialsOpt, app, session, settings
from pipeline.cli.train import print_run

search_app = typer.Typer(help="Run a stage (coarse, fine, then confirm); rerunning one completes it.",
                         no_args_is_help=True)
PrunerOpt = Annotated[str | None, typer.Option("--pruner", help="median | asha | hyperband | none.",
                                               show_default="search.pruner of the file")]
JobsOpt = Annotated[int, typer.Option("--jobs", min=1, help="Worker processes on this machine sharing the stage "
                                                            "(this one included), each with cores / N BLAS threads.")]
NoConfirmOpt = Annotated[bool, typer.Option("--no-confirm", help="Skip the confirm stage: the report's procedure, "
                                                                 "promoting the best searched trial.")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", min=1, help="Seconds after which no trial starts (running ones finish); one deadline for all "
                              "--jobs workers. Run the same command again to continue.", show_default="none")]
EnqueueOpt = Annotated[Path | None, typer.Option(
    "--enqueue", help="A TOML file of settings tried first, one \\[\\[trial]] table each, checked against the "
                             "stage's space.")]
FromOpt = Annotated[str | None, typer.Option(
    "--from-experiment", help="Another experiment whose completed trials of this stage the sampler learns from "
                              "(same settings searched; use --sampler tpe).")]
app.add_typer(search_app, name="search")


def _typed(n_trials, sampler, prune, pruner) -> dict:
    return {"search.n_trials": n_trials, "search.sampler": sampler, "search.prune": prune, "search.pruner": pruner}


def _search(ctx, stage, config, sets, n_trials, sampler, prune, pruner, jobs=1, timeout=None, enqueue=None,
            from_experiment=None):
    from pipeline.search.budget import deadline_for

    deadline = deadline_for(timeout)  # counted from the command's start, before the stores open
    with session(ctx) as s:
        from pipeline.api import Project
        from pipeline.workers.local import worker_processes

        project = Project.of(s)
        cfg = settings(stage, config, sets, _typed(n_trials, sampler, prune, pruner))  # checked once, here

        def check():  # before the workers start: the stores, and what their first trials are
            s.check_tracking()
            if enqueue or from_experiment:
                project.warm_start(stage, cfg, enqueue, from_experiment)

        with worker_processes(ctx.obj, ["search", stage, *_args(config, sets, n_trials, sampler, prune, pruner)], jobs,
                     check=check, env=deadline.env() if deadline else None):
            print_summary(project.search(stage, settings=cfg, deadline=deadline))


def _args(config=None, sets=None, n_trials=None, sampler=None, prune=None, pruner=None) -> list[str]:
    """The stage command's own options, for the workers."""
    out = [*(["--config", str(config)] if config else []), *(a for s in sets or [] for a in ("--set", s))]
    out += [*(["--n-trials", str(n_trials)] if n_trials is not None else []),
            *(["--sampler", sampler] if sampler else []), *(["--pruner", pruner] if pruner else [])]
    return out + ([] if prune is None else ["--prune" if prune else "--no-prune"])


def print_summary(summary) -> None:
    from pipeline.search.objective import describe

    done = "complete" if summary.complete else "not complete yet (other workers still running?)"
    if summary.stopped:
        done = f"stopped by {summary.stopped}; run the same command to continue"
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
    sampler: SamplerOpt = None, prune: PruneOpt = None, pruner: PrunerOpt = None, jobs: JobsOpt = 1,
    timeout: TimeoutOpt = None, enqueue: EnqueueOpt = None, from_experiment: FromOpt = None,
) -> None:
    """Sample the file's space table (λ log-uniform in 1e-5..1e-1) until the study holds n_trials finished trials.

    Example: hpsearch search coarse --n-trials 8
    """
    _search(ctx, "coarse", config, set_, n_trials, sampler, prune, pruner, jobs, timeout, enqueue, from_experiment)


@search_app.command("fine")
def search_fine(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, n_trials: TrialsOpt = None,
    sampler: SamplerOpt = None, prune: PruneOpt = None, pruner: PrunerOpt = None, jobs: JobsOpt = 1,
    timeout: TimeoutOpt = None, enqueue: EnqueueOpt = None, from_experiment: FromOpt = None,
) -> None:
    """Search the coarse space refined around the coarse results (the report's rule: the two best, ±0.25 in log10).

    Example: hpsearch search fine
    """
    _search(ctx, "fine", config, set_, n_trials, sampler, prune, pruner, jobs, timeout, enqueue, from_experiment)


@search_app.command("confirm")
def search_confirm(ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, jobs: JobsOpt = 1) -> None:
    """Retrain the k best distinct searched λ with several seeds at the final's schedule; choose by mean ± SE.

    Example: hpsearch search confirm --set confirm.seeds=3
    """
    with session(ctx) as s:
        from pipeline.api import Project
        from pipeline.workers.local import worker_processes

        cfg = settings("confirm", config, set_)
        with worker_processes(ctx.obj, ["search", "confirm", *_args(config, set_)], jobs, check=s.check_tracking):
            print_confirm(Project.of(s).confirm(settings=cfg))


def print_confirm(result) -> None:
    from pipeline.search.objective import describe

    done = "complete" if result.complete else "not complete yet (other workers still running?)"
    d = result.decision
    typer.echo(f"confirm: {sum(len(x.values) for x in d.scores)} trainings in {len(d.rounds)} round(s), {done}")
    for score in d.scores:
        mark = "  <- best" if score is d.best else ""
        vs = "" if score.vs_best is None else f"; best − it {score.vs_best.diff:+.4f} ± {score.vs_best.se:.4f} paired"
        typer.echo(f"  {describe(score.candidate.settings):<16} mean val acc {score.mean:.4f} ± {score.se:.4f} "
                   f"(n = {len(score.values)}{vs}){mark}")
    if d.chosen is not None and result.complete:
        typer.echo(f"  chosen by {result.rule}: {describe(d.chosen)} ({d.how})")
    typer.echo(f"  study {result.study_name}, MLflow parent run {result.parent_run_id}")


@app.command("pipeline")
def pipeline(
    ctx: typer.Context,
    n_trials: TrialsOpt = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Final λ instead of the best searched one.")] = None,
    no_confirm: NoConfirmOpt = False,
    jobs: Annotated[int | None, typer.Option("--jobs", min=1, help="Workers on this machine (this one included), "
                                             "started once for the whole pipeline.", show_default="one per core")]
    = None,
    config_set: Annotated[str | None, typer.Option(
        "--config-set", help="Another set of study files, studies/NAME-<stage>.toml, in the experiment "
                             "<experiment>-NAME (e.g. wide); a set without a confirm file skips that stage.")] = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Coarse search, fine search, confirm and final training in order; each step resumes where it stopped.

    Started on several machines (or N times by --jobs N) against the same stores, the workers share every stage
    and the final is trained once: the others say who trains it, wait for it and print its result.

    Example: HPSEARCH_DATA=~/cifar hpsearch pipeline
    """
    from pipeline.settings.config import default_path

    def path(stage: str):
        return default_path(f"{config_set}-{stage}" if config_set else stage)

    from pipeline.search.budget import deadline_for

    deadline = deadline_for(timeout)  # counted from the command's start, before the stores open
    stores = ctx.obj  # the workers add --config-set's suffix themselves
    if config_set:
        ctx.obj = dataclasses.replace(ctx.obj, experiment=f"{ctx.obj.experiment}-{config_set}")
    with session(ctx) as s:
        from pipeline.api import Project
        from pipeline.workers.local import default_jobs, worker_processes

        searches = {stage: settings(stage, path(stage), typed={"search.n_trials": n_trials}) for stage in
                    ("coarse", "fine")}  # every file is checked before anything starts
        confirmed = not no_confirm and lam is None and path("confirm").is_file()
        confirm_cfg = settings("confirm", path("confirm")) if confirmed else None
        final_cfg = settings("final", path("final"))
        args = [*(["--n-trials", str(n_trials)] if n_trials is not None else []),
                *(["--lambda", repr(lam)] if lam is not None else []), *(["--no-confirm"] if no_confirm else []),
                *(["--config-set", config_set] if config_set else [])]
        argv = ["pipeline", *args, "--jobs", "1"]
        with worker_processes(stores, argv, jobs or default_jobs(), check=s.check_tracking,
                              env=deadline.env() if deadline else None):
            project = Project.of(s)
            for stage, cfg in searches.items():
                summary = project.search(stage, settings=cfg, deadline=deadline)
                print_summary(summary)
                if summary.stopped:
                    return
            if confirmed and not _stopped(deadline, "confirm"):
                print_confirm(project.confirm(settings=confirm_cfg))
            if not _stopped(deadline, "the final training"):
                print_run(project.train_final(lam, confirmed=confirmed, settings=final_cfg))


def _stopped(deadline, step: str) -> bool:
    """Past the pipeline's --timeout: says so before the step, which does not start."""
    if deadline is None or not deadline.passed():
        return False
    typer.echo(f"pipeline: stopped by {deadline.describe()} before {step}; run the same command to continue")
    return True
