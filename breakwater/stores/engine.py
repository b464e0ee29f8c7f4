"""Opening a SQL database from a URL: SQLite for the embedded default, PostgreSQL for production.

SQLite is tuned for several writer processes sharing one file: WAL (readers never block the
writer), a long busy timeout, and BEGIN IMMEDIATE, which takes the write lock when a
transaction starts instead of upgrading to it half-way, the cause of most "database is
locked" errors. PostgreSQL goes through psycopg 3 with connect and statement timeouts, so a
dead or hung server fails a call in bounded time and the breaker can see it.
"""

from __future__ import annotations

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


def make_engine(url: str, *, timeout_s: float = 10.0, pool_size: int = 2) -> Engine:
    url = validate_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, timeout_s)
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


def _sqlite_engine(url: str, timeout_s: float) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # Several writers wait for each other's commits: give them far longer than a call.
    busy_ms = int(max(timeout_s, 60.0) * 1000)
    engine = create_engine(url, connect_args={"timeout": busy_ms / 1000, "check_same_thread": False})

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
        cause = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(DATABASE_SETTING, f"cannot use {mask_url(url)}: {redact(cause, url)}") from e
    finally:
        engine.dispose()
