"""What the terminal shows while a command runs: rich bars when interactive, plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Lines:
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

    def trial_start(self, label: str, values: str, steps: int) -> None:
        self._t0 = time.monotonic()
        self.say(f"[{label}] {values}, {steps} steps")

    def checkpoint(self, step: int, metrics: dict) -> None:
        pass  # a line per checkpoint would drown the trial lines

    def trial_end(self, label: str, state: str, value: float | None, done: int, total: int, best: float | None):
        took = time.monotonic() - getattr(self, "_t0", time.monotonic())
        val = "" if value is None else f" val acc {value:.4f}"
        top = "" if best is None else f", best so far {best:.4f}"
        self.say(f"[{label}] {state}{val} in {took:.1f} s ({done}/{total} finished{top})")


class Silent(Lines):
    """Nothing at all: the Python API's default."""

    def say(self, text: str) -> None:
        pass


class Bars(Lines):
    """Two rich progress bars: trials of the stage (done/total, best so far) and steps of the current trial."""

    def __init__(self):
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        self.bars = RichProgress(
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
        self.console.print(text, highlight=False, markup=False)  # "[coarse-0] ..." is a label, not a style

    def stage(self, name: str, total: int, done: int) -> None:
        if self.trials is None:
            self.trials = self.bars.add_task(f"{name} trials", total=total, completed=done, info="")
        else:
            self.bars.update(self.trials, description=f"{name} trials", total=total, completed=done, info="")

    def trial_start(self, label: str, values: str, steps: int) -> None:
        super().trial_start(label, values, steps)
        desc = f"  {label} {values}"
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


def open_terminal(interactive: bool | None = None) -> Lines:
    """Bars on an interactive terminal, plain lines anywhere else."""
    return Bars() if (sys.stderr.isatty() if interactive is None else interactive) else Lines()
