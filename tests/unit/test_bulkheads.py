"""Bulkheads and queue failover in the shard writer.

A sink's lane waiting on a frozen store must not hold the other sink back, nor (once the
store has failed a call) the batches behind it; a store that is merely slow is waited for.
A dead-letter queue that does not answer holds the batch unacknowledged and is tried
again, and a repeat never journals a record twice."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue, EnqueueResult
from breakwater.errors import QueueUnavailable, StoreUnavailable
from breakwater.gate import SinkGate
from breakwater.reports import ReportBatch
from breakwater.stores.base import WriteResult
from breakwater.writer import LANE_SUSPECT_ERROR, ShardWriter
from tests.unit.fakes import Clock, MemorySink, batch_of, position

BOUND_S = 60.0  # generous: only a hang reaches it


class FrozenSink(MemorySink):
    """A store whose writes block until `thaw()`, as a Redis that accepts and never answers.
    With `timeouts`, that many first calls fail as a reply timeout would, before it blocks."""

    def __init__(self, name: str, timeouts: int = 0) -> None:
        super().__init__(name)
        self.entered = threading.Event()
        self._thawed = threading.Event()
        self.frozen = True
        self.timeouts = timeouts

    def write(self, batch: ReportBatch) -> WriteResult:
        if self.timeouts:
            self.timeouts -= 1
            raise StoreUnavailable(self.name, "TimeoutError: Timeout reading from socket")
        if self.frozen:
            self.entered.set()
            assert self._thawed.wait(BOUND_S), "the test never thawed the sink"
        return super().write(batch)

    def thaw(self) -> None:
        self.frozen = False
        self._thawed.set()


def two_sink_writer(tmp_path: Path, redis: MemorySink, bulkheads: bool = True) -> tuple[ShardWriter, MemorySink, Any]:
    db = MemorySink("db")
    gates = {name: SinkGate(CircuitBreaker(name, BreakerConfig())) for name in ("db", "redis")}
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    return ShardWriter([db, redis], gates, queue, job_id="job", bulkheads=bulkheads), db, queue


def in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def rows(start: int, n: int = 5) -> list[tuple[Any, ...]]:
    return [position(257_000_000 + start + i, 1_000 + start + i, start + i) for i in range(n)]


def test_a_frozen_redis_does_not_hold_back_the_database_part_of_the_same_batch(tmp_path: Path) -> None:
    redis = FrozenSink("redis")
    writer, db, _ = two_sink_writer(tmp_path, redis)
    first, out = in_thread(lambda: writer.write(batch_of(rows(0)), "b1"))
    assert redis.entered.wait(BOUND_S)
    # The database lane ran beside the frozen one: its rows are stored before Redis answers.
    deadline = threading.Event()
    for _ in range(int(BOUND_S / 0.01)):
        if len(db.rows) == 5:
            break
        deadline.wait(0.01)
    assert len(db.rows) == 5
    assert first.is_alive() and not out  # the batch is not acknowledged: Redis has not answered
    redis.thaw()
    first.join(BOUND_S)
    assert out[0].counts[acc.sink("redis", acc.OUTCOME_WRITTEN)] == 5


def test_behind_a_store_that_failed_batches_go_to_the_queue_while_it_is_probed(tmp_path: Path) -> None:
    redis = FrozenSink("redis", timeouts=1)
    writer, db, queue = two_sink_writer(tmp_path, redis)
    writer.write(batch_of(rows(0)), "b0")  # Redis times out: its lane is suspect
    probe, _ = in_thread(lambda: writer.write(batch_of(rows(100)), "probe"))
    assert redis.entered.wait(BOUND_S)  # the next call probes Redis, which now hangs
    later, out = in_thread(lambda: [writer.write(batch_of(rows(10 * i)), f"b{i}") for i in range(1, 4)])
    later.join(BOUND_S)
    assert not later.is_alive(), "batches queued behind the frozen lane"
    reports = out[0]
    assert all(r.counts[acc.sink("db", acc.OUTCOME_WRITTEN)] == 5 for r in reports)
    assert all(r.counts[acc.sink("redis", acc.OUTCOME_DLQ)] == 5 for r in reports)
    assert queue.stats().by_error == {"StoreUnavailable": 5, LANE_SUSPECT_ERROR: 15}
    assert writer.drain_metrics().counters[("ais_lane_diverted", (("sink", "redis"),))] == 15
    assert probe.is_alive()  # still frozen: the probe's batch waits for its own Redis call
    redis.thaw()
    probe.join(BOUND_S)
    assert len(db.rows) == 25
    assert not writer.lanes["redis"].suspect  # the probe succeeded: the lane is trusted again


def test_a_slow_store_that_has_not_failed_is_waited_for(tmp_path: Path) -> None:
    """No failure yet: the batch behind a slow call waits for the lane, nothing is diverted
    (a loaded machine must not send healthy writes to the queue)."""
    redis = FrozenSink("redis")
    writer, _db, queue = two_sink_writer(tmp_path, redis)
    first, _ = in_thread(lambda: writer.write(batch_of(rows(0)), "b1"))
    assert redis.entered.wait(BOUND_S)
    second, out = in_thread(lambda: writer.write(batch_of(rows(10)), "b2"))
    second.join(0.3)
    assert second.is_alive() and not out
    redis.thaw()
    first.join(BOUND_S)
    second.join(BOUND_S)
    assert out[0].counts[acc.sink("redis", acc.OUTCOME_WRITTEN)] == 5
    assert queue.stats().waiting == 0


def test_without_bulkheads_batches_queue_behind_the_probe(tmp_path: Path) -> None:
    """The contrast: what the bulkhead changes."""
    redis = FrozenSink("redis", timeouts=1)
    writer, _db, _queue = two_sink_writer(tmp_path, redis, bulkheads=False)
    writer.write(batch_of(rows(0)), "b0")
    probe, _ = in_thread(lambda: writer.write(batch_of(rows(100)), "probe"))
    assert redis.entered.wait(BOUND_S)
    later, out = in_thread(lambda: writer.write(batch_of(rows(10)), "b1"))
    later.join(0.3)
    assert later.is_alive() and not out
    redis.thaw()
    probe.join(BOUND_S)
    later.join(BOUND_S)
    assert out[0].counts[acc.sink("redis", acc.OUTCOME_WRITTEN)] == 5


class SilentQueue:
    """A dead-letter link that does not answer the first `silent` times; it journals
    into a real queue, so a repeat of the same records would show as a duplicate."""

    def __init__(self, queue: DeadLetterQueue, silent: int) -> None:
        self.queue = queue
        self.silent = silent
        self.calls = 0

    def enqueue(self, sink: str, rows_by_kind: dict[str, list[Any]], **kw: Any) -> EnqueueResult:
        self.calls += 1
        if self.calls <= self.silent:
            raise QueueUnavailable("the dead-letters actor did not answer within 60 s (ray_timeout_s)")
        return self.queue.enqueue(sink, rows_by_kind, **kw)


def writer_over(link: Any, sink: MemorySink, clock: Clock, queue_wait_s: float) -> ShardWriter:
    gate = SinkGate(CircuitBreaker("db", BreakerConfig(), clock=clock), clock=clock)
    return ShardWriter(
        [sink], {"db": gate}, link, job_id="job", clock=clock, queue_wait_s=queue_wait_s, sleep=clock.advance
    )


def test_a_queue_that_does_not_answer_is_tried_again_and_each_record_counted_once(tmp_path: Path) -> None:
    clock = Clock()
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"), clock=clock)
    link = SilentQueue(queue, silent=3)
    sink = MemorySink("db")
    sink.down = True
    report = writer_over(link, sink, clock, queue_wait_s=600).write(batch_of(rows(0)), "b1")
    assert link.calls == 4
    assert report.counts[acc.sink("db", acc.OUTCOME_DLQ)] == 5
    assert report.counts[acc.sink("db", acc.OUTCOME_DUPLICATE)] == 0
    assert queue.stats().waiting == 5


def test_a_queue_silent_past_queue_wait_s_stops_the_write_unacknowledged(tmp_path: Path) -> None:
    clock = Clock()
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"), clock=clock)
    link = SilentQueue(queue, silent=10**6)
    sink = MemorySink("db")
    sink.down = True
    writer = writer_over(link, sink, clock, queue_wait_s=30)
    with pytest.raises(QueueUnavailable, match="queue_wait_s=30 s with 5 db records of batch b1 unacknowledged"):
        writer.write(batch_of(rows(0)), "b1")
    assert 3 <= link.calls <= 8  # backed off: 0.5, 1, 2, 4, 8, ... within 30 s
    assert queue.stats().waiting == 0
