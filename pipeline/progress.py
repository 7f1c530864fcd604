"""What the terminal shows while a stage runs: rich progress bars when interactive, log lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Plain log lines on stderr (pipes, CI, files)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def stage(self, name: str, total: int, done: int) -> None:
        self.say(f"[{name}] {done}/{total} trials finished")

    def trial_start(self, label: str, lam: float, steps: int) -> None:
        self._t0 = time.monotonic()
        self.say(f"[{label}] λ = {lam:.3g}, {steps} steps")

    def checkpoint(self, step: int, metrics: dict) -> None:
        pass  # a line per checkpoint would drown the trial lines

    def trial_end(self, label: str, state: str, value: float | None, done: int, total: int, best: float | None):
        took = time.monotonic() - getattr(self, "_t0", time.monotonic())
        val = "" if value is None else f" val acc {value:.4f}"
        top = "" if best is None else f", best so far {best:.4f}"
        self.say(f"[{label}] {state}{val} in {took:.1f} s ({done}/{total} finished{top})")


class RichProgress(Progress):
    """Two bars: trials of the stage (done/total, best so far) and steps of the current trial."""

    def __init__(self):
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        self.console = Console(stderr=True)
        self.bars = Bars(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.trials = self.steps = None

    def __enter__(self):
        self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bars.__exit__(*exc)

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def stage(self, name: str, total: int, done: int) -> None:
        if self.trials is None:
            self.trials = self.bars.add_task(f"{name} trials", total=total, completed=done, info="")
        else:
            self.bars.update(self.trials, description=f"{name} trials", total=total, completed=done, info="")

    def trial_start(self, label: str, lam: float, steps: int) -> None:
        super().trial_start(label, lam, steps)
        desc = f"  {label} λ={lam:.2g}"
        if self.steps is None:
            self.steps = self.bars.add_task(desc, total=steps, info="")
        else:
            self.bars.reset(self.steps, description=desc, total=steps, info="")

    def checkpoint(self, step: int, metrics: dict) -> None:
        if self.steps is not None:
            self.bars.update(self.steps, completed=step, info=f"val acc {metrics['val_accuracy']:.4f}")

    def trial_end(self, label, state, value, done, total, best):
        super().trial_end(label, state, value, done, total, best)
        if self.trials is not None:
            self.bars.update(self.trials, completed=done, info="" if best is None else f"best {best:.4f}")


def make_progress() -> Progress:
    return RichProgress() if sys.stderr.isatty() else Progress()
