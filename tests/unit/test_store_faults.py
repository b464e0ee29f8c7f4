"""The store error taxonomy: "is this the store or the record", decided by exception class and
SQLSTATE / reply code, for errors built the way the clients build them (redis-py's reply
parser and pipeline annotation, psycopg's SQLSTATE classes and its NUL check, SQLAlchemy's
wrapper, sqlite3 itself). And the writer's isolation of poison, which passes the gate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg.adapt import PyFormat, Transformer
from redis._parsers.base import BaseParser
from redis.client import Pipeline
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, BreakerState, CircuitBreaker
from breakwater.dead_letters import DEAD, WAITING, DeadLetterConfig, DeadLetterQueue
from breakwater.errors import PoisonRecord, StoreUnavailable
from breakwater.gate import SinkGate
from breakwater.reports import ReportBatch
from breakwater.stores.base import WriteResult
from breakwater.stores.faults import classify_redis_error, classify_sql_error, redis_reply_code
from breakwater.writer import ShardWriter
from tests.unit.fakes import Clock, MemorySink, batch_of, position

RECORD, STORE = "record", "store"


def reply(line: str) -> redis.RedisError:
    """A Redis error reply as redis-py's parser turns it into an exception."""
    error = BaseParser.parse_error(line)
    assert isinstance(error, redis.RedisError)
    return error


def in_pipeline(line: str) -> redis.RedisError:
    """The same reply, raised by `Pipeline.execute` (which rewrites the message)."""
    error = reply(line)
    Pipeline.annotate_exception(None, error, 1, ("EVALSHA", "9c1a2b", "3", "p:{bw1}:geo", "[[\"p\",257]]"))  # type: ignore[arg-type]
    return error


REDIS_CASES: list[tuple[str, redis.RedisError, str]] = [
    ("oom", reply("OOM command not allowed when used memory > 'maxmemory'."), STORE),
    ("oom-in-pipeline", in_pipeline("OOM command not allowed when used memory > 'maxmemory'."), STORE),
    ("readonly-replica", in_pipeline("READONLY You can't write against a read only replica."), STORE),
    ("loading", reply("LOADING Redis is loading the dataset in memory"), STORE),
    ("noscript", in_pipeline("NOSCRIPT No matching script. Please use EVAL."), STORE),
    ("noperm", reply("NOPERM User bw has no permissions to run the 'evalsha' command"), STORE),
    ("clusterdown", reply("CLUSTERDOWN The cluster is down"), STORE),
    ("masterdown", reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), STORE),
    ("tryagain", reply("TRYAGAIN Multiple keys request during rehashing of slot"), STORE),
    ("moved", reply("MOVED 3999 127.0.0.1:6381"), STORE),
    ("ask", reply("ASK 3999 127.0.0.1:6381"), STORE),
    ("crossslot", reply("CROSSSLOT Keys in request don't hash to the same slot"), STORE),
    ("misconf-in-pipeline", in_pipeline("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."), STORE),  # noqa: E501
    ("busy-script", in_pipeline("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."), STORE),  # noqa: E501
    ("noreplicas", reply("NOREPLICAS Not enough good replicas to write."), STORE),
    ("max-clients", reply("ERR max number of clients reached"), STORE),
    ("connection-refused", redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused."), STORE),
    ("reply-timeout", redis.TimeoutError("Timeout reading from socket"), STORE),
    ("socket-error", ConnectionResetError(104, "Connection reset by peer"), STORE),  # type: ignore[list-item]
    ("geo-out-of-range", in_pipeline("ERR invalid longitude,latitude pair 154.200000,87.065000 script: 9c1a2b, on @user_script:40."), RECORD),  # noqa: E501
    ("not-a-float", reply("ERR value is not a valid float"), RECORD),
    ("wrongtype", in_pipeline("WRONGTYPE Operation against a key holding the wrong kind of value"), RECORD),
    ("unencodable-argument", redis.DataError("Invalid input of type: 'NoneType'. Convert to a bytes, string, int or float first."), RECORD),  # noqa: E501
]


@pytest.mark.parametrize(("error", "expected"), [c[1:] for c in REDIS_CASES], ids=[c[0] for c in REDIS_CASES])
def test_redis_errors_are_the_store_or_the_record(error: BaseException, expected: str) -> None:
    classified = classify_redis_error("redis", error)
    assert isinstance(classified, PoisonRecord if expected == RECORD else StoreUnavailable)
    assert classified.transient is (expected == STORE)
    assert classified.sink == "redis"


