"""The SQL schema, the same on SQLite and PostgreSQL, and its versioned upgrades.

History tables (`positions`, `static_reports`, `other_messages`) keep every report once:
their primary key is the report's identity (MMSI, receive time, payload digest), so writing a
batch twice adds nothing. `latest_positions` and `vessels` are derived from them by upserts
that never move back in time. The primary key of `positions` leads with (mmsi, received_at),
which is the index track queries need.

The program creates and upgrades the schema on start (`migrate`): `breakwater_schema` holds
the version, and each step in `MIGRATIONS` upgrades one version in place without losing rows.
Going back is an operator's decision, never a job's (`downgrade`, `breakwater schema
downgrade N`): each step in `DOWNGRADES` undoes one upgrade, keeps every history row, and
refuses what would lose data silently.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    TypeDecorator,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from breakwater.errors import BreakwaterError

log = logging.getLogger("breakwater.schema")

LATEST_VERSION = 5


class UtcTimestamp(TypeDecorator[datetime]):
    """An aware UTC datetime in Python; `timestamptz` on PostgreSQL, integer milliseconds
    since the epoch on SQLite (which has no time type that keeps zones or sorts as numbers).

    Binds also accept integer milliseconds, the form reports have on the hot path."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, int):
            value = datetime.fromtimestamp(value / 1000, UTC)
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give times in UTC with tzinfo")
        if dialect.name == "postgresql":
            return value
        return round(value.timestamp() * 1000)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromtimestamp(value / 1000, UTC)


def _report_columns() -> list[Column[Any]]:
    return [
        Column("mmsi", BigInteger, primary_key=True),
        Column("received_at", UtcTimestamp, primary_key=True),
        Column("digest", BigInteger, primary_key=True),
        Column("msg_type", SmallInteger, nullable=False),
    ]


def _provenance() -> list[Column[Any]]:
    return [Column("station", Text), Column("time_source", Text), Column("source", Text)]


def _flag(version: int) -> list[Column[Any]]:
    """Why a history row may not move a latest state or a static merge (`reports.FLAGS`);
    NULL for a plausible report. Since version 5."""
    return [Column("flag", Text)] if version >= 5 else []


def _position_values() -> list[Column[Any]]:
    return [
        Column("lat", Float),
        Column("lon", Float),
        Column("sog_kn", Float),
        Column("cog_deg", Float),
        Column("heading_deg", SmallInteger),
        Column("nav_status", SmallInteger),
        Column("rot_deg_min", Float),
    ]


def _static_values() -> list[Column[Any]]:
    return [
        Column("imo", BigInteger),
        Column("callsign", Text),
        Column("name", Text),
        Column("ship_type", SmallInteger),
        Column("to_bow_m", SmallInteger),
        Column("to_stern_m", SmallInteger),
        Column("to_port_m", SmallInteger),
        Column("to_starboard_m", SmallInteger),
        Column("eta", Text),
        Column("draught_m", Float),
        Column("destination", Text),
    ]


