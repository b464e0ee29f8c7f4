"""The `db` sink: position history, static reports, other messages, vessels and latest state
in one SQL transaction per batch.

History rows go in with insert-or-ignore on their identity key, so a batch written twice
adds nothing; `written` counts the history rows that were new. `vessels` and
`latest_positions` are derived in the same transaction by the rules of
`breakwater.write_model`: the latest position is the newest report with a valid position
(an upsert that only moves forward in (time, digest)); each static field is the value of the
newest static report that carries it, read back from the `static_reports` history, which
holds every report's own time. On PostgreSQL the rows travel by COPY into per-connection
staging tables and move on with INSERT ... SELECT ... ON CONFLICT DO NOTHING; the newest
position per vessel is chosen there too (DISTINCT ON), so a batch costs a handful of round
trips whatever its size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Table, event, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from breakwater.reports import (
    KIND_OTHER,
    KIND_POSITION,
    KIND_RECEPTION,
    KIND_STATIC,
    OTHER_FIELDS,
    POSITION_FIELDS,
    RECEPTION_FIELDS,
    STATIC_FIELDS,
    ReportBatch,
    newest_per_vessel,
)
from breakwater.stores import schema
from breakwater.stores.base import SINK_DB, WriteResult
from breakwater.stores.engine import make_engine
from breakwater.stores.faults import classify_sql_error
from breakwater.write_model import STATIC_VALUE_FIELDS, plausible, positioned

_HISTORY = {
    KIND_POSITION: (schema.positions, POSITION_FIELDS),
    KIND_STATIC: (schema.static_reports, STATIC_FIELDS),
    KIND_OTHER: (schema.other_messages, OTHER_FIELDS),
    KIND_RECEPTION: (schema.receptions, RECEPTION_FIELDS),
}
_STATIC_VALUES = STATIC_VALUE_FIELDS  # imo .. destination


def _db_column(field: str) -> str:
    """A row's times are integer milliseconds (`received_ms`), a table's are timestamps
    (`received_at`)."""
    return field[:-3] + "_at" if field.endswith("_ms") else field


class SqlSink:
    """History and vessel data in SQLite or PostgreSQL."""

    name = SINK_DB
    kinds = frozenset({KIND_POSITION, KIND_STATIC, KIND_OTHER, KIND_RECEPTION})

    def __init__(self, url: str, *, timeout_s: float = 10.0, engine: Engine | None = None) -> None:
        self.engine = engine or make_engine(url, timeout_s=timeout_s)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self.is_postgres else sqlite.insert
        self._sqlite_sql = {kind: self._sqlite_insert_sql(table, fields) for kind, (table, fields) in _HISTORY.items()}
        if self.is_postgres:
            event.listen(self.engine, "connect", _create_staging_tables)
            self.engine.dispose()  # connections pooled before the listener lack the tables

    def close(self) -> None:
        self.engine.dispose()

    def prepare(self, batch: ReportBatch) -> tuple[ReportBatch, int]:
        return batch, 0  # history keeps every report

    def write(self, batch: ReportBatch) -> WriteResult:
        try:
            with self.engine.begin() as conn:
                result = self._write_postgres(conn, batch) if self.is_postgres else self._write_sqlite(conn, batch)
            return result
        except (SQLAlchemyError, psycopg.Error, OSError) as e:
            raise classify_sql_error(self.name, e) from e

    # -- SQLite: executemany with plain tuples ------------------------------------------------

    def _sqlite_insert_sql(self, table: Table, fields: Sequence[str]) -> str:
        columns = [_db_column(f) for f in fields] + ["source"]
        marks = ",".join("?" * len(columns))
        insert = f"INSERT INTO {table.name} ({','.join(columns)}) VALUES ({marks})"
        if "flag" not in fields:
            return f"{insert} ON CONFLICT DO NOTHING"
        # A report stored flagged and now delivered plausible loses its flag (write_model rule 4).
        return (
            f"{insert} ON CONFLICT (mmsi, received_at, digest) DO UPDATE SET flag = NULL "
            f"WHERE {table.name}.flag IS NOT NULL AND excluded.flag IS NULL"
        )

    def _write_sqlite(self, conn: Connection, batch: ReportBatch) -> WriteResult:
        written = total = 0
        source = (batch.source,)
        for kind in _HISTORY:
            rows = batch.rows(kind)
            if not rows:
                continue
            result = conn.exec_driver_sql(self._sqlite_sql[kind], [row + source for row in rows])
            written += max(result.rowcount, 0)
            total += len(rows)
        if latest := newest_per_vessel(positioned(batch.positions)):
            self._upsert_latest(conn, latest, batch.source)
        self._upsert_vessels(conn, plausible(batch.statics))
        return WriteResult(written, total - written)

    def _upsert_latest(self, conn: Connection, rows: list[tuple[Any, ...]], source: str) -> None:
        latest = schema.latest_positions
        stmt = self._insert(latest)
        fields = [f for f in POSITION_FIELDS if f in latest.c or f == "received_ms"]
        update = {c.name: stmt.excluded[c.name] for c in latest.c if c.name != "mmsi"}
        stmt = stmt.on_conflict_do_update(
            index_elements=[latest.c.mmsi],
            set_=update,
            where=tuple_(stmt.excluded.received_at, stmt.excluded.digest)
            > tuple_(latest.c.received_at, latest.c.digest),
        )
        index = [POSITION_FIELDS.index(f) for f in fields]
        params = []
        for row in rows:
            values = {_db_column(f): row[i] for f, i in zip(fields, index, strict=True)}
            values["source"] = source
            params.append(values)
        conn.execute(stmt, params)

    # -- PostgreSQL: COPY into staging, then set-based statements -------------------------------

    def _write_postgres(self, conn: Connection, batch: ReportBatch) -> WriteResult:
        raw = conn.connection.driver_connection
        assert raw is not None
        written = total = 0
        source = (batch.source,)
        with raw.cursor() as cur:
            for kind, (table, fields) in _HISTORY.items():
                rows = batch.rows(kind)
                if not rows:
                    continue
                staging = f"staging_{table.name}"
                names = [*fields, "source"]
                with cur.copy(f"COPY {staging} ({','.join(names)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row + source)
                select_list = ",".join(f"to_timestamp({f} / 1000.0)" if f.endswith("_ms") else f for f in names)
                columns = ",".join(_db_column(f) for f in names)
                cur.execute(
                    f"INSERT INTO {table.name} ({columns}) SELECT {select_list} FROM {staging} ON CONFLICT DO NOTHING"
                )
                inserted = max(cur.rowcount, 0)
                if inserted < len(rows) and "flag" in fields and _holds_flagged(cur, table.name):
                    # Some were stored already: those stored flagged and plausible now lose
                    # their flag (write_model rule 4). Only then, and only when the table holds
                    # flagged rows at all (its partial index says so at once), so a batch pays
                    # nothing for it otherwise.
                    cur.execute(_pg_clear_flags(table.name))
                    inserted += max(cur.rowcount, 0)
                written += inserted
                total += len(rows)
            if batch.positions:
                cur.execute(_PG_LATEST_FROM_STAGING)
            if batch.statics:
                # One vessel's merge at a time: the lock makes a concurrent writer of the same
                # vessel (a drain beside the ingest) wait for this commit, so its next
                # statement reads a history that holds this batch's reports too.
                cur.execute(_PG_LOCK_VESSELS)
                cur.execute(_PG_VESSELS_FROM_STAGING)
        return WriteResult(written, total - written)

    # -- vessels: newest value per field, each by its own report's time ----------------------

    def _upsert_vessels(self, conn: Connection, statics: list[tuple[Any, ...]]) -> None:
        """Merge the batch's static reports into `vessels` (rule 3 of `write_model`).

        The history rows of the batch are already in `static_reports`, so a field the batch
        carries is read back from there: the value of the newest report that carries it,
        whatever batch brought that report. A field the batch does not carry cannot change."""
        if statics:
            conn.exec_driver_sql(_SQLITE_VESSELS_FROM_HISTORY, (json.dumps(carried_fields(statics)),))


def carried_fields(statics: list[tuple[Any, ...]]) -> list[list[int]]:
    """Per vessel of the batch: [mmsi, the receive time of its oldest report in the batch, then
    1 or 0 per static field: does any of its reports in the batch carry that field]."""
    offset = STATIC_FIELDS.index("imo")
    carried: dict[int, list[int]] = {}
    for row in statics:
        flags = carried.setdefault(row[0], [row[1]] + [0] * len(_STATIC_VALUES))
        flags[0] = min(flags[0], row[1])
        for i in range(len(_STATIC_VALUES)):
            if row[offset + i] is not None:
                flags[i + 1] = 1
    return [[mmsi, *flags] for mmsi, flags in carried.items()]


def _vessels_from_history(batch_vessels: str) -> str:
    """Upsert `vessels` for the vessels of `batch_vessels` (a query with the columns mmsi,
    since: the receive time of the vessel's oldest report in the batch, and c_<field>, greater
    than 0 when the batch carries that field).

    Each carried field is the newest non-empty value in the history, by (received_at, digest).
    That report is this batch's or a newer one, so only the vessel's reports since the batch's
    oldest are read, a range of the primary key's index: the work per batch stays the same
    however long the vessel's history grows (reading all of it, the merge took 9.5 of 22 s
    writing 1.5 million reports, and slowed as the table grew). A field not carried stays as
    the vessel has it."""
    newest = ",\n    ".join(
        f"CASE WHEN b.c_{f} > 0 THEN (SELECT s.{f} FROM static_reports s WHERE s.mmsi = b.mmsi "
        f"AND s.received_at >= b.since AND s.{f} IS NOT NULL AND s.flag IS NULL "
        "ORDER BY s.received_at DESC, s.digest DESC LIMIT 1) END"
        for f in _STATIC_VALUES
    )
    merge = ",\n    ".join(f"{f} = COALESCE(excluded.{f}, vessels.{f})" for f in _STATIC_VALUES)
    return f"""
