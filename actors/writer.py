"""The persistence actor of one MMSI shard."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from breakwater.config import Settings
from breakwater.fusion import FusionWindow
from breakwater.gate import gates_for
from breakwater.plausibility import Plausibility
from breakwater.reports import ReportBatch
from breakwater.stores import open_sinks
from breakwater.writer import ShardWriter, WriteReport

log = logging.getLogger("breakwater.writer")


class WriterActor:
    """A `ShardWriter` with its own store connections. It runs several calls at once
    (`CONCURRENCY`, a threaded actor) so that one sink's lane waiting on a frozen store
    never holds the other sink's writes back. It ships its metrics to the metrics actor at
    most once per `metrics_push_interval_s`: piggy-backed on writes, and from a thread of its
    own when no write comes, so what the last batch before a lull counted is not held back
    until the next one."""

    CONCURRENCY = 4

    def __init__(self, settings: Settings, breakers: dict[str, Any], dead_letters: Any, metrics: Any) -> None:
        gates = gates_for(breakers, report_interval_s=settings.breaker_report_interval_s)
        self.writer = ShardWriter(
            open_sinks(settings),
            gates,
            dead_letters,
            job_id="",
            queue_wait_s=settings.queue_wait_s,
            on_queue_silent=self._push_metrics,
            fusion=FusionWindow(settings.fusion_window_s, max_drift_s=settings.max_clock_drift_s),
            plausibility=Plausibility(
                max_speed_kn=settings.max_speed_kn,
                failure_ratio=settings.demotion_failure_ratio,
                window_s=settings.demotion_window_s,
            ),
        )
        self.metrics = metrics
        self.push_interval_s = settings.metrics_push_interval_s
        self._last_push = 0.0
        self._push_lock = threading.Lock()
        threading.Thread(target=self._ship_in_lulls, name="metrics-lull", daemon=True).start()

    def _ship_in_lulls(self) -> None:
        while True:
            time.sleep(self.push_interval_s)
            if time.monotonic() - self._last_push >= self.push_interval_s:
                try:
                    self._push_metrics()
                except Exception:  # the metrics actor restarting: the next round ships it
                    log.warning("could not ship the writer's metrics; trying again", exc_info=True)

    def write(self, batch: ReportBatch, batch_id: str, job_id: str) -> WriteReport:
        self.writer.job_id = job_id
        report = self.writer.write(batch, batch_id)
        if time.monotonic() - self._last_push >= self.push_interval_s:
            self._push_metrics()
        return report

    def flush(self) -> None:
        """Report breaker outcomes and ship metrics now (the job calls this at its end)."""
        self.writer.flush_gates()
        self._push_metrics()

    def _push_metrics(self) -> None:
        with self._push_lock:
            delta = self.writer.drain_metrics()
            if delta and self.metrics is not None:
                self.metrics.push(delta)
            self._last_push = time.monotonic()
