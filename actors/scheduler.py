"""The retry scheduler: a detached actor that drains the dead-letter queue every interval."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from breakwater.config import Settings
from breakwater.drain import Drain
from breakwater.gate import gates_for
from breakwater.metrics import MetricsBuffer
from breakwater.stores import open_sinks

log = logging.getLogger("breakwater.scheduler")


class RetrySchedulerActor:
    """Runs `Drain` every `retry.interval_s` on its own thread; `drain_now` runs one at once
    (the CLI's "retry now"). Drains never overlap: one lock guards them."""

    def __init__(self, settings: Settings, breakers: dict[str, Any], dead_letters: Any, metrics: Any) -> None:
        self.settings = settings
        self.metrics = metrics
        self.buffer = MetricsBuffer()
        gates = gates_for(breakers, report_interval_s=settings.breaker_report_interval_s)
        self.drain = Drain(
            dead_letters, {s.name: s for s in open_sinks(settings)}, gates, settings.retry, metrics=self.buffer
        )
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.rounds = 0
        self.last: dict[str, int] = {}
        self.thread = threading.Thread(target=self._loop, name="retry-scheduler", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(self.settings.retry.interval_s):
            try:
                self.drain_now(force=False)
            except Exception:
                log.exception("scheduled drain failed; the next one runs in %.0f s", self.settings.retry.interval_s)

    def drain_now(self, force: bool = False, sink: str | None = None) -> dict[str, int]:
        with self.lock:
            report: Counter[str] = self.drain.run(force=force, only_sink=sink)
            self.rounds += 1
            self.last = dict(report)
        delta = self.buffer.drain()
        if delta and self.metrics is not None:
            self.metrics.push(delta)
        if report:
            log.info("drain %d: %s", self.rounds, dict(report))
        return dict(report)

    def status(self) -> dict[str, Any]:
        return {"interval_s": self.settings.retry.interval_s, "rounds": self.rounds, "last": self.last}

    def stop(self) -> None:
        self.stopped.set()
