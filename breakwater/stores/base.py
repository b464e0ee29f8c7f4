"""What every store does for the writers: take a batch of reports, idempotently.

A sink is one store behind one circuit breaker: `db` (SQL: history, vessels, latest state)
and, when configured, `redis` (the live picture). `write` must be idempotent (writing the same
batch twice changes nothing) and must raise `StoreUnavailable` when the store is down or slow
and `PoisonRecord` when it refuses the data itself, so the writer can tell a breaker failure
from a bad record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from breakwater.reports import ReportBatch

SINK_DB = "db"
SINK_REDIS = "redis"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How a batch landed: rows that changed the store, and rows that were already there
    (or, for a latest-state store, older than what it holds)."""

    written: int
    duplicates: int

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(self.written + other.written, self.duplicates + other.duplicates)


class Sink(Protocol):
    """A store as the writers see it."""

    name: str
    kinds: frozenset[str]  # the report kinds it keeps; others are not sent to it

    def prepare(self, batch: ReportBatch) -> tuple[ReportBatch, int]:
        """The part of `batch` that can change this store, and how many rows were left out
        because a newer row of the same batch supersedes them (they count as duplicates)."""
        ...

    def write(self, batch: ReportBatch) -> WriteResult: ...

    def close(self) -> None: ...


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def redact(text: str, url: str) -> str:
    """`text` with the password of `url` masked, for errors that quote a connection string."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    return text.replace(password, "***") if password else text
