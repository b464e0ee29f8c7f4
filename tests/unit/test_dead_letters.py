"""The dead-letter queue, its retry schedule and the drain, on a real journal file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from breakwater.breaker import BreakerConfig, BreakerState, CircuitBreaker
from breakwater.dead_letters import (
    BREAKER_OPEN_ERROR,
    DEAD,
    WAITING,
    DeadLetterConfig,
    DeadLetterQueue,
    Failure,
)
from breakwater.drain import Drain
from breakwater.gate import SinkGate
from breakwater.retry import Pacer, RetryPolicy
from tests.unit.fakes import Clock, MemorySink, position

DOWN = Failure("StoreUnavailable", "connection refused", "CLOSED", 0.0)
OPEN = Failure(BREAKER_OPEN_ERROR, "breaker open", "OPEN", 0.0)
POISON = Failure("PoisonRecord", "value out of range", "CLOSED", 0.0, transient=False)


def queue_at(path: Path, clock: Clock, **config: object) -> DeadLetterQueue:
    policy = RetryPolicy(max_attempts=3, backoff_base_s=60, backoff_max_s=600)
    return DeadLetterQueue(DeadLetterConfig(path=path, **config), policy, clock=clock, rng=random.Random(7))


def put(
    queue: DeadLetterQueue,
    rows: list[tuple],
    failure: Failure = DOWN,
    *,
    sink: str = "db",
    batch: str = "b1",
    job: str = "job-1",
    **kw: object,
):  # type: ignore[no-untyped-def]
    return queue.enqueue(
        sink, {"position": rows}, source="src", job_id=job, batch_id=batch, read_ms=1, failure=failure, **kw
    )


ROWS = [position(257000000 + i, 1000 + i, i) for i in range(5)]


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    policy = RetryPolicy(backoff_base_s=60, backoff_max_s=600)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (9, 600)]:
        delays = [policy.next_delay_s(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not one fixed value


def test_pacer_keeps_the_rate() -> None:
    clock = Clock(0.0)
    slept: list[float] = []
    pacer = Pacer(100.0, clock=clock, sleep=lambda s: (slept.append(s), clock.advance(s)))
    for _ in range(5):
        pacer.take(50)  # 50 records at 100/s: half a second each
    assert slept == pytest.approx([0.5, 0.5, 0.5, 0.5])


def test_enqueue_journals_and_survives_a_reopen(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "dlq.sqlite3"
    queue = queue_at(path, clock)
    result = put(queue, ROWS)
    assert (result.accepted, result.duplicates, result.full) == (5, 0, False)
    queue.close()
    reopened = queue_at(path, clock)
    letters = reopened.peek(10)
    assert [x.row for x in letters] == ROWS
    assert letters[0].attempts == 1 and letters[0].history[0]["error"] == "StoreUnavailable"


def test_the_same_batch_delivered_twice_is_accepted_once(tmp_path: Path) -> None:
    queue = queue_at(tmp_path / "q", Clock())
    put(queue, ROWS, batch="b1")
    again = put(queue, ROWS, batch="b1")  # a restarted writer re-ran the call
    other = put(queue, ROWS[:2], batch="b2")  # the same reports from another batch
    assert (again.accepted, again.duplicates) == (5, 0)
    assert (other.accepted, other.duplicates) == (0, 2)
    assert queue.stats().waiting == 5


def test_records_are_due_after_their_backoff(tmp_path: Path) -> None:
    clock = Clock()
    queue = queue_at(tmp_path / "q", clock)
    put(queue, ROWS)
    assert queue.due("db", 100) == []
    clock.advance(61)
    assert len(queue.due("db", 100)) == 5
    assert len(queue.due("db", 100, force=True)) == 5


def test_parked_records_do_not_use_attempts(tmp_path: Path) -> None:
    clock = Clock()
    queue = queue_at(tmp_path / "q", clock)
    put(queue, ROWS, OPEN, next_retry_at=clock.now + 30)
    letters = queue.due("db", 100, force=True)
    assert {x.attempts for x in letters} == {0}
    queue.fail(letters, OPEN)
    assert {x.attempts for x in queue.peek(10)} == {0}


def test_attempts_run_out_into_the_dead_letter_store(tmp_path: Path) -> None:
    clock = Clock()
    queue = queue_at(tmp_path / "q", clock)  # max_attempts=3
    put(queue, ROWS[:1])
    for expected in ((1, 0), (0, 1)):
        letters = queue.due("db", 10, force=True)
        assert queue.fail(letters, DOWN) == expected
    dead = queue.peek(10, status=DEAD)
    assert len(dead) == 1 and dead[0].attempts == 3
    assert "3 attempts failed" in (dead[0].dead_reason or "")
    assert len(dead[0].history) == 3


def test_poison_records_skip_the_retries(tmp_path: Path) -> None:
    queue = queue_at(tmp_path / "q", Clock())
    put(queue, ROWS[:2], POISON)
    assert queue.stats().dead == 2 and queue.stats().waiting == 0
    assert queue.due("db", 10, force=True) == []


def test_redrive_clear_and_clear_dead(tmp_path: Path) -> None:
    queue = queue_at(tmp_path / "q", Clock())
    put(queue, ROWS[:2], POISON, batch="p")
    put(queue, ROWS[2:], DOWN, batch="d", sink="redis")
    assert queue.redrive("db") == 2
    assert queue.stats().by_sink == {"db": {WAITING: 2, DEAD: 0}, "redis": {WAITING: 3, DEAD: 0}}
    assert {x.attempts for x in queue.peek(10, sink="db")} == {0}
    assert queue.clear("redis") == 3
    put(queue, ROWS[2:], POISON, batch="p2")
    assert queue.clear_dead() == 3
    assert queue.stats().waiting == 2


def test_full_by_records_or_bytes(tmp_path: Path) -> None:
    queue = queue_at(tmp_path / "q", Clock(), max_records=3)
    assert not put(queue, ROWS[:2], batch="a").full
    assert put(queue, ROWS[2:], batch="b").full  # accepted anyway: nothing is dropped
    assert queue.stats().waiting == 5 and queue.stats().full
    small = queue_at(tmp_path / "q2", Clock(), max_bytes=1024)
    many = [position(257000000 + i, i, i) for i in range(30)]
    assert put(small, many).full


def test_retention_purges_old_dead_records_and_warns_before(tmp_path: Path) -> None:
    clock = Clock()
    queue = queue_at(tmp_path / "q", clock, dead_retention_s=7 * 86400, retention_warning_s=86400)
    put(queue, ROWS[:2], POISON)
    assert queue.stats().dead_expiring_soon == 0
    clock.advance(6.5 * 86400)
    assert queue.stats().dead_expiring_soon == 2
    assert queue.purge_expired() == 0
    clock.advance(86400)
    assert queue.purge_expired() == 2
    assert queue.stats().dead == 0


def test_job_tally_follows_a_jobs_records(tmp_path: Path) -> None:
    queue = queue_at(tmp_path / "q", Clock())
    put(queue, ROWS[:3], job="j1", batch="1")
    put(queue, ROWS[3:4], POISON, job="j1", batch="2")
    put(queue, ROWS[4:], job="j2", batch="3")
    waiting = [x for x in queue.due("db", 10, force=True) if x.job_id == "j1"]
    queue.resolve(waiting[:2], written=1, duplicates=1)
    tally = queue.job_tally("j1")["db"]
    assert (tally.waiting, tally.dead, tally.retried_written, tally.retried_duplicates) == (1, 1, 1, 1)
    assert tally.total == 4


def drain_setup(tmp_path: Path, clock: Clock):  # type: ignore[no-untyped-def]
    queue = queue_at(tmp_path / "q", clock)
    sink = MemorySink("db")
    breaker = CircuitBreaker("db", BreakerConfig(failure_threshold=3, reset_timeout_s=30), clock=clock)
    gates = {"db": SinkGate(breaker, clock=clock)}
    drain = Drain(queue, {"db": sink}, gates, queue.policy, clock=clock, sleep=clock.advance)
    return queue, sink, breaker, drain


def test_drain_writes_what_is_due_and_empties_the_queue(tmp_path: Path) -> None:
    clock = Clock()
    queue, sink, _, drain = drain_setup(tmp_path, clock)
    put(queue, ROWS)
    assert drain.run() == {}  # nothing due yet
    clock.advance(61)
    assert drain.run() == {"db.written": 5}
    assert queue.stats().waiting == 0
    assert len(sink.rows) == 5
    assert queue.job_tally("job-1")["db"].retried_written == 5


def test_drain_parks_everything_when_the_breaker_opens(tmp_path: Path) -> None:
    clock = Clock()
    queue, sink, breaker, drain = drain_setup(tmp_path, clock)
    put(queue, ROWS, batch="a")
    put(queue, [position(258000000 + i, i, i) for i in range(5)], batch="b", job="job-2")
    sink.down = True
    report = drain.run(force=True)
    assert breaker.state == BreakerState.OPEN
    assert report["db.parked"] > 0
    assert sink.calls == 3  # the breaker stopped the drain after its threshold
    assert queue.stats().waiting == 10


def test_drain_isolates_one_record_that_keeps_failing(tmp_path: Path) -> None:
    clock = Clock()
    queue, sink, breaker, drain = drain_setup(tmp_path, clock)
    put(queue, ROWS)
    sink.flaky = {ROWS[2][0]}
    report = drain.run(force=True)
    assert report["db.written"] == 4
    assert report["db.failed"] == 1
    assert [x.row for x in queue.peek(10)] == [ROWS[2]]
    for _ in range(2):  # max_attempts=3
        breaker.force(None, "test: reset between drains")
        drain.run(force=True)
    assert queue.stats().dead == 1
    sink.flaky = set()  # the fix
    assert queue.redrive() == 1
    assert drain.run(force=True) == {"db.written": 1}
    assert len(sink.rows) == 5


def test_drain_sends_poison_straight_to_the_dead_letter_store(tmp_path: Path) -> None:
    clock = Clock()
    queue, sink, _, drain = drain_setup(tmp_path, clock)
    put(queue, ROWS)
    sink.poison = {ROWS[0][0]}
    report = drain.run(force=True)
    assert report == {"db.written": 4, "db.dead": 1}
