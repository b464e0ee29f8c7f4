"""The persistence actor of one MMSI shard."""

from __future__ import annotations

import time
from typing import Any

from breakwater.config import Settings
from breakwater.gate import gates_for
from breakwater.reports import ReportBatch
from breakwater.stores import open_sinks
from breakwater.writer import ShardWriter, WriteReport


class WriterActor:
    """A `ShardWriter` with its own store connections; it ships its metrics to the metrics
    actor at most once per `metrics_push_interval_s`, piggy-backed on writes."""

    def __init__(self, settings: Settings, breakers: dict[str, Any], dead_letters: Any, metrics: Any) -> None:
        gates = gates_for(breakers, report_interval_s=settings.breaker_report_interval_s)
        self.writer = ShardWriter(open_sinks(settings), gates, dead_letters, job_id="")
        self.metrics = metrics
        self.push_interval_s = settings.metrics_push_interval_s
        self._last_push = 0.0

    def write(self, batch: ReportBatch, batch_id: str, job_id: str) -> WriteReport:
        self.writer.job_id = job_id
        report = self.writer.write(batch, batch_id)
        if time.monotonic() - self._last_push >= self.push_interval_s:
            self.flush()
        return report

    def flush(self) -> None:
        """Report breaker outcomes and ship metrics now (the job calls this at its end)."""
        for gate in self.writer.gates.values():
            gate.flush()
        delta = self.writer.drain_metrics()
        if delta and self.metrics is not None:
            self.metrics.push(delta)
        self._last_push = time.monotonic()