def define_tables(metadata: MetaData, version: int) -> dict[str, Table]:
    """The tables as they are at `version`: the current ones, or an old one for upgrades."""
    no_rowid: dict[str, Any] = {"sqlite_with_rowid": False}
    tables = [
        Table(
            "positions",
            metadata,
            *[*_report_columns(), *_position_values(), *_provenance(), *_flag(version)],
            **no_rowid,
        ),
        Table(
            "static_reports",
            metadata,
            *[*_report_columns(), *_static_values(), *_provenance(), *_flag(version)],
            **no_rowid,
        ),
        Table(
            "other_messages",
            metadata,
            *[*_report_columns(), Column("nmea", Text, nullable=False), *_provenance(), *_flag(version)],
            **no_rowid,
        ),
        Table(
            "latest_positions",
            metadata,
            Column("mmsi", BigInteger, primary_key=True),
            Column("received_at", UtcTimestamp, nullable=False),
            Column("digest", BigInteger, nullable=False),
            Column("msg_type", SmallInteger, nullable=False),
            *_position_values(),
            *_provenance(),
        ),
        Table(
            "vessels",
            metadata,
            Column("mmsi", BigInteger, primary_key=True),
            *_static_values(),
            Column("static_received_at", UtcTimestamp),
            *([Column("deleted_at", UtcTimestamp)] if version >= 2 else []),
        ),
        Table("breakwater_schema", metadata, Column("version", Integer, nullable=False)),
    ]
    if version >= 3:
        # What the deployment itself holds about how it may be operated: the admin token's
        # digest, written by the ingest job, so a cluster-less store checks operators itself.
        tables.append(
            Table(
                "breakwater_settings",
                metadata,
                Column("name", Text, primary_key=True),
                Column("value", Text, nullable=False),
            )
        )
    if version >= 4:
        # Other receivers' copies of a stored report (breakwater.fusion): the report's identity
        # and kind, who heard the copy and when by its clock. The report's own receiver is
        # its station (or source).
        tables.append(
            Table(
                "receptions",
                metadata,
                Column("mmsi", BigInteger, primary_key=True),
                Column("received_at", UtcTimestamp, primary_key=True),
                Column("digest", BigInteger, primary_key=True),
                Column("kind", Text, primary_key=True),
                Column("receiver", Text, primary_key=True),
                Column("heard_at", UtcTimestamp, nullable=False),
                Column("source", Text),
                **no_rowid,
            )
        )
    if version >= 2:
        Index("latest_positions_lat_lon", tables[3].c.lat, tables[3].c.lon)
    if version >= 5:
        for table in tables[:3]:
            # The flagged rows alone (few, mostly none): whether a table holds any, and which,
            # costs a look at this index, not a scan of the history (stores/sql.py).
            flagged = table.c.flag.is_not(None)
            columns = (table.c.mmsi, table.c.received_at, table.c.digest)
            Index(f"{table.name}_flagged", *columns, postgresql_where=flagged, sqlite_where=flagged)
    return {t.name: t for t in tables}


METADATA = MetaData()
TABLES = define_tables(METADATA, LATEST_VERSION)
positions = TABLES["positions"]
static_reports = TABLES["static_reports"]
other_messages = TABLES["other_messages"]
latest_positions = TABLES["latest_positions"]
vessels = TABLES["vessels"]
schema_version = TABLES["breakwater_schema"]
deployment_settings = TABLES["breakwater_settings"]
receptions = TABLES["receptions"]


def _to_v1(conn: Connection) -> None:
    define_tables(md := MetaData(), 1)
    md.create_all(conn)


def _to_v2(conn: Connection) -> None:
    """Soft delete of vessels, and an index for box queries on the latest positions."""
    column_type = UtcTimestamp().dialect_impl(conn.dialect).compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE vessels ADD COLUMN deleted_at {column_type}"))
    conn.execute(text("CREATE INDEX latest_positions_lat_lon ON latest_positions (lat, lon)"))


def _to_v3(conn: Connection) -> None:
    """The deployment's own settings (the admin token's digest). A new table: releases that
    know only version 2 ignore it."""
    deployment_settings.create(conn)


def _to_v4(conn: Connection) -> None:
    """Receptions: the receivers that heard a stored report's copies. A new table: releases
    that know only version 3 ignore it (and store every copy as a report of its own)."""
    receptions.create(conn)


FLAGGED_TABLES = ("positions", "static_reports", "other_messages")


def _to_v5(conn: Connection) -> None:
    """A `flag` on every history row: reports that failed a plausibility check are kept,
    flagged, instead of being rejected. A nullable column with no default: adding it rewrites
    nothing on either database, and releases that know only version 4 never name it. An index
    of the flagged rows alone, which starts empty."""
    for table in FLAGGED_TABLES:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN flag TEXT"))
        conn.execute(
            text(f"CREATE INDEX {table}_flagged ON {table} (mmsi, received_at, digest) WHERE flag IS NOT NULL")
        )


