"""The `dlq-scale` scenario: what the dead-letter queue's operations cost at 10,000 waiting
records and at N (default 1,000,000), in this process on a scratch journal, no Ray.

At each size it measures, side by side:
    enqueue_records_per_s   writers' batches of 2,500 records journaled (incl. the is_full check)
    drain_records_per_s     the drain's loop: due(1,000, force) then resolve, as many as went in
    stats_ms                DeadLetterQueue.stats(), what the metrics tick and `dlq stats` run
    is_full_ms              what every enqueue and the held-back reader ask
    scan_stats_ms           the same numbers counted by scanning the rows (how stats worked
                            before the running totals), for comparison
Then the ratios at N over 10k. The queue is filled between sizes with the same enqueue path.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue, Failure
from breakwater.retry import RetryPolicy

BATCH = 2_500
DOWN = Failure("StoreUnavailable", "connection refused", "CLOSED", 0.0)


def _rows(start: int, n: int) -> list[tuple[Any, ...]]:
    """Position rows with distinct identities (MMSI, receive time, digest)."""
    return [
        (200_000_000 + (i % 700_000), 1_565_218_800_000 + i, i, 1, 59.0, 10.0, 5.0, 90.0, 90, 0, 0.0, None, "tag_block")
        for i in range(start, start + n)
    ]


class _Filler:
    def __init__(self, queue: DeadLetterQueue) -> None:
        self.queue = queue
        self.next = 0
        self.batches = 0

    def add(self, n: int) -> float:
        """Journal n more records in writer-sized batches; seconds it took."""
        started = time.perf_counter()
        while n > 0:
            size = min(BATCH, n)
            self.queue.enqueue(
                "redis", {"position": _rows(self.next, size)}, source="bench", job_id="bench",
                batch_id=f"b{self.batches}", read_ms=1, failure=DOWN, next_retry_at=0.0,
            )  # fmt: skip
            self.next += size
            self.batches += 1
            n -= size
        return time.perf_counter() - started


def _median_ms(call: Any, times: int = 15) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def _scan_stats(queue: DeadLetterQueue) -> None:
    queue.db.execute(
        "SELECT sink, status, COUNT(*), SUM(size_bytes), MIN(first_failed_at) FROM dead_letters GROUP BY sink, status"
    ).fetchall()
    queue.db.execute("SELECT last_error, COUNT(*) FROM dead_letters GROUP BY last_error").fetchall()


def _measure(queue: DeadLetterQueue, filler: _Filler) -> dict[str, Any]:
    """At the queue's present size: the read paths first, then 25,000 records in and 25,000
    drained out again, so the size is the same before and after."""
    waiting = queue.stats().waiting
    reads = {
        "stats_ms": _median_ms(queue.stats),
        "is_full_ms": _median_ms(queue.is_full),
        "scan_stats_ms": _median_ms(lambda: _scan_stats(queue), times=5),
    }
    moved = 10 * BATCH
    enqueue_s = filler.add(moved)
    drained, started = 0, time.perf_counter()
    while drained < moved:
        letters = queue.due("redis", 1_000, force=True)
        queue.resolve(letters, written=len(letters), duplicates=0)
        drained += len(letters)
    drain_s = time.perf_counter() - started
    return {
        "waiting": waiting,
        "enqueue_records_per_s": round(moved / enqueue_s),
        "drain_records_per_s": round(drained / drain_s),
        **reads,
    }


def scenario_dlq_scale(tmp: Path, records: int) -> dict[str, Any]:
    config = DeadLetterConfig(path=tmp / "dlq-scale.sqlite3", max_records=10 * records, max_bytes=1 << 40)
    queue = DeadLetterQueue(config, RetryPolicy())
    filler = _Filler(queue)
    filler.add(10_000)
    at_10k = _measure(queue, filler)
    fill_s = filler.add(max(0, records - at_10k["waiting"]))
    at_n = _measure(queue, filler)
    queue.close()
    return {
        "records": records,
        "at_10k": at_10k,
        "at_n": at_n,
        "fill_s": round(fill_s, 1),
        "enqueue_ratio_n_vs_10k": round(at_n["enqueue_records_per_s"] / at_10k["enqueue_records_per_s"], 2),
        "drain_ratio_n_vs_10k": round(at_n["drain_records_per_s"] / at_10k["drain_records_per_s"], 2),
        "journal_bytes": (tmp / "dlq-scale.sqlite3").stat().st_size,
    }
