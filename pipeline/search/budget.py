"""--timeout: one wall-clock deadline for a stage or a whole pipeline, shared by its --jobs workers.

No trial starts after the deadline; a running one finishes. The deadline is a Unix time, fixed once when the
command starts, and given to the workers `--jobs` starts in their environment, so N workers stop at the same
moment instead of each counting its own budget from its own start. The stage's n_trials stays the cap on trials.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pipeline.names import DEADLINE_ENV


@dataclass(frozen=True)
class Deadline:
    at: float  # Unix time after which no trial starts
    seconds: float  # the --timeout it was set from

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.time() + seconds, seconds)

    @classmethod
    def from_env(cls) -> Deadline | None:
        """The deadline of the command that started this worker, if it had one."""
        raw = os.environ.get(DEADLINE_ENV)
        if not raw:
            return None
        at, _, seconds = raw.partition(",")
        return cls(float(at), float(seconds))

    def env(self) -> dict[str, str]:
        return {DEADLINE_ENV: f"{self.at!r},{self.seconds!r}"}

    def passed(self) -> bool:
        return time.time() >= self.at

    def describe(self) -> str:
        return f"the --timeout of {self.seconds:g} s"


def stopped(tracker, parent_run_id: str, deadline: Deadline, summary):
    """A stage the deadline stopped: its run KILLED with the tag saying why (a rerun reopens it and continues),
    and the summary saying so."""
    import dataclasses

    from pipeline.names import STOPPED_TAG

    tracker.set_tags(parent_run_id, {STOPPED_TAG: f"{deadline.describe()} passed"})
    tracker.set_status(parent_run_id, "KILLED")
    return dataclasses.replace(summary, stopped=deadline.describe())


def deadline_for(timeout: float | None) -> Deadline | None:
    """A worker's deadline is its starter's; else the command's own --timeout from now; else none."""
    return Deadline.from_env() or (Deadline.after(timeout) if timeout is not None else None)
