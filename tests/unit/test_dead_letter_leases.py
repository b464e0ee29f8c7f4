"""Leases and idempotent outcomes: two drains at once take each record once, a replayed call
changes nothing, and a drain's report counts each record once."""

from __future__ import annotations

from pathlib import Path

from breakwater.breaker import BreakerConfig, BreakerState, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue, Failure
from breakwater.drain import Drain
from breakwater.gate import SinkGate
from breakwater.reports import ReportBatch
from breakwater.retry import RetryPolicy
from breakwater.stores.base import WriteResult
from tests.unit.fakes import Clock, MemorySink, position

DOWN = Failure("StoreUnavailable", "connection refused", "CLOSED", 0.0)
ROWS = [position(257000000 + i, 1000 + i, i) for i in range(20)]


def open_queue(path: Path, clock: Clock) -> DeadLetterQueue:
    """Each drain has a connection of its own to the one journal, as two processes would."""
    policy = RetryPolicy(max_attempts=3, backoff_base_s=60, backoff_max_s=600, chunk_records=5)
    return DeadLetterQueue(DeadLetterConfig(path=path), policy, clock=clock)


def filled(path: Path, clock: Clock) -> DeadLetterQueue:
    queue = open_queue(path, clock)
    queue.enqueue("db", {"position": ROWS}, source="s", job_id="job-1", batch_id="b", read_ms=1, failure=DOWN)
    return queue


def test_a_leased_record_is_not_handed_to_another_drain_until_the_lease_ends(tmp_path: Path) -> None:
    clock = Clock()
    queue = filled(tmp_path / "j.sqlite3", clock)
    mine = queue.due("db", 8, force=True, owner="a", lease_s=60)
    theirs = queue.due("db", 100, force=True, owner="b", lease_s=60)
    assert len(mine) == 8 and len(theirs) == 12
    assert not {x.id for x in mine} & {x.id for x in theirs}
    assert queue.due("db", 100, force=True, owner="c") == []  # everything is held
    clock.advance(61)
    assert len(queue.due("db", 100, force=True, owner="c")) == 20  # leases ended: a stuck drain lets go


def test_replayed_outcomes_change_nothing(tmp_path: Path) -> None:
    clock = Clock()
    queue = filled(tmp_path / "j.sqlite3", clock)
    done, failed = queue.due("db", 5, force=True, owner="a"), queue.due("db", 5, force=True, owner="a")
    assert queue.resolve(done, written=5, duplicates=0, owner="a") == 5
    assert queue.resolve(done, written=5, duplicates=0, owner="a") == 0  # Ray replayed the call
    tally = queue.job_tally("job-1")["db"]
    assert (tally.retried_written, tally.retried_duplicates) == (5, 0)  # credited once
    assert queue.fail(failed, DOWN, owner="a") == (5, 0)
    assert queue.fail(failed, DOWN, owner="a") == (0, 0)  # the lease ended with the first outcome
    assert {x.attempts for x in queue.peek(100) if x.id in {f.id for f in failed}} == {2}  # one attempt used
    # Outcomes from a drain that does not hold the records change nothing either.
    held = queue.due("db", 5, force=True, owner="a")
    assert queue.resolve(held, written=5, duplicates=0, owner="b") == 0
    assert queue.park(held, clock() + 30, owner="b") == 0
    assert queue.stats().waiting == 15


class InterleavingSink(MemorySink):
    """A store whose first write lets a second drain run to its end first: two drains at once,
    with the second one inside the first one's window, every time."""

    def __init__(self) -> None:
        super().__init__("db")
        self.interleave: Drain | None = None
        self.writes_per_row: dict[int, int] = {}

    def write(self, batch: ReportBatch) -> WriteResult:
        second, self.interleave = self.interleave, None
        if second is not None:
            second.run(force=True)
        for row in batch.positions:
            self.writes_per_row[row[0]] = self.writes_per_row.get(row[0], 0) + 1
        return super().write(batch)


def test_two_drains_at_once_write_each_record_once_and_count_it_once(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "j.sqlite3"
    filled(path, clock).close()
    sink = InterleavingSink()

    def drain() -> Drain:
        queue = open_queue(path, clock)
        gates = {"db": SinkGate(CircuitBreaker("db", BreakerConfig(), clock=clock), clock=clock)}
        return Drain(queue, {"db": sink}, gates, queue.policy, clock=clock, sleep=clock.advance)

    first, second = drain(), drain()
    sink.interleave = second
    report = first.run(force=True)
    assert sink.writes_per_row == {257000000 + i: 1 for i in range(20)}
    assert report == {"db.written": 5}  # its first chunk; the second drain took the other 15
    assert second.run(force=True) == {}
    queue = open_queue(path, clock)
    tally = queue.job_tally("job-1")["db"]
    assert (tally.waiting, tally.retried_written, tally.retried_duplicates) == (0, 20, 0)


def test_a_drain_reports_each_parked_record_once(tmp_path: Path) -> None:
    clock = Clock()
    queue = filled(tmp_path / "j.sqlite3", clock)
    sink = MemorySink("db")
    sink.down = True
    breaker = CircuitBreaker("db", BreakerConfig(failure_threshold=1, reset_timeout_s=30), clock=clock)
    report = Drain(queue, {"db": sink}, {"db": SinkGate(breaker, clock=clock)}, queue.policy, clock=clock).run(
        force=True
    )
    assert breaker.state == BreakerState.OPEN
    # The first chunk failed and opened the breaker; the second was parked, once (it used to be
    # counted by the chunk's park and again by the drain's).
    assert (report["db.failed"], report["db.parked"]) == (5, 5)
    parked_until = breaker.view().retry_at
    assert sum(1 for x in queue.peek(100) if x.next_retry_at == parked_until) == 5
    assert queue.stats().waiting == 20
