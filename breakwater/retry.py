"""When to try a dead letter again, and how fast.

Backoff doubles with every counted attempt, up to `backoff_max_s`, with "equal jitter" (a
random half of the delay) so records that failed together do not all come back together.
Records parked while a breaker was open do not use up attempts: they come back when the
breaker hands out trial permits. A paced drain keeps a retry storm from knocking a
recovering sink down again: at most `rate_per_s` records per second per sink.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(300.0, gt=0, description="how often the scheduler drains what is due")
    max_attempts: int = Field(5, ge=1, description="counted attempts before a record is dead")
    backoff_base_s: float = Field(60.0, gt=0, description="delay after the first failed attempt")
    backoff_max_s: float = Field(3600.0, gt=0, description="longest delay between attempts")
    rate_per_s: float = Field(10_000.0, gt=0, description="records reaching a sink per second, at most")
    chunk_records: int = Field(1000, ge=1, description="records taken from the queue per store call")

    def next_delay_s(self, attempts: int, rng: random.Random | None = None) -> float:
        """Delay after the `attempts`-th counted failure (1 for the first)."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** max(0, attempts - 1))
        jitter: float = (rng or random).random()
        return ceiling / 2 + jitter * ceiling / 2


class Pacer:
    """A token bucket: `take(n)` waits until n more records may go out."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.clock = clock
        self.sleep = sleep
        self._next_free = clock()

    def take(self, n: int) -> float:
        """Wait as long as the rate requires; returns the seconds waited."""
        now = self.clock()
        wait = max(0.0, self._next_free - now)
        if wait > 0:
            self.sleep(wait)
        self._next_free = max(now, self._next_free) + n / self.rate_per_s
        return wait
