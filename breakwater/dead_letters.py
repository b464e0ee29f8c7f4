"""The dead-letter queue: what a sink could not take, kept on disk until it can.

Every record a sink could not write (an error, or its breaker open) is journaled here with
its sink, its attempt history and its next retry time. The journal is a local SQLite file in
WAL mode, on the head node by default: it depends on none of the stores it protects, so it
survives their failures, a restart of its actor, and a restart of the whole Ray cluster.
Nothing is held only in memory: `enqueue` returns after the rows are committed.

A record is `waiting` (to be retried by the retry job) or `dead` (out of attempts, or a poison
record the sink will never take): dead records wait for an operator, who can redrive them.
Each record belongs to one sink: a record that failed only on Redis is retried only on Redis.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from breakwater.accounting import DeadLetterTally
from breakwater.journal import Transaction, open_journal
from breakwater.metrics import MetricsBuffer
from breakwater.reports import KIND_RECEPTION, current_form, row_key
from breakwater.retry import RetryPolicy

log = logging.getLogger("breakwater.dead_letters")

WAITING = "waiting"
DEAD = "dead"
BREAKER_OPEN_ERROR = "BreakerOpen"  # the error class recorded when a breaker diverted a record
_HISTORY_KEPT = 10  # attempts kept per record; older ones are summarised by `attempts`


def default_journal_path() -> Path:
    """`$XDG_STATE_HOME/breakwater/dead-letters.sqlite3`, else under ~/.local/state.

    A fixed place on the machine, not the job's working directory, so the retry job finds
    it after the Ray cluster that wrote it is gone.
    """
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "breakwater" / "dead-letters.sqlite3"


class DeadLetterConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path = Field(default_factory=default_journal_path, description="journal file")
    max_records: int = Field(1_000_000, ge=1, description="waiting records before backpressure")
    max_bytes: int = Field(1 << 30, ge=1024, description="waiting bytes before backpressure")
    dead_retention_s: float | None = Field(
        None, gt=0, description="purge dead records this long after they died; None keeps them"
    )
    retention_warning_s: float = Field(86_400.0, gt=0, description="how far ahead the expiring-soon metric looks")


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a write did not happen."""

    error: str  # exception class name, or BREAKER_OPEN_ERROR
    message: str
    breaker: str  # the breaker state when it happened
    at: float
    transient: bool = True

    @property
    def parked(self) -> bool:
        return self.error == BREAKER_OPEN_ERROR

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "error": self.error, "message": self.message[:500], "breaker": self.breaker}


@dataclass(slots=True)
class DeadLetter:
    id: int
    sink: str
    kind: str
    key: str
    row: tuple[Any, ...]
    source: str
    job_id: str
    status: str
    attempts: int
    history: list[dict[str, Any]]
    first_failed_at: float
    last_failed_at: float
    next_retry_at: float
    dead_at: float | None
    dead_reason: str | None
    read_ms: int

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        data["row"] = list(self.row)
        return data


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    accepted: int  # journaled now (or already journaled by an earlier delivery of this batch)
    duplicates: int  # the same record was already waiting from another batch
    full: bool  # the queue is over its limits: the reader should slow down


@dataclass
class DeadLetterStats:
    waiting: int = 0
    dead: int = 0
    waiting_bytes: int = 0
    oldest_failed_at: float | None = None  # of the waiting records
    by_sink: dict[str, dict[str, int]] = field(default_factory=dict)
    by_error: dict[str, int] = field(default_factory=dict)
    dead_expiring_soon: int = 0
    full: bool = False
    other_deployments: int = 0  # records in the same journal that belong to other deployments

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def publish(self, buffer: MetricsBuffer, now: float) -> None:
        """The queue's gauges, as the metrics catalog names them."""
        buffer.set("ais_dlq_size", self.waiting)
        buffer.set("ais_dlq_bytes", self.waiting_bytes)
        buffer.set("ais_dlq_dead", self.dead)
        buffer.set("ais_dlq_dead_expiring", self.dead_expiring_soon)
        buffer.set("ais_dlq_full", int(self.full))
        oldest = self.oldest_failed_at
        buffer.set("ais_dlq_oldest_age_seconds", 0 if oldest is None else max(0.0, now - oldest))


_COLUMNS = (
    "id, sink, kind, record_key, row, source, job_id, status, attempts, history, "
    "first_failed_at, last_failed_at, next_retry_at, dead_at, dead_reason, read_ms"
)


