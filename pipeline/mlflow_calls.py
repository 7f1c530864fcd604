"""Small pieces of talking to MLflow: filter strings, the error words a caller may handle, batched metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def equals(field: str, value) -> str:
    """`field = 'value'` for an MLflow filter string. Its grammar has no escape: a value holding a quote is
    put in the other kind; one holding both matches any character there (LIKE's _), and the caller compares."""
    value = str(value)
    if "'" not in value:
        return f"{field} = '{value}'"
    if '"' not in value:
        return f'{field} = "{value}"'
    return f"{field} LIKE '{value.replace(chr(39), '_').replace(chr(34), '_')}'"


def duplicate_key(e: Exception) -> bool:
    """The race `log_input` retries: another process inserted the same row first (sqlite or PostgreSQL words)."""
    text = str(e).lower()
    return "unique constraint" in text or "duplicate key" in text or "already exists" in text


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class MetricBuffer:
    """Collects metric points and sends them in few log_batch calls (flushes when large or old)."""

    def __init__(self, client, run_id: str, max_points: int = 500, max_age_s: float = 10.0):
        self.client, self.run_id = client, run_id
        self.points: list = []
        self.max_points, self.max_age_s = max_points, max_age_s
        self.last_flush = time.monotonic()

    def add(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.points.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        if len(self.points) >= self.max_points or time.monotonic() - self.last_flush > self.max_age_s:
            self.flush()

    def flush(self) -> None:
        while self.points:
            chunk, self.points = self.points[:MAX_BATCH], self.points[MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self.last_flush = time.monotonic()
