"""Is this error the store or the record? One answer per store, by exception class and code.

A sink raises `PoisonRecord` when the store refuses the data itself: the record goes to the
dead-letter store and the breaker is untouched. Everything else is `StoreUnavailable`: the
batch waits in the dead-letter queue and the failure counts against the sink's breaker. The
record side is an explicit allowlist, so an error nobody thought of makes records wait (and
an operator look), never makes them dead:

- PostgreSQL: SQLSTATE classes 22 (data exception) and 23 (integrity constraint), and a
  psycopg `DataError` raised before the server saw the row (a NUL byte in a text field has no
  SQLSTATE). Class 42 (undefined table, insufficient privilege), 25006 (read-only
  transaction), 08 (connection), 53 (resources), 57 (operator intervention: admin shutdown,
  statement timeout), 55P03 (lock not available), 40 (deadlock, serialization) and every
  other class mean the store cannot take writes now.
- SQLite: `sqlite3.IntegrityError` and `sqlite3.DataError`; an `OperationalError` (locked,
  read-only, no such table, disk full) is the store.
- Redis: a plain reply error whose code is `ERR` or `WRONGTYPE` (the arguments or the key's
  type are wrong: an invalid longitude/latitude pair, a value that is not a number), and
  redis-py's `DataError` (an argument it cannot encode). Every typed reply (OOM, READONLY,
  LOADING, NOSCRIPT, NOPERM, CLUSTERDOWN, MASTERDOWN, TRYAGAIN, MOVED, ASK, CROSSSLOT) and
  every other code (MISCONF, BUSY, NOREPLICAS ...) is the store.
"""

from __future__ import annotations

import sqlite3

import psycopg
import redis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from breakwater.errors import PoisonRecord, StoreError, StoreUnavailable

# SQLSTATE classes that mean "this row", not "this server" (PostgreSQL appendix A).
RECORD_SQLSTATE_CLASSES = frozenset({"22", "23"})
# Reply codes of an untyped redis.ResponseError that mean "these arguments".
RECORD_REPLY_CODES = frozenset({"ERR", "WRONGTYPE"})
# redis-py's pipeline rewrites an error's message as "Command # N (...) of pipeline caused
# error: <reply>"; the reply, with its code first, follows this marker.
_PIPELINE_MARKER = " of pipeline caused error: "


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0][:300] if text else type(error).__name__


def driver_error(error: BaseException) -> BaseException:
    """The DB-API driver's exception under SQLAlchemy's wrapper (the COPY path raises it raw)."""
    if isinstance(error, DBAPIError) and isinstance(error.orig, BaseException):
        return error.orig
    return error


def sql_error_is_record(error: BaseException) -> bool:
    """Whether the store refused the data (True) rather than being unable to write (False)."""
    cause = driver_error(error)
    if isinstance(cause, psycopg.Error):
        sqlstate = cause.sqlstate
        if sqlstate is None:
            # Raised by psycopg while adapting a value, before the server saw it: a NUL in a
            # text field, an integer too large for its column.
            return isinstance(cause, psycopg.DataError)
        return sqlstate[:2] in RECORD_SQLSTATE_CLASSES
    return isinstance(cause, sqlite3.IntegrityError | sqlite3.DataError)


def classify_sql_error(sink: str, error: BaseException) -> StoreError:
    """The error of a SQL write as `PoisonRecord` (the row) or `StoreUnavailable` (the store)."""
    message = _first_line(error)
    cause = driver_error(error)
    sqlstate = getattr(cause, "sqlstate", None)
    described = f"{type(cause).__name__} [{sqlstate}]: {message}" if sqlstate else f"{type(cause).__name__}: {message}"
    if sql_error_is_record(error):
        return PoisonRecord(sink, described)
    if isinstance(error, PoolTimeout):
        return StoreUnavailable(sink, f"no connection within the timeout: {message}")
    return StoreUnavailable(sink, described)


def redis_reply_code(error: BaseException) -> str | None:
    """The code a Redis reply error starts with (OOM, MISCONF, ERR ...), or None when the
    error is not a reply from the server. redis-py keeps the code in `status_code` for the
    codes it maps to a class and leaves it at the head of the message for the others."""
    if not isinstance(error, redis.ResponseError):
        return None
    code = getattr(error, "status_code", None)
    if code:
        return str(code)
    reply = str(error.args[0]) if error.args else ""
    if _PIPELINE_MARKER in reply:
        reply = reply.rpartition(_PIPELINE_MARKER)[2]
    head = reply.split(" ", 1)[0]
    return head if head.isupper() else None


def redis_error_is_record(error: BaseException) -> bool:
    """Whether Redis refused the arguments (True) rather than being unable to write (False)."""
    if isinstance(error, redis.DataError):
        return True
    # Exactly ResponseError: its subclasses are the typed store-level replies.
    return type(error) is redis.ResponseError and redis_reply_code(error) in RECORD_REPLY_CODES


def classify_redis_error(sink: str, error: BaseException) -> StoreError:
    """The error of a Redis write as `PoisonRecord` (the arguments) or `StoreUnavailable`."""
    message = _first_line(error)
    if redis_error_is_record(error):
        return PoisonRecord(sink, message)
    code = redis_reply_code(error)
    return StoreUnavailable(sink, f"{type(error).__name__}{f' [{code}]' if code else ''}: {message}")
