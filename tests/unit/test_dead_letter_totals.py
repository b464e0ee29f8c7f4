"""The queue's running totals always equal a count of its rows, whatever happened to them, and
a journal written before totals existed is counted once when it is opened."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from breakwater.dead_letters import DEAD, WAITING, DeadLetterConfig, DeadLetterQueue, DeadLetterStats, Failure
from breakwater.retry import RetryPolicy
from tests.unit.fakes import Clock, position

FAILURES = [
    Failure("StoreUnavailable", "connection refused", "CLOSED", 0.0),
    Failure("BreakerOpen", "breaker open", "OPEN", 0.0),
    Failure("PoisonRecord", "value out of range", "CLOSED", 0.0, transient=False),
    Failure("OutOfMemoryError", "OOM command not allowed", "CLOSED", 0.0),
]


def counted_by_scan(db: sqlite3.Connection) -> DeadLetterStats:
    """What the totals must say, the slow way."""
    truth = DeadLetterStats()
    for sink, status, error, n, size in db.execute(
        "SELECT sink, status, last_error, COUNT(*), SUM(size_bytes) FROM dead_letters GROUP BY 1, 2, 3"
    ):
        counts = truth.by_sink.setdefault(sink, {WAITING: 0, DEAD: 0})
        counts[status] += n
        truth.by_error[error] = truth.by_error.get(error, 0) + n
        if status == WAITING:
            truth.waiting += n
            truth.waiting_bytes += size
        else:
            truth.dead += n
    (truth.oldest_failed_at,) = db.execute(
        "SELECT MIN(first_failed_at) FROM dead_letters WHERE status=?", (WAITING,)
    ).fetchone()
    return truth


def same_numbers(stats: DeadLetterStats, truth: DeadLetterStats) -> None:
    assert (stats.waiting, stats.dead, stats.waiting_bytes) == (truth.waiting, truth.dead, truth.waiting_bytes)
    assert stats.by_sink == truth.by_sink
    assert stats.by_error == truth.by_error
    assert stats.oldest_failed_at == truth.oldest_failed_at


@pytest.mark.parametrize("seed", range(12))
def test_totals_equal_a_count_of_the_rows_after_any_sequence_of_operations(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(1_000.0)
    policy = RetryPolicy(max_attempts=3, backoff_base_s=1, backoff_max_s=4)
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "j.sqlite3"), policy, clock=clock, rng=rng)
    for step in range(60):
        clock.advance(rng.uniform(0, 3))
        operation = rng.choice(["enqueue", "enqueue", "fail", "resolve", "park", "redrive", "clear", "clear_dead"])
        sink = rng.choice(["db", "redis"])
        if operation == "enqueue":
            rows = [position(257000000 + rng.randrange(40), 1000 + rng.randrange(40), 0) for _ in range(8)]
            queue.enqueue(
                sink, {"position": rows}, source="s", job_id=f"job-{seed}", batch_id=f"b{step}",
                read_ms=1, failure=rng.choice(FAILURES),
            )  # fmt: skip
        elif operation in ("fail", "resolve", "park"):
            letters = queue.due(sink, rng.randrange(1, 10), force=True)
            if operation == "fail":
                queue.fail(letters, rng.choice(FAILURES))
            elif operation == "park":
                queue.park(letters, clock() + 5)
            elif letters:
                queue.resolve(letters[:1], written=1, duplicates=0)
        elif rng.random() < 0.3:  # the operators' deletes and redrives, now and then
            getattr(queue, operation)(rng.choice([sink, None]))
        same_numbers(queue.stats(), counted_by_scan(queue.db))
    assert queue.is_full() is False
    queue.close()


def test_a_journal_from_before_the_totals_is_counted_once_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    queue = DeadLetterQueue(DeadLetterConfig(path=path), clock=Clock(10.0))
    rows = [position(257000000 + i, 1000 + i, i) for i in range(7)]
    queue.enqueue("db", {"position": rows}, source="s", job_id="j", batch_id="b", read_ms=1, failure=FAILURES[0])
    # As a release without totals left it: no triggers, no totals.
    queue.db.executescript(
        "DROP TRIGGER dead_letters_counted_out; "
        "DROP TRIGGER dead_letters_counted_moved; DROP TABLE dead_letter_totals;"
    )
    queue.close()
    for _ in range(2):  # opened twice: counted once
        reopened = DeadLetterQueue(DeadLetterConfig(path=path, max_records=7), clock=Clock(10.0))
        assert (reopened.stats().waiting, reopened.is_full()) == (7, True)
        reopened.close()