@dataclass(frozen=True)
class _Common:
    """What every record of one enqueue shares."""

    sink: str
    source: str
    job_id: str
    batch_id: str
    read_ms: int
    failure: Failure
    now: float
    next_retry_at: float

    @property
    def status(self) -> str:
        return WAITING if self.failure.transient else DEAD

    @property
    def attempts(self) -> int:
        """Parked (breaker open) and poison records have not used an attempt."""
        return 0 if self.failure.parked or not self.failure.transient else 1

    @cached_property
    def history(self) -> str:
        return json.dumps([self.failure.as_dict()])

    @property
    def dead_at(self) -> float | None:
        return self.now if self.status == DEAD else None

    @property
    def dead_reason(self) -> str | None:
        return None if self.failure.transient else f"{self.failure.error}: {self.failure.message}"[:500]


def _key(kind: str, row: Sequence[Any]) -> str:
    """A record's identity in the journal: a report's key; a reception's adds its receiver
    (its kind is a column of the journal already)."""
    mmsi, received_ms, digest = row_key(tuple(row))
    if kind == KIND_RECEPTION:
        return f"{mmsi}:{received_ms}:{digest}:{row[3]}:{row[4]}"
    return f"{mmsi}:{received_ms}:{digest}"


class DeadLetterQueue:
    """The queue's logic over its journal; `actors/dead_letters.py` gives it an address."""

    def __init__(
        self,
        config: DeadLetterConfig | None = None,
        policy: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        destination: str = "",
    ) -> None:
        """`destination` is the fingerprint of the deployment's stores (breakwater.deployment):
        this queue journals, counts and hands out only that deployment's records, whoever else
        shares the file. "" is a queue bound to no deployment (tests, old journals)."""
        self.destination = destination
        self.config = config or DeadLetterConfig()
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.db = open_journal(self.config.path)

    def close(self) -> None:
        self.db.close()

    # -- writers put records in -----------------------------------------------------------

    def enqueue(
        self,
        sink: str,
        rows_by_kind: dict[str, list[tuple[Any, ...]]],
        *,
        source: str,
        job_id: str,
        batch_id: str,
        read_ms: int,
        failure: Failure,
        next_retry_at: float | None = None,
    ) -> EnqueueResult:
        """Journal what `sink` could not write. Idempotent per batch: delivering the same batch
        again (a writer restarted mid-call) accepts it again without adding rows."""
        now = self.clock()
        if next_retry_at is None:
            next_retry_at = now if failure.parked else now + self.policy.next_delay_s(1, self.rng)
        common = _Common(sink, source, job_id, batch_id, read_ms, failure, now, next_retry_at)
        accepted = duplicates = inserted = inserted_bytes = 0
        seen: set[tuple[str, str]] = set()
        with self._transaction():
            for kind, rows in rows_by_kind.items():
                for row in rows:
                    key = _key(kind, row)
                    if (kind, key) in seen:  # the same report twice in one batch
                        duplicates += 1
                        continue
                    seen.add((kind, key))
                    size = self._insert(common, kind, key, row)
                    if size is None:
                        duplicates += 1
                        continue
                    accepted += 1
                    if size:
                        inserted += 1
                        inserted_bytes += size
            if inserted:
                self.db.execute(
                    "INSERT INTO dead_letter_totals VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT (destination, sink, status, last_error) "
                    "DO UPDATE SET records = records + excluded.records, bytes = bytes + excluded.bytes",
                    (self.destination, sink, common.status, failure.error, inserted, inserted_bytes),
                )
        return EnqueueResult(accepted, duplicates, self.is_full())

    def _insert(self, c: _Common, kind: str, key: str, row: tuple[Any, ...]) -> int | None:
        """Journal one record: its size in bytes when inserted now, 0 when this delivery had
        journaled it already, None when it was already waiting from another batch."""
        encoded = json.dumps(row)
        cur = self.db.execute(
            "INSERT INTO dead_letters (destination, sink, kind, record_key, row, source, job_id, batch_id, "
            "status, attempts, history, last_error, first_failed_at, last_failed_at, next_retry_at, dead_at, "
            "dead_reason, read_ms, size_bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING",
            (
                self.destination,
                c.sink,
                kind,
                key,
                encoded,
                c.source,
                c.job_id,
                c.batch_id,
                c.status,
                c.attempts,
                c.history,
                c.failure.error,
                c.now,
                c.now,
                c.next_retry_at,
                c.dead_at,
                c.dead_reason,
                c.read_ms,
                len(encoded),
            ),
        )
        if cur.rowcount:
            return len(encoded)
        found = self.db.execute(
            "SELECT batch_id FROM dead_letters WHERE destination=? AND sink=? AND kind=? AND record_key=?",
            (self.destination, c.sink, kind, key),
        ).fetchone()
        return 0 if found and found[0] == c.batch_id else None  # the same delivery again: journaled already

    # -- the retry job takes them out -----------------------------------------------------

    def due(
        self, sink: str, limit: int, *, force: bool = False, owner: str | None = None, lease_s: float = 300.0
    ) -> list[DeadLetter]:
        """Waiting records of `sink` whose retry time has come (all of them with `force`), none
        that another drain holds. With `owner`, they are leased to it for `lease_s`: a second
        drain (a scheduler beside a cron run) does not take them until the lease ends, and only
        the owner's outcomes apply to them."""
        now = self.clock()
        horizon = float("inf") if force else now
        pick = (
            "SELECT id FROM dead_letters WHERE destination=? AND status=? AND sink=? AND next_retry_at<=? "
            "AND (lease_until IS NULL OR lease_until<?) ORDER BY next_retry_at, id LIMIT ?"
        )
        args = (self.destination, WAITING, sink, horizon, now, limit)
        if owner is None:
            cur = self.db.execute(pick.replace("SELECT id", f"SELECT {_COLUMNS}", 1), args)
            return [self._letter(r) for r in cur.fetchall()]
        with self._transaction():
            rows = self.db.execute(
                f"UPDATE dead_letters SET lease_owner=?, lease_until=? WHERE id IN ({pick}) RETURNING {_COLUMNS}",
                (owner, now + lease_s, *args),
            ).fetchall()
        return sorted((self._letter(r) for r in rows), key=lambda x: (x.next_retry_at, x.id))

    def release(self, owner: str) -> int:
        """End every lease `owner` still holds (a drain that finished); returns how many."""
        with self._transaction():
            return self.db.execute(
                "UPDATE dead_letters SET lease_owner=NULL, lease_until=NULL WHERE destination=? AND lease_owner=?",
                (self.destination, owner),
            ).rowcount

    def _held(self, owner: str | None) -> tuple[str, tuple[Any, ...]]:
        """The condition on the rows an outcome may change: the owner's, or any unleased one."""
        if owner is None:
            return "", ()
        return " AND lease_owner=?", (owner,)

    def sinks_waiting(self) -> list[str]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT DISTINCT sink FROM dead_letter_totals WHERE destination=? AND status=? AND records > 0",
                (self.destination, WAITING),
            )
        ]

    def resolve(self, letters: Iterable[DeadLetter], *, written: int, duplicates: int, owner: str | None = None) -> int:
        """The records were written (`written`) or found already there (`duplicates`): they
        leave the queue, and the counts are credited to the job that first failed them, for
        that job's conservation numbers. Only rows actually removed are credited (written
        first), so a replayed call, or one for records another drain resolved, changes
        nothing. The letters must all be of one job and one sink (the drain writes them that
        way). Returns the rows removed."""
        letters = list(letters)
        if not letters:
            return 0
        if len({(x.job_id, x.sink) for x in letters}) != 1:
            raise ValueError("resolve() takes the letters of one job and one sink at a time")
        held, held_args = self._held(owner)
        removed = 0
        with self._transaction():
            for x in letters:
                removed += self.db.execute(f"DELETE FROM dead_letters WHERE id=?{held}", (x.id, *held_args)).rowcount
            if removed:
                credited = min(written, removed)
                self.db.execute(
                    "INSERT INTO retry_outcomes (job_id, sink, written, duplicates) VALUES (?,?,?,?) "
                    "ON CONFLICT (job_id, sink) DO UPDATE SET written=written+excluded.written, "
                    "duplicates=duplicates+excluded.duplicates",
                    (letters[0].job_id, letters[0].sink, credited, removed - credited),
                )
        return removed

    def fail(self, letters: Iterable[DeadLetter], failure: Failure, *, owner: str | None = None) -> tuple[int, int]:
        """A retry failed. Parked (breaker open) records keep their attempts; a poison record
        dies at once; the others die after `max_attempts`. With `owner`, only records it holds
        change, and their lease ends: a replayed call finds none and uses no second attempt.
        Returns (waiting, dead), counting only rows changed."""
        now = self.clock()
        waiting = dead = 0
        held, held_args = self._held(owner)
        with self._transaction():
            for letter in letters:
                history = ([*letter.history, failure.as_dict()])[-_HISTORY_KEPT:]
                attempts = letter.attempts + (0 if failure.parked else 1)
                if not failure.transient or attempts >= self.policy.max_attempts:
                    reason = (
                        f"{failure.error}: {failure.message}"
                        if not failure.transient
                        else f"{attempts} attempts failed, last: {failure.error}: {failure.message}"
                    )
                    dead += self.db.execute(
                        "UPDATE dead_letters SET status=?, attempts=?, history=?, last_error=?, last_failed_at=?, "
                        f"dead_at=?, dead_reason=?, lease_owner=NULL, lease_until=NULL WHERE id=?{held}",
                        (
                            DEAD,
                            attempts,
                            json.dumps(history),
                            failure.error,
                            now,
                            now,
                            reason[:500],
                            letter.id,
                            *held_args,
                        ),
                    ).rowcount
                    continue
                delay = 0.0 if failure.parked else self.policy.next_delay_s(attempts, self.rng)
                waiting += self.db.execute(
                    "UPDATE dead_letters SET attempts=?, history=?, last_error=?, last_failed_at=?, "
                    f"next_retry_at=?, lease_owner=NULL, lease_until=NULL WHERE id=?{held}",
                    (attempts, json.dumps(history), failure.error, now, now + delay, letter.id, *held_args),
                ).rowcount
        return waiting, dead

    def park(self, letters: Iterable[DeadLetter], until: float, *, owner: str | None = None) -> int:
        """The breaker is open: try these again when it hands out trials; no attempt is used,
        and the lease ends. Returns the rows parked (with `owner`, only those it held)."""
        held, held_args = self._held(owner)
        parked = 0
        with self._transaction():
            for x in letters:
                parked += self.db.execute(
                    f"UPDATE dead_letters SET next_retry_at=?, lease_owner=NULL, lease_until=NULL WHERE id=?{held}",
                    (until, x.id, *held_args),
                ).rowcount
        return parked

    # -- what operators see and do --------------------------------------------------------

    def is_full(self) -> bool:
        """From the running totals: the same cost whatever the queue holds."""
        records, size = self._waiting_totals()
        return bool(records >= self.config.max_records or size >= self.config.max_bytes)

    def stats(self) -> DeadLetterStats:
        """From the running totals and two index look-ups: no scan of the queue."""
        stats = DeadLetterStats()
        for sink, status, error, n, size in self.db.execute(
            "SELECT sink, status, last_error, records, bytes FROM dead_letter_totals "
            "WHERE destination=? AND records > 0",
            (self.destination,),
        ):
            counts = stats.by_sink.setdefault(sink, {WAITING: 0, DEAD: 0})
            counts[status] = counts.get(status, 0) + n
            stats.by_error[error] = stats.by_error.get(error, 0) + n
            if status == WAITING:
                stats.waiting += n
                stats.waiting_bytes += size
            else:
                stats.dead += n
        (stats.oldest_failed_at,) = self.db.execute(
            "SELECT MIN(first_failed_at) FROM dead_letters WHERE destination=? AND status=?",
            (self.destination, WAITING),
        ).fetchone()
        (others,) = self.db.execute(
            "SELECT COALESCE(SUM(records), 0) FROM dead_letter_totals WHERE destination!=? AND records > 0",
            (self.destination,),
        ).fetchone()
        stats.other_deployments = int(others)
        stats.dead_expiring_soon = self._dead_expiring_within(self.config.retention_warning_s)
        stats.full = stats.waiting >= self.config.max_records or stats.waiting_bytes >= self.config.max_bytes
        return stats

    def _waiting_totals(self) -> tuple[int, int]:
        records, size = self.db.execute(
            "SELECT COALESCE(SUM(records), 0), COALESCE(SUM(bytes), 0) FROM dead_letter_totals "
            "WHERE destination=? AND status=?",
            (self.destination, WAITING),
        ).fetchone()
        return int(records), int(size)

    def peek(self, n: int, *, sink: str | None = None, status: str = WAITING) -> list[DeadLetter]:
        sql = f"SELECT {_COLUMNS} FROM dead_letters WHERE destination=? AND status=?"
        args: list[Any] = [self.destination, status]
        if sink:
            sql += " AND sink=?"
            args.append(sink)
        cur = self.db.execute(sql + " ORDER BY id LIMIT ?", (*args, n))
        return [self._letter(r) for r in cur.fetchall()]

    def retry_now(self, sink: str | None = None) -> int:
        """Make every waiting record (of one sink) due now; returns how many."""
        return self._update("UPDATE dead_letters SET next_retry_at=? WHERE status=?", [self.clock(), WAITING], sink)

    def clear(self, sink: str | None = None) -> int:
        """Delete waiting records (of one sink). Destructive: the caller checks the admin token."""
        return self._update("DELETE FROM dead_letters WHERE status=?", [WAITING], sink)

    def clear_dead(self, sink: str | None = None) -> int:
        """Delete dead records (of one sink). Destructive: the caller checks the admin token."""
        return self._update("DELETE FROM dead_letters WHERE status=?", [DEAD], sink)

    def redrive(self, sink: str | None = None) -> int:
        """Put dead records (of one sink) back in the queue with fresh attempts, due now."""
        return self._update(
            "UPDATE dead_letters SET status=?, attempts=0, next_retry_at=?, dead_at=NULL, "
            "dead_reason=NULL WHERE status=?",
            [WAITING, self.clock(), DEAD],
            sink,
        )

    def purge_expired(self) -> int:
        """Delete dead records older than the configured retention; returns how many."""
        if self.config.dead_retention_s is None:
            return 0
        cutoff = self.clock() - self.config.dead_retention_s
        with self._transaction():
            cur = self.db.execute(
                "DELETE FROM dead_letters WHERE destination=? AND status=? AND dead_at<?",
                (self.destination, DEAD, cutoff),
            )
        if cur.rowcount:
            log.warning("purged %d dead letters older than the retention", cur.rowcount)
        return cur.rowcount

    def job_tally(self, job_id: str) -> dict[str, DeadLetterTally]:
        """What became of one job's records, per sink: the job summary's dead-letter numbers."""
        counts: dict[str, dict[str, int]] = {}
        for sink, status, n in self.db.execute(
            "SELECT sink, status, COUNT(*) FROM dead_letters WHERE job_id=? GROUP BY sink, status",
            (job_id,),
        ):
            counts.setdefault(sink, {})[status] = n
        for sink, written, duplicates in self.db.execute(
            "SELECT sink, written, duplicates FROM retry_outcomes WHERE job_id=?", (job_id,)
        ):
            counts.setdefault(sink, {}).update(written=written, duplicates=duplicates)
        return {
            sink: DeadLetterTally(
                waiting=c.get(WAITING, 0),
                dead=c.get(DEAD, 0),
                retried_written=c.get("written", 0),
                retried_duplicates=c.get("duplicates", 0),
            )
            for sink, c in counts.items()
        }

    # -- small pieces ---------------------------------------------------------------------

    def _dead_expiring_within(self, horizon_s: float) -> int:
        if self.config.dead_retention_s is None:
            return 0
        cutoff = self.clock() + horizon_s - self.config.dead_retention_s
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE destination=? AND status=? AND dead_at<?",
            (self.destination, DEAD, cutoff),
        ).fetchone()
        return int(n)

    def _update(self, sql: str, args: list[Any], sink: str | None) -> int:
        sql += " AND destination=?"
        args = [*args, self.destination]
        if sink:
            sql += " AND sink=?"
            args = [*args, sink]
        with self._transaction():
            cur = self.db.execute(sql, args)
        return cur.rowcount

    def _transaction(self) -> Transaction:
        return Transaction(self.db)

    @staticmethod
    def _letter(r: Sequence[Any]) -> DeadLetter:
        return DeadLetter(
            id=r[0],
            sink=r[1],
            kind=r[2],
            key=r[3],
            row=current_form(r[2], tuple(json.loads(r[4]))),
            source=r[5],
            job_id=r[6],
            status=r[7],
            attempts=r[8],
            history=json.loads(r[9]),
            first_failed_at=r[10],
            last_failed_at=r[11],
            next_retry_at=r[12],
            dead_at=r[13],
            dead_reason=r[14],
            read_ms=r[15],
        )