MIGRATIONS: list[Callable[[Connection], None]] = [_to_v1, _to_v2, _to_v3, _to_v4, _to_v5]


def current_version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, "breakwater_schema"):
        return 0
    version = conn.execute(select(schema_version.c.version)).scalar()
    return int(version or 0)


class SchemaError(BreakwaterError):
    """The store cannot be moved to the schema version asked for: it is newer than this
    release, or going down would lose what the operator has not decided to lose."""


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the schema lock, so two starting jobs (or a job and an operator)
    never change the schema at once: on PostgreSQL an advisory lock, on SQLite its write lock
    (BEGIN IMMEDIATE). Every schema change is transactional on both, so a step that fails
    leaves the store as it was."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(74657)"))
        yield conn


def _set_version(conn: Connection, version: int) -> None:
    conn.execute(schema_version.delete())
    conn.execute(schema_version.insert().values(version=version))


def migrate(engine: Engine, target: int = LATEST_VERSION) -> tuple[int, int]:
    """Bring the database up to `target`, one version at a time; returns (before, after).
    It never moves a store down: a store at or above `target` is left as it is."""
    with _schema_lock(engine) as conn:
        before = current_version(conn)
        if before > LATEST_VERSION:
            raise SchemaError(
                f"the database has schema version {before}, newer than this Breakwater "
                f"({LATEST_VERSION}): upgrade Breakwater"
            )
        for version in range(before, target):
            MIGRATIONS[version](conn)
            _set_version(conn, version + 1)
            log.info("database schema upgraded to version %d", version + 1)
    return before, max(before, target)


# -- downgrades --------------------------------------------------------------------------------

SQLITE_DROP_COLUMN = (3, 35, 0)


def _from_v5(conn: Connection, force: bool) -> list[str]:
    """Drops the history's `flag` column. Version 4 takes every history row as plausible: a
    flagged static report could then win a vessel's merge, so flagged rows need `force`."""
    held = {
        table: conn.execute(text(f"SELECT count(*) FROM {table} WHERE flag IS NOT NULL")).scalar_one()
        for table in FLAGGED_TABLES
    }
    flagged = sum(held.values())
    if flagged and not force:
        counts = ", ".join(f"{table} {n}" for table, n in held.items() if n)
        raise SchemaError(
            f"{flagged} history row(s) are flagged implausible ({counts}) and version 4 has no flag, so a "
            "release of version 4 would take them as plausible: pass --force to keep them unflagged"
        )
    if conn.dialect.name == "sqlite" and sqlite3.sqlite_version_info < SQLITE_DROP_COLUMN:
        raise SchemaError(
            f"SQLite {sqlite3.sqlite_version} cannot drop a column (3.35 or later can): "
            "run the downgrade where Python has a newer SQLite; nothing was changed"
        )
    for table in FLAGGED_TABLES:
        conn.execute(text(f"DROP INDEX {table}_flagged"))
        conn.execute(text(f"ALTER TABLE {table} DROP COLUMN flag"))
    note = "dropped the flag column of positions, static_reports and other_messages"
    return [f"{note} ({flagged} flagged row(s) kept unflagged, --force)" if flagged else note]


def _from_v4(conn: Connection, force: bool) -> list[str]:
    """Drops `receptions`. Every report stays; what goes is which other receivers heard it,
    so a table with rows needs `force`."""
    held = conn.execute(select(func.count()).select_from(receptions)).scalar_one()
    if held and not force:
        raise SchemaError(
            f"receptions holds {held} row(s), which other receivers heard a stored report, and version 3 "
            "has no place for them: pass --force to drop them (every report stays)"
        )
    receptions.drop(conn)
    return [f"dropped receptions ({held} row(s))" if held else "dropped receptions (it was empty)"]