def test_the_reply_code_survives_the_pipeline_annotation() -> None:
    assert redis_reply_code(in_pipeline("MISCONF Redis is configured to save RDB snapshots")) == "MISCONF"
    assert redis_reply_code(in_pipeline("OOM command not allowed")) == "OOM"
    assert redis_reply_code(reply("BUSY Redis is busy running a script.")) == "BUSY"
    assert redis_reply_code(redis.ConnectionError("refused")) is None
    message = str(classify_redis_error("redis", in_pipeline("OOM command not allowed")))
    assert message.startswith("redis: OutOfMemoryError [OOM]: Command # 1 (EVALSHA")


def sqlstate_error(sqlstate: str, message: str = "refused") -> psycopg.Error:
    """A server error as psycopg raises it: the class registered for the SQLSTATE."""
    error = psycopg.errors.lookup(sqlstate)(message)
    assert error.sqlstate == sqlstate
    return error


def wrapped(error: Exception) -> DBAPIError:
    """The same error as SQLAlchemy raises it from `conn.execute`."""
    return DBAPIError.instance("INSERT INTO positions ...", None, error, psycopg.Error)


def nul_in_text() -> psycopg.DataError:
    """psycopg's own refusal of a NUL byte in a text value: a DataError without a SQLSTATE."""
    try:
        Transformer().get_dumper("x", PyFormat.TEXT).dump("ab\x00c")
    except psycopg.DataError as e:
        assert e.sqlstate is None
        return e
    raise AssertionError("psycopg accepted a NUL byte")


def sqlite_error(statement: str) -> SQLAlchemyError:
    """An error SQLite itself raises, through SQLAlchemy's wrapper."""
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
            conn.execute(text(statement))
    except SQLAlchemyError as e:
        return e
    finally:
        engine.dispose()
    raise AssertionError(f"SQLite accepted {statement}")


SQL_CASES: list[tuple[str, BaseException, str]] = [
    ("22001-string-too-long", sqlstate_error("22001"), RECORD),
    ("22003-numeric-out-of-range", wrapped(sqlstate_error("22003")), RECORD),
    ("22021-bad-encoding", sqlstate_error("22021"), RECORD),
    ("22P05-untranslatable", sqlstate_error("22P05"), RECORD),
    ("23505-unique", wrapped(sqlstate_error("23505")), RECORD),
    ("23514-check", sqlstate_error("23514"), RECORD),
    ("nul-in-text-no-sqlstate", nul_in_text(), RECORD),
    ("nul-in-text-wrapped", wrapped(nul_in_text()), RECORD),
    ("42501-insufficient-privilege", sqlstate_error("42501"), STORE),
    ("42501-wrapped", wrapped(sqlstate_error("42501")), STORE),
    ("42P01-undefined-table", wrapped(sqlstate_error("42P01")), STORE),
    ("42703-undefined-column", sqlstate_error("42703"), STORE),
    ("25006-read-only-transaction", sqlstate_error("25006"), STORE),
    ("57P01-admin-shutdown", sqlstate_error("57P01"), STORE),
    ("57014-statement-timeout", sqlstate_error("57014"), STORE),
    ("55P03-lock-not-available", sqlstate_error("55P03"), STORE),
    ("40P01-deadlock", sqlstate_error("40P01"), STORE),
    ("40001-serialization", sqlstate_error("40001"), STORE),
    ("08006-connection-failure", wrapped(sqlstate_error("08006")), STORE),
    ("53100-disk-full", sqlstate_error("53100"), STORE),
    ("53300-too-many-connections", sqlstate_error("53300"), STORE),
    ("XX000-internal", sqlstate_error("XX000"), STORE),
    ("connection-lost-no-sqlstate", psycopg.OperationalError("consuming input failed: server closed the connection"), STORE),  # noqa: E501
    ("pool-timeout", PoolTimeout("QueuePool limit of size 5 overflow 0 reached"), STORE),
    ("socket-error", ConnectionRefusedError(111, "Connection refused"), STORE),
    ("sqlite-not-null", sqlite_error("INSERT INTO t (id, v) VALUES (1, NULL)"), RECORD),
    ("sqlite-no-such-table", sqlite_error("INSERT INTO missing VALUES (1)"), STORE),
]


@pytest.mark.parametrize(("error", "expected"), [c[1:] for c in SQL_CASES], ids=[c[0] for c in SQL_CASES])
def test_sql_errors_are_the_store_or_the_record(error: BaseException, expected: str) -> None:
    classified = classify_sql_error("db", error)
    assert isinstance(classified, PoisonRecord if expected == RECORD else StoreUnavailable)
    assert classified.transient is (expected == STORE)


