"""`TrackedRun`: the one lifecycle every training shares, from its MLflow run's creation to a terminal status.

Create, log params and the data read, buffer metrics per checkpoint, and on every exit path the curves, the
outcome and a terminal status.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.names import NOTE_TAG
from pipeline.tracking import plots
from pipeline.tracking.buffer import MetricBuffer
from pipeline.tracking.data_input import DataInput
from pipeline.tracking.filters import first_line
from pipeline.tracking.tracker import Tracker
from pipeline.urls import redact_text


class TrackedRun:
    """One training's MLflow run from creation to a terminal status, whatever ends it.

    Created with its params and its data as an MLflow dataset input (data_input.py). Use as a context manager
    around the training and pass `checkpoint` as its callback. On exit:
    no exception → FINISHED, state COMPLETE; an exception listed in `outcomes` (a pruned trial) →
    FINISHED, state PRUNED with the reason; Ctrl-C or SIGTERM → KILLED; anything else → FAILED with the
    reason. In every case the buffered metrics, best/final validation accuracy, the curves figure, the
    state tags and a one-line description are written first. The exception itself propagates.
    """

    def __init__(self, tracker: Tracker, name: str, *, what: str, values: str, steps: int,
                 tags: Mapping[str, object], params: Mapping[str, object], data: DataInput,
                 parent_run_id: str | None = None, terminal=None, outcomes: tuple[type[BaseException], ...] = ()):
        self.tracker, self.name, self.terminal, self.outcomes = tracker, name, terminal, outcomes
        self.describe, self.values, self.steps = f"{what}, {values}", values, steps
        self.run_id = tracker.create_run(name, {**tags, "state": "RUNNING"}, parent_run_id=parent_run_id)
        tracker.set_tags(self.run_id, {NOTE_TAG: f"{self.describe}: running"})
        tracker.log_params(self.run_id, params)
        tracker.log_input(self.run_id, data.entity())
        self.metrics = MetricBuffer(tracker.client, self.run_id)
        self.history: dict[str, list] = {"step": []}
        self.state = self.reason = None

    def __enter__(self) -> TrackedRun:
        if self.terminal is not None:
            self.terminal.trial_start(self.name, self.values, self.steps)
        return self

    def checkpoint(self, step: int, metrics: Mapping[str, float]) -> None:
        """The training's callback: buffer the metrics, keep them for the figure, move the progress bar."""
        self.metrics.add(step, metrics)
        self.history["step"].append(step)
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v)
        if self.terminal is not None:
            self.terminal.checkpoint(step, metrics)

    def log_final(self, metrics: Mapping[str, float]) -> None:
        """Metrics measured after training (test accuracy), at the last step."""
        self.metrics.add(self.history["step"][-1] if self.history["step"] else 0, metrics)

    @property
    def best_val_accuracy(self) -> float | None:
        return max(self.history.get("val_accuracy", []), default=None)

    @property
    def final_val_accuracy(self) -> float | None:
        return (self.history.get("val_accuracy") or [None])[-1]

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            state, status, reason = "COMPLETE", "FINISHED", ""
        elif isinstance(exc, self.outcomes):
            state, status, reason = "PRUNED", "FINISHED", str(exc)
        elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM as Terminated
            state, status, reason = "FAIL", "KILLED", f"interrupted ({type(exc).__name__})"
        else:
            state, status, reason = "FAIL", "FAILED", f"{type(exc).__name__}: {exc}"
        reason = redact_text(reason)  # the trial keeps it too, and `report --json` prints it
        self.state, self.reason = state, reason
        try:
            self._close(state, reason)
        except Exception as e:
            if exc is None:
                raise
            # the training's own exception (a pruned trial, Ctrl-C) is what ends the trial: say this one, keep that
            if self.terminal is not None:
                self.terminal.say(f"{self.name}: its run's record is incomplete ({type(e).__name__}: "
                                  f"{redact_text(first_line(e))[:200]})")
        finally:
            self.tracker.set_status(self.run_id, status)
        return False

    def _close(self, state: str, reason: str) -> None:
        best, final = self.best_val_accuracy, self.final_val_accuracy
        if best is not None:
            self.metrics.add(self.history["step"][-1], {"best_val_accuracy": best})
        self.metrics.flush()
        if self.history["step"]:
            title = f"{self.describe}: {state.lower()}" + ("" if final is None else f", val acc {final:.4f}")
            self.tracker.log_figure(self.run_id, plots.curves(self.history, title), "curves.png")
        outcome = state + ("" if best is None else f", best val acc {best:.4f}") + (f" ({reason})" if reason else "")
        self.tracker.set_tags(self.run_id, {"state": state, **({"reason": reason} if reason else {}),
                                            NOTE_TAG: f"{self.describe}: {outcome}"})