INSERT INTO vessels (mmsi, {", ".join(_STATIC_VALUES)}, static_received_at)
SELECT b.mmsi,
    {newest},
    (SELECT s.received_at FROM static_reports s WHERE s.mmsi = b.mmsi AND s.received_at >= b.since
     AND s.flag IS NULL ORDER BY s.received_at DESC LIMIT 1)
FROM ({batch_vessels}) AS b WHERE true
ON CONFLICT (mmsi) DO UPDATE SET
    {merge},
    static_received_at = excluded.static_received_at
"""


_SQLITE_VESSELS_FROM_HISTORY = _vessels_from_history(
    "SELECT json_extract(value, '$[0]') AS mmsi, json_extract(value, '$[1]') AS since, "
    + ", ".join(f"json_extract(value, '$[{i}]') AS c_{f}" for i, f in enumerate(_STATIC_VALUES, start=2))
    + " FROM json_each(?)"
)
_PG_VESSELS_FROM_STAGING = _vessels_from_history(
    "SELECT mmsi, min(to_timestamp(received_ms / 1000.0)) AS since, "
    + ", ".join(f"count({f}) AS c_{f}" for f in _STATIC_VALUES)
    + " FROM staging_static_reports WHERE flag IS NULL GROUP BY mmsi"
)
# Transaction-scoped, in MMSI order so two writers never wait on each other in a cycle.
_PG_LOCK_VESSELS = """
SELECT pg_advisory_xact_lock(74658, mmsi::int)
FROM (SELECT DISTINCT mmsi FROM staging_static_reports WHERE flag IS NULL ORDER BY mmsi) AS batch_vessels
"""


_PG_LATEST_FROM_STAGING = """
INSERT INTO latest_positions (mmsi, received_at, digest, msg_type, lat, lon, sog_kn, cog_deg,
    heading_deg, nav_status, rot_deg_min, station, time_source, source)
