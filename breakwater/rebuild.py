"""Rebuilding Redis's live picture from the SQL store, after Redis lost it (a flush, a
failover without persistence, a new server).

Each vessel's newest position (the `latest_positions` row the ingest derives) and the static
reports that decide its merged static data go through `RedisSink.write`, the path the ingest
takes: the newer-wins script decides every update, so a rebuild beside a running ingest never
sets a vessel back, and a second rebuild changes nothing. Vessels go in MMSI order, a chunk
at a time (keyset pagination on the primary keys), so memory is bounded by the chunk, not by
the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import InterfaceError, OperationalError

from breakwater.config import Settings
from breakwater.errors import ConfigError
from breakwater.reports import MMSI, POSITION_FIELDS, STATIC_FIELDS, ReportBatch
from breakwater.stores import schema
from breakwater.stores.engine import cannot_use
from breakwater.stores.redis import REDIS_SETTING, RedisSink, check_redis
from breakwater.stores.sql_queries import SqlQueries
from breakwater.write_model import STATIC_VALUE_FIELDS, plausible

CHUNK_VESSELS = 1000
REBUILD_SOURCE = "rebuild-redis"  # the batch label; each position keeps its own stored source


@dataclass(frozen=True)
class RebuildCounts:
    """What a rebuild did. `*_applied` count the updates the newer-wins script took: zero on
    a Redis that already held everything, so a second run shows it changed nothing."""

    vessels: int
    positions_sent: int
    positions_applied: int
    statics_sent: int
    statics_applied: int
    deleted: int
    seconds: float

    @property
    def vessels_per_s(self) -> float:
        return self.vessels / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "vessels_per_s": round(self.vessels_per_s, 1)}


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _as_report(row: Any, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """A SQL row as the report tuple the sinks take (`received_at` back to milliseconds)."""
    mapping = row._mapping
    # latest_positions has no flag: what it holds is plausible by construction.
    return tuple(_ms(mapping["received_at"]) if f == "received_ms" else mapping.get(f) for f in fields)


def deciding_statics(newest_first: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The static reports of one vessel that decide its merged data: the newest one, and for
    each field the newest report that carries it. Replaying only these leaves the hash the
    whole history would (values, `static_ms` and the per-field stamps), with far fewer updates.
    A flagged report decides nothing (write_model rule 4)."""
    kept: list[tuple[Any, ...]] = []
    covered: set[str] = set()
    offset = STATIC_FIELDS.index(STATIC_VALUE_FIELDS[0])
    for row in plausible(newest_first):
        carried = {f for i, f in enumerate(STATIC_VALUE_FIELDS, start=offset) if row[i] is not None}
        if not kept or carried - covered:
            kept.append(row)
            covered |= carried
    return kept


class RedisRebuild:
    """Reads the SQL store chunk by chunk and writes each chunk to Redis through `RedisSink`."""

    def __init__(self, queries: SqlQueries, sink: RedisSink, *, chunk_vessels: int = CHUNK_VESSELS) -> None:
        self.queries = queries
        self.sink = sink
        self.chunk_vessels = chunk_vessels

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """One short read per chunk: on SQLite a read holds the write lock (BEGIN IMMEDIATE),
        so a chunk at a time lets a running ingest write in between."""
        try:
            with self.queries.engine.connect() as conn:
                yield conn
        except (OperationalError, InterfaceError) as e:
            raise cannot_use(self.queries.url, e) from e

    def _next_vessels(self, after: int) -> list[int]:
        """The next chunk of MMSIs that have a latest position or a static report."""
        lp, sr = schema.latest_positions, schema.static_reports
        with self._reading() as conn:
            positioned = conn.scalars(
                select(lp.c.mmsi).where(lp.c.mmsi > after).order_by(lp.c.mmsi).limit(self.chunk_vessels)
            ).all()
            described = conn.scalars(
                select(sr.c.mmsi).distinct().where(sr.c.mmsi > after).order_by(sr.c.mmsi).limit(self.chunk_vessels)
            ).all()
        return sorted(set(positioned) | set(described))[: self.chunk_vessels]

    def _chunk(self, first: int, last: int) -> tuple[dict[str, list[tuple[Any, ...]]], list[tuple[Any, ...]]]:
        """The chunk's latest positions by stored source, and its deciding static reports."""
        lp, sr = schema.latest_positions, schema.static_reports
        by_source: dict[str, list[tuple[Any, ...]]] = {}
        statics: list[tuple[Any, ...]] = []
        with self._reading() as conn:
            for row in conn.execute(select(lp).where(lp.c.mmsi.between(first, last))):
                by_source.setdefault(row.source or "", []).append(_as_report(row, POSITION_FIELDS))
            history = (
                select(sr)
                .where(sr.c.mmsi.between(first, last), sr.c.flag.is_(None))
                .order_by(sr.c.mmsi, sr.c.received_at.desc(), sr.c.digest.desc())
            )
            vessel: list[tuple[Any, ...]] = []
            for row in conn.execution_options(stream_results=True, yield_per=2000).execute(history):
                report = _as_report(row, STATIC_FIELDS)
                if vessel and vessel[0][MMSI] != report[MMSI]:
                    statics += deciding_statics(vessel)
                    vessel = []
                vessel.append(report)
            statics += deciding_statics(vessel) if vessel else []
        return by_source, statics

    def run(self, clock: Callable[[], float] = time.monotonic) -> RebuildCounts:
        started = clock()
        vessels = positions_sent = positions_applied = statics_sent = statics_applied = 0
        after = -1
        while chunk := self._next_vessels(after):
            by_source, statics = self._chunk(chunk[0], chunk[-1])
            for source, rows in by_source.items():
                # One batch per stored source: the hash's `source` is the batch's.
                positions_sent += len(rows)
                positions_applied += self.sink.write(ReportBatch(source, 0, rows, [], [])).written
            if statics:
                statics_sent += len(statics)
                statics_applied += self.sink.write(ReportBatch(REBUILD_SOURCE, 0, [], statics, [])).written
            vessels += len(chunk)
            after = chunk[-1]
        deleted = self.queries.deleted_vessels()
        if deleted:
            self.sink.client.sadd(self.sink.keys.deleted, *deleted)
        return RebuildCounts(
            vessels, positions_sent, positions_applied, statics_sent, statics_applied, len(deleted), clock() - started
        )


def rebuild_redis(settings: Settings, *, chunk_vessels: int = CHUNK_VESSELS) -> RebuildCounts:
    """Rebuild the deployment's Redis (its prefix only) from its SQL store. Safe to run while
    an ingest writes, and as often as wanted."""
    if not settings.redis_url:
        raise ConfigError(REDIS_SETTING, "rebuild-redis needs the Redis to rebuild: give --redis-url")
    check_redis(settings.redis_url, timeout_s=settings.redis_timeout_s)
    queries = SqlQueries(settings.database_url, timeout_s=settings.store_timeout_s)
    sink = RedisSink(
        settings.redis_url,
        prefix=settings.redis_prefix,
        buckets=settings.redis_buckets,
        stream_maxlen=settings.redis_stream_maxlen,
        timeout_s=settings.redis_timeout_s,
    )
    try:
        return RedisRebuild(queries, sink, chunk_vessels=chunk_vessels).run()
    finally:
        sink.close()
        queries.close()
