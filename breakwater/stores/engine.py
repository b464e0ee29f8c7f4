"""Opening a SQL database from a URL: SQLite for the embedded default, PostgreSQL for production.

SQLite is tuned for several writer processes sharing one file: WAL (readers never block the
writer), a long busy timeout, and BEGIN IMMEDIATE, which takes the write lock when a
transaction starts instead of upgrading to it half-way, the cause of most "database is
locked" errors. PostgreSQL goes through psycopg 3 with connect and statement timeouts, so a
dead or hung server fails a call in bounded time and the breaker can see it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from breakwater.errors import ConfigError
from breakwater.stores.base import mask_url, redact

DATABASE_SETTING = "BREAKWATER_DATABASE_URL (--database-url)"


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3; SQLite stays as it is."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def validate_url(url: str) -> str:
    """The normalized URL, or ConfigError naming the setting."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(DATABASE_SETTING, f"not a database URL: {mask_url(url)}") from e
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            DATABASE_SETTING,
            f"unsupported database {parsed.get_backend_name()!r} in {mask_url(url)}; "
            "use sqlite:///path or postgresql://user@host/db",
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise ConfigError(DATABASE_SETTING, "PostgreSQL is reached through psycopg 3: use postgresql://")
    return url


def make_engine(url: str, *, timeout_s: float = 10.0, pool_size: int = 2, create: bool = True) -> Engine:
    """An engine for `url`. With `create=False` a SQLite file that does not exist is an error
    when the engine connects, never a new empty database (queries use this)."""
    url = validate_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, timeout_s, create)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=True,
        pool_timeout=timeout_s,
        connect_args={
            "connect_timeout": max(1, int(timeout_s)),
            "options": f"-c statement_timeout={int(timeout_s * 1000)}",
            "application_name": "breakwater",
        },
    )


def _sqlite_engine(url: str, timeout_s: float, create: bool) -> Engine:
    database = make_url(url).database
    path = Path(database).expanduser() if database and database != ":memory:" else None
    # Several writers wait for each other's commits: give them far longer than a call.
    busy_ms = int(max(timeout_s, 60.0) * 1000)
    connect_args: dict[str, Any] = {"timeout": busy_ms / 1000, "check_same_thread": False}
    options: dict[str, Any] = {"connect_args": connect_args}
    if path is not None and create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif path is not None:
        # mode=rw: read and write an existing file, fail rather than create one.
        uri = f"{path.absolute().as_uri()}?mode=rw"
        options = {"creator": lambda: sqlite3.connect(uri, uri=True, **connect_args)}
    engine = create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below start transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def check_database(url: str, *, timeout_s: float) -> None:
    """Connect, then create or upgrade the schema; ConfigError naming the setting if it fails."""
    from sqlalchemy.exc import SQLAlchemyError

    from breakwater.stores.schema import migrate

    engine = make_engine(url, timeout_s=timeout_s)
    try:
        migrate(engine)
    except SQLAlchemyError as e:
        raise cannot_use(url, e) from e
    finally:
        engine.dispose()


def driver_reason(url: str, error: Exception) -> str:
    """The driver's own reason for `error` (under SQLAlchemy's wrapper), its first line, with
    the URL's secrets removed."""
    cause = str(getattr(error, "orig", error)).strip()
    cause = cause.splitlines()[0] if cause else type(error).__name__
    return redact(cause, url)


def cannot_use(url: str, error: Exception) -> ConfigError:
    """The one line that names the setting and the driver's own reason."""
    return ConfigError(DATABASE_SETTING, f"cannot use {mask_url(url)}: {driver_reason(url, error)}")


def store_version(engine: Engine, url: str) -> int:
    """The schema version of an existing Breakwater store, or ConfigError naming the setting
    (no such SQLite file, a database that does not answer, one without Breakwater's schema).
    Nothing is created."""
    from sqlalchemy.exc import SQLAlchemyError

    from breakwater.stores.schema import current_version

    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        path = Path(database).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(
                DATABASE_SETTING,
                f"there is no Breakwater store at {path}: run an ingest job first, or point --database-url at one",
            )
    try:
        with engine.connect() as conn:
            version = current_version(conn)
    except SQLAlchemyError as e:
        raise cannot_use(url, e) from e
    if version == 0:
        raise ConfigError(
            DATABASE_SETTING,
            f"{mask_url(url)} is not a Breakwater store (it has no breakwater_schema table): "
            "run an ingest job first, or point --database-url at one",
        )
    return version


def check_store(engine: Engine, url: str) -> None:
    """For queries: the database answers and holds Breakwater's schema at this version, or
    ConfigError naming the setting. Nothing is created or upgraded: that is the ingest job's."""
    from breakwater.stores.schema import LATEST_VERSION

    version = store_version(engine, url)
    if version < LATEST_VERSION:  # a newer schema only adds: this release reads it as it is
        raise ConfigError(
            DATABASE_SETTING,
            f"{mask_url(url)} has schema version {version}, older than this Breakwater's "
            f"{LATEST_VERSION}: run an ingest job with this release to upgrade it",
        )