def test_the_sqlite_cases_are_what_sqlite_raises() -> None:
    assert isinstance(sqlite_error("INSERT INTO t (id, v) VALUES (1, NULL)").orig, sqlite3.IntegrityError)  # type: ignore[attr-defined]
    assert isinstance(sqlite_error("INSERT INTO missing VALUES (1)").orig, sqlite3.OperationalError)  # type: ignore[attr-defined]


def test_a_sqlstate_is_named_in_the_message() -> None:
    message = str(classify_sql_error("db", wrapped(sqlstate_error("42501", "permission denied for table positions"))))
    assert message == "db: InsufficientPrivilege [42501]: (psycopg.errors.InsufficientPrivilege) permission denied for table positions"  # noqa: E501


class DyingSink(MemorySink):
    """Refuses the poison MMSIs; after `dies_after` calls, every call fails as a dead store."""

    def __init__(self, dies_after: int) -> None:
        super().__init__("db")
        self.dies_after = dies_after

    def write(self, batch: ReportBatch) -> WriteResult:
        if self.calls >= self.dies_after:
            self.down = True
        return super().write(batch)


def writer_for(sink: MemorySink, tmp_path: Path, clock: Clock) -> tuple[ShardWriter, CircuitBreaker, DeadLetterQueue]:
    breaker = CircuitBreaker("db", BreakerConfig(failure_threshold=1), clock=clock)
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"), clock=clock)
    writer = ShardWriter([sink], {"db": SinkGate(breaker, clock=clock)}, queue, job_id="job-1", clock=clock)
    return writer, breaker, queue


def test_a_store_that_dies_while_poison_is_isolated_trips_the_breaker_and_the_rest_waits(tmp_path: Path) -> None:
    clock = Clock()
    sink = DyingSink(dies_after=2)  # the batch (poison), its first half; then the store is gone
    sink.poison = {257000003}
    writer, breaker, queue = writer_for(sink, tmp_path, clock)
    rows = [position(257000000 + i, 1000 + i, i) for i in range(64)]
    report = writer.write(batch_of(rows), "b1")
    assert sink.calls == 3  # the batch, one half, then one failed call: no call per piece after
    assert breaker.state == BreakerState.OPEN
    written = report.counts[acc.sink("db", acc.OUTCOME_WRITTEN)]
    assert written == len(sink.rows) == 32  # the half without the poison row
    assert report.counts[acc.sink("db", acc.OUTCOME_DLQ)] == 32
    assert len(queue.peek(100, status=WAITING)) == 32  # all of it waits, the poison row too
    assert queue.peek(100, status=DEAD) == []
    assert queue.stats().by_error == {"StoreUnavailable": 32}


def test_an_open_breaker_met_during_isolation_diverts_the_rest_without_a_call(tmp_path: Path) -> None:
    clock = Clock()
    sink = MemorySink("db")
    sink.poison = {257000003}
    writer, breaker, queue = writer_for(sink, tmp_path, clock)
    rows = [position(257000000 + i, 1000 + i, i) for i in range(8)]
    original = sink.write

    def write_then_trip(batch: ReportBatch) -> WriteResult:
        if sink.calls == 0:  # the batch itself: then another writer sees the store die
            breaker.force(BreakerState.OPEN, "another writer saw the store die")
            clock.advance(1)
        return original(batch)

    sink.write = write_then_trip  # type: ignore[method-assign]
    writer.gates["db"].view_ttl_s = 0.5  # the forced state reaches this writer at its next decision
    report = writer.write(batch_of(rows), "b1")
    assert sink.calls == 1
    assert report.counts[acc.sink("db", acc.OUTCOME_DLQ)] == 8
    assert queue.stats().by_error == {"BreakerOpen": 8}
    assert queue.peek(100, status=DEAD) == []


def test_poison_alone_is_dead_and_the_breaker_stays_closed(tmp_path: Path) -> None:
    sink = MemorySink("db")
    sink.poison = {257000003, 257000040}
    writer, breaker, queue = writer_for(sink, tmp_path, Clock())
    rows = [position(257000000 + i, 1000 + i, i) for i in range(64)]
    report = writer.write(batch_of(rows), "b1")
    assert report.counts[acc.sink("db", acc.OUTCOME_WRITTEN)] == 62
    assert sorted(x.row[0] for x in queue.peek(100, status=DEAD)) == [257000003, 257000040]
    assert breaker.state == BreakerState.CLOSED
