"""Metric points gathered and sent to MLflow in few log_batch calls: a training checkpoints often, and one
request per point would cost more than the training between two checkpoints."""

from __future__ import annotations

import time
from collections.abc import Mapping

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


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