SELECT DISTINCT ON (mmsi) mmsi, to_timestamp(received_ms / 1000.0), digest, msg_type, lat, lon,
    sog_kn, cog_deg, heading_deg, nav_status, rot_deg_min, station, time_source, source
FROM staging_positions
WHERE lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180 AND flag IS NULL  -- write_model.positioned
ORDER BY mmsi, received_ms DESC, digest DESC
ON CONFLICT (mmsi) DO UPDATE SET
    received_at = excluded.received_at, digest = excluded.digest, msg_type = excluded.msg_type,
    lat = excluded.lat, lon = excluded.lon, sog_kn = excluded.sog_kn, cog_deg = excluded.cog_deg,
    heading_deg = excluded.heading_deg, nav_status = excluded.nav_status,
    rot_deg_min = excluded.rot_deg_min, station = excluded.station,
    time_source = excluded.time_source, source = excluded.source
WHERE (excluded.received_at, excluded.digest) > (latest_positions.received_at, latest_positions.digest)
"""


def _holds_flagged(cur: Any, table: str) -> bool:
    """Whether `table` holds a flagged row: the first of its partial index `<table>_flagged`.
    In index order, so the planner reads the index, which it would not do for an EXISTS while
    its statistics guess that many rows are flagged (it scans the whole history then)."""
    cur.execute(f"SELECT 1 FROM {table} WHERE flag IS NOT NULL ORDER BY mmsi, received_at, digest LIMIT 1")
    return cur.fetchone() is not None


def _pg_clear_flags(table: str) -> str:
    """The history rows of `table` stored flagged whose report the staged batch brings
    plausible: their flag goes (write_model rule 4)."""
    return f"""
UPDATE {table} h SET flag = NULL FROM staging_{table} s
WHERE s.flag IS NULL AND h.flag IS NOT NULL
    AND h.mmsi = s.mmsi AND h.received_at = to_timestamp(s.received_ms / 1000.0) AND h.digest = s.digest
"""


def _staging_ddl() -> list[str]:
    types = {
        "mmsi": "bigint",
        "received_ms": "bigint",
        "heard_ms": "bigint",
        "digest": "bigint",
        "msg_type": "smallint",
        "lat": "float8",
        "lon": "float8",
        "sog_kn": "float8",
        "cog_deg": "float8",
        "heading_deg": "smallint",
        "nav_status": "smallint",
        "rot_deg_min": "float8",
        "imo": "bigint",
        "ship_type": "smallint",
        "to_bow_m": "smallint",
        "to_stern_m": "smallint",
        "to_port_m": "smallint",
        "to_starboard_m": "smallint",
        "draught_m": "float8",
    }
    statements = []
    for table, fields in _HISTORY.values():
        columns = ", ".join(f"{f} {types.get(f, 'text')}" for f in [*fields, "source"])
        statements.append(f"CREATE TEMP TABLE IF NOT EXISTS staging_{table.name} ({columns}) ON COMMIT DELETE ROWS")
    return statements


_STAGING_DDL = _staging_ddl()


def _create_staging_tables(dbapi_connection: Any, _record: Any) -> None:
    """Each pooled connection gets its own staging tables once; rows vanish at commit."""
    with dbapi_connection.cursor() as cur:
        for statement in _STAGING_DDL:
            cur.execute(statement)
    dbapi_connection.commit()
