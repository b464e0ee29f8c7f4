"""The journal: one local SQLite file (WAL) for everything that must outlive a process.

It holds the dead-letter queue, the retry outcomes credited to each job, and snapshots of
the breakers' states and the metric totals, so a restarted actor picks up where the old one
stopped. It lives on local disk, on the head node by default, and depends on none of the
stores Breakwater protects.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

TABLES = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL DEFAULT '',
    sink TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_key TEXT NOT NULL,
    row TEXT NOT NULL,
    source TEXT NOT NULL,
    job_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    history TEXT NOT NULL,
    last_error TEXT NOT NULL,
    first_failed_at REAL NOT NULL,
    last_failed_at REAL NOT NULL,
    next_retry_at REAL NOT NULL,
    dead_at REAL,
    dead_reason TEXT,
    read_ms INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS retry_outcomes (
    job_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    written INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, sink)
);
-- Running totals of the queue, kept in the same transaction as the rows, so its size, bytes
-- and counts per sink and error cost the same at a thousand records and at a million: nothing
-- that runs per enqueue or per metrics tick scans dead_letters. An enqueue adds its batch
-- with one statement (DeadLetterQueue.enqueue: a trigger per row halved its speed); deletes
-- and moves, rarer and done in bulk by drains and operators, are counted by triggers.
CREATE TABLE IF NOT EXISTS dead_letter_totals (
    destination TEXT NOT NULL,
    sink TEXT NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT NOT NULL,
    records INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (destination, sink, status, last_error)
);
CREATE TABLE IF NOT EXISTS snapshots (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    saved_at REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
"""

# A record's identity is its destination (the deployment's stores: breakwater.deployment),
# its sink, kind and report key: the same report failing in two deployments is two records.
INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_identity ON dead_letters (destination, sink, kind, record_key);
CREATE INDEX IF NOT EXISTS dead_letters_due ON dead_letters (destination, status, sink, next_retry_at);
CREATE INDEX IF NOT EXISTS dead_letters_job ON dead_letters (job_id, sink, status);
CREATE INDEX IF NOT EXISTS dead_letters_age ON dead_letters (destination, status, first_failed_at);
CREATE INDEX IF NOT EXISTS dead_letters_died ON dead_letters (destination, status, dead_at);
CREATE TRIGGER IF NOT EXISTS dead_letters_counted_out AFTER DELETE ON dead_letters BEGIN
    UPDATE dead_letter_totals SET records = records - 1, bytes = bytes - OLD.size_bytes
    WHERE destination = OLD.destination AND sink = OLD.sink AND status = OLD.status
      AND last_error = OLD.last_error;
END;
CREATE TRIGGER IF NOT EXISTS dead_letters_counted_moved AFTER UPDATE OF status, last_error ON dead_letters
WHEN OLD.status IS NOT NEW.status OR OLD.last_error IS NOT NEW.last_error BEGIN
    UPDATE dead_letter_totals SET records = records - 1, bytes = bytes - OLD.size_bytes
    WHERE destination = OLD.destination AND sink = OLD.sink AND status = OLD.status
      AND last_error = OLD.last_error;
    INSERT INTO dead_letter_totals VALUES (NEW.destination, NEW.sink, NEW.status, NEW.last_error, 1, NEW.size_bytes)
    ON CONFLICT (destination, sink, status, last_error) DO UPDATE
    SET records = records + 1, bytes = bytes + excluded.bytes;
END;
"""


def open_journal(path: Path) -> sqlite3.Connection:
    """The journal's connection: WAL, synchronous=NORMAL (a committed write survives a crash
    of the process; a power loss may lose the last few), waits up to a minute for another
    process that holds the write lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(TABLES)
    _add_destinations(conn)
    conn.executescript(INDEXES)
    _count_records_journaled_before_totals(conn)
    return conn


def _add_destinations(conn: sqlite3.Connection) -> None:
    """A journal from before destinations and leases: its records get destination '' (unbound),
    which only a queue opened without a deployment drains, and no lease. Its old UNIQUE (sink, kind, record_key)
    stays: such a journal keeps refusing the same report for a second deployment."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
    added = {
        "destination": "TEXT NOT NULL DEFAULT ''",
        "lease_owner": "TEXT",  # the drain that holds the record, until lease_until
        "lease_until": "REAL",
    }
    missing = [name for name in added if name not in columns]
    if missing:
        with Transaction(conn):
            for name in missing:
                conn.execute(f"ALTER TABLE dead_letters ADD COLUMN {name} {added[name]}")


def _count_records_journaled_before_totals(conn: sqlite3.Connection) -> None:
    """A journal written by a release without running totals: count its records once. The
    triggers keep a row per (sink, status, error) ever seen, so empty totals over a non-empty
    queue can only mean that; the check and the count share one write transaction."""
    with Transaction(conn):
        if conn.execute("SELECT 1 FROM dead_letter_totals LIMIT 1").fetchone() is not None:
            return
        conn.execute(
            "INSERT INTO dead_letter_totals SELECT destination, sink, status, last_error, COUNT(*), "
            "SUM(size_bytes) FROM dead_letters GROUP BY destination, sink, status, last_error"
        )


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so two processes sharing
    the journal wait for each other instead of failing with "database is locked"."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


class Snapshots:
    """Named JSON snapshots (a breaker's state, the metric totals) in the journal."""

    def __init__(self, path: Path) -> None:
        self.db = open_journal(path)

    def save(self, kind: str, name: str, snapshot: dict[str, Any]) -> None:
        with Transaction(self.db):
            self.db.execute(
                "INSERT INTO snapshots (kind, name, snapshot, saved_at) VALUES (?,?,?,?) "
                "ON CONFLICT (kind, name) DO UPDATE SET snapshot=excluded.snapshot, "
                "saved_at=excluded.saved_at",
                (kind, name, json.dumps(snapshot), time.time()),
            )

    def load(self, kind: str, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT snapshot FROM snapshots WHERE kind=? AND name=?", (kind, name)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def close(self) -> None:
        self.db.close()
