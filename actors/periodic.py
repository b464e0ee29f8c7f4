"""A daemon thread that calls a function every few seconds, for actors that publish state."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("breakwater.periodic")


class Every(threading.Thread):
    def __init__(self, interval_s: float, fn: Callable[[], object], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self.fn = fn
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.fn()
            except Exception:  # keep publishing; the next round may succeed
                log.exception("%s failed", self.name)

    def stop(self) -> None:
        self.stopped.set()