def _from_v3(conn: Connection, force: bool) -> list[str]:
    """Drops `breakwater_settings`. What it held (the admin token's digest) is recreated by
    the next ingest job of a release that knows version 3, from its BREAKWATER_ADMIN_TOKEN."""
    held = conn.execute(select(func.count()).select_from(deployment_settings)).scalar_one()
    deployment_settings.drop(conn)
    if not held:
        return ["dropped breakwater_settings (it was empty)"]
    return [
        "dropped breakwater_settings and the admin token's digest it held: a version-2 release "
        "checks the BREAKWATER_ADMIN_TOKEN of whoever runs an admin command, so set it there; "
        "after upgrading again, admin commands are refused until an ingest job started with "
        "BREAKWATER_ADMIN_TOKEN records the token again"
    ]


def _from_v2(conn: Connection, force: bool) -> list[str]:
    """Drops soft delete (`vessels.deleted_at`) and the box-query index. Version 1 has no
    soft delete: a soft-deleted vessel would be shown again, so that needs `force`."""
    hidden = conn.execute(
        select(func.count()).select_from(vessels).where(vessels.c.deleted_at.is_not(None))
    ).scalar_one()
    if hidden and not force:
        raise SchemaError(
            f"{hidden} vessel(s) are soft-deleted and version 1 has no soft delete, so they would "
            "be shown again: purge them (purge-deleted --yes) or bring them back "
            "(restore-vessel MMSI) first, or pass --force to show them again"
        )
    if conn.dialect.name == "sqlite" and sqlite3.sqlite_version_info < SQLITE_DROP_COLUMN:
        raise SchemaError(
            f"SQLite {sqlite3.sqlite_version} cannot drop a column (3.35 or later can): "
            "run the downgrade where Python has a newer SQLite; nothing was changed"
        )
    conn.execute(text("DROP INDEX latest_positions_lat_lon"))
    conn.execute(text("ALTER TABLE vessels DROP COLUMN deleted_at"))
    notes = ["dropped vessels.deleted_at and the index latest_positions_lat_lon"]
    if hidden:
        notes.append(f"{hidden} soft-deleted vessel(s) are shown again (--force)")
    return notes


# DOWNGRADES[v] takes a store from version v to v - 1 and says what the operator should know.
# Version 1 is the first schema: there is nothing to go back to from it.
DOWNGRADES: dict[int, Callable[[Connection, bool], list[str]]] = {5: _from_v5, 4: _from_v4, 3: _from_v3, 2: _from_v2}


@dataclass(frozen=True)
class Downgrade:
    before: int
    after: int
    notes: tuple[str, ...]


def downgrade(engine: Engine, target: int, *, force: bool = False) -> Downgrade:
    """Take the store down to `target` (1 to LATEST_VERSION), one version at a time, in one
    transaction under the lock `migrate` takes: all steps happen or none. History rows
    (`positions`, `static_reports`, `other_messages`) are never touched. Refuses (SchemaError)
    a store newer than this release, one older than `target`, and a step that would lose data
    the operator has not chosen to lose (soft-deleted vessels, unless `force`)."""
    if not 1 <= target <= LATEST_VERSION:
        raise ValueError(f"schema version {target}: choose 1 to {LATEST_VERSION}")
    with _schema_lock(engine) as conn:
        before = current_version(conn)
        if before > LATEST_VERSION:
            raise SchemaError(
                f"the store has schema version {before}, newer than this Breakwater ({LATEST_VERSION}): "
                "downgrade it with the release that upgraded it"
            )
        if before < target:
            raise SchemaError(
                f"the store has schema version {before}, older than {target}: a downgrade only goes "
                "down (an ingest job upgrades the store when it starts)"
            )
        notes: list[str] = []
        for version in range(before, target, -1):
            notes += DOWNGRADES[version](conn, force)
            _set_version(conn, version - 1)
            log.info("database schema downgraded to version %d", version - 1)
    return Downgrade(before, target, tuple(notes))
