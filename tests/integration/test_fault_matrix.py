"""The fault matrix: faults real stores produce every day, against real servers, one case each.

Every case asserts the same things (`assert_fault_handled`):
- conservation is exact: the job summary is ok and every record a sink received is written,
  a duplicate, or in the dead-letter queue;
- a store-level fault makes records wait (never dead) and opens the sink's breaker; a bad
  record goes dead alone and leaves the breaker closed;
- once the store is healthy again, `retry_dlq --force` empties the queue and both stores
  equal a run of the same capture without the fault (`Snapshot`: history rows and each
  vessel's latest report, by digest).

Redis faults run on private `redis-server` processes this file starts and stops (never on the
shared 6379); PostgreSQL faults on a fresh database per test, through per-database settings, a
role of the test's own, locks and DDL on that database only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray
import redis
import redis.cluster
from sqlalchemy import create_engine, select

from breakwater.stores import schema
from breakwater.stores.redis import RedisKeys
from breakwater.writer import suspect_lane_message
from tests.conftest import PG_ADMIN_URL, read_lines
from tests.integration.conftest import Job
from tests.integration.test_resilience import FAST_SETTINGS, Feed, Running, drain_until_empty, processed, wait_until
from tests.integration.test_stores import redis_cluster  # noqa: F401  (the fixture)

KYSTVERKET_BATCH = ("--batch-lines", "50")  # 20 batches: enough calls for a breaker to open
AMSA_BATCH = ("--batch-lines", "1000")
RUN = (*FAST_SETTINGS, "--set", "flush_interval_ms=100", "--no-scheduler")


# -- private Redis servers -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own on a free loopback port: faults may reconfigure it."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), *options, "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)
        wait_until(self._answers, 30, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            assert self.process.poll() is None, f"redis-server on port {self.port} exited"
            return False

    def stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.config_set("save", "")  # a failing snapshot must not hold up its exit
        self.client.close()
        self.process.terminate()  # our own child, by its handle
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], PrivateRedis]]:
    started: list[PrivateRedis] = []

    def start() -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- what the stores hold --------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What a run left in the stores, comparable across runs and across SQLite/PostgreSQL:
    history rows by (mmsi, digest), and every vessel's latest report by digest."""

    positions: Counter[tuple[int, int]]
    statics: Counter[tuple[int, int]]
    latest: dict[int, int]
    redis_latest: dict[int, tuple[str, str, str]] | None


def sql_snapshot(database_url: str) -> tuple[Counter[tuple[int, int]], Counter[tuple[int, int]], dict[int, int]]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        positions = Counter(
            (r[0], r[1]) for r in conn.execute(select(schema.positions.c.mmsi, schema.positions.c.digest))
        )
        statics = Counter(
            (r[0], r[1]) for r in conn.execute(select(schema.static_reports.c.mmsi, schema.static_reports.c.digest))
        )
        lp = schema.latest_positions
        latest = {r[0]: r[1] for r in conn.execute(select(lp.c.mmsi, lp.c.digest))}
    engine.dispose()
    return positions, statics, latest


def redis_snapshot(url: str) -> dict[int, tuple[str, str, str]]:
    from breakwater.stores.redis import connect

    client = connect(url)  # scans every primary of a cluster
    states = {}
    for key in client.scan_iter(RedisKeys("").pattern(), count=1000):
        data = client.hgetall(key)
        if "pos_ms" in data:
            states[int(data["mmsi"])] = (data["pos_digest"], data.get("lat", ""), data.get("lon", ""))
    client.close()
    return states


def snapshot(database_url: str, redis_url: str | None) -> Snapshot:
    positions, statics, latest = sql_snapshot(database_url)
    return Snapshot(positions, statics, latest, None if redis_url is None else redis_snapshot(redis_url))


_BASELINES: dict[str, Snapshot] = {}


@pytest.fixture
def baseline(
    make_job: Any, tmp_path: Path, private_redis: Callable[[], PrivateRedis]
) -> Callable[[Path, tuple[str, ...]], Snapshot]:
    """The stores after a run without any fault (SQLite and a private Redis), once per capture."""

    def of(capture: Path, batch: tuple[str, ...]) -> Snapshot:
        if capture.name not in _BASELINES:
            url = f"sqlite:///{tmp_path / f'baseline-{capture.stem}.sqlite3'}"
            server = private_redis()
            job = make_job(url, server.url, "")
            summary = job.ingest(capture, extra=(*RUN, *batch))
            assert summary["ok"] and all(s["dead_letter_queue"] == 0 for s in summary["sinks"].values())
            _BASELINES[capture.name] = snapshot(url, server.url)
        return _BASELINES[capture.name]

    return of


# -- what every case asserts -----------------------------------------------------------------


def breaker_trips(job: Job, sink: str) -> int:
    status = ray.get(ray.get_actor(f"breaker-{sink}", namespace=job.namespace).status.remote())
    return int(status["trips"])


def assert_store_fault(job: Job, summary: dict[str, Any], sink: str) -> int:
    """A store-level fault: exact books, everything that failed waits, the breaker opened."""
    assert summary["ok"], summary["errors"]
    s = summary["sinks"][sink]
    assert s["received"] == s["written"] + s["duplicates"] + s["dead_letter_queue"]
    assert s["dead_letter_queue"] > 0, f"the {sink} fault sent nothing to the dead-letter queue"
    assert s["dlq_waiting"] == s["dead_letter_queue"]
    assert s["dlq_dead"] == 0
    assert breaker_trips(job, sink) >= 1
    for other, o in summary["sinks"].items():
        if other != sink:
            assert o["dead_letter_queue"] == 0, f"a {sink} fault reached {other}"
    return int(s["dead_letter_queue"])


def assert_recovered(job: Job, summary: dict[str, Any], sink: str, expected: Snapshot) -> None:
    """After the fault is gone, the retry job writes everything, and the stores equal a run
    without the fault."""

    drain_until_empty(job)
    queue = job.queue()
    tally = queue.job_tally(summary["job_id"])[sink]
    queue.close()
    assert tally.waiting == tally.dead == 0
    assert tally.retried_written + tally.retried_duplicates == summary["sinks"][sink]["dead_letter_queue"]
    assert_stores_equal(snapshot(job.database_url, job.redis_url), expected)


def assert_stores_equal(actual: Snapshot, expected: Snapshot) -> None:
    assert actual.positions == expected.positions
    assert actual.statics == expected.statics
    assert actual.latest == expected.latest
    if actual.redis_latest is not None:
        assert actual.redis_latest == expected.redis_latest


# -- Redis -----------------------------------------------------------------------------------


def redis_case(
    make_job: Any, sqlite_url: str, server: PrivateRedis, capture: Path, batch: tuple[str, ...]
) -> tuple[Job, dict[str, Any]]:
    job = make_job(sqlite_url, server.url, "")
    return job, job.ingest(capture, extra=(*RUN, *batch))


def test_redis_out_of_memory_waits_and_opens_the_breaker(
    make_job: Any, sqlite_url: str, private_redis: Callable[[], PrivateRedis], amsa_path: Path, baseline: Any
) -> None:
    """The issue's reproduction: maxmemory 1mb, noeviction, the AMSA capture. OOM replies are
    the store: the breaker opens, nothing is dead, no batch is halved into single rows."""
    expected = baseline(amsa_path, AMSA_BATCH)
    server = private_redis()
    server.client.config_set("maxmemory-policy", "noeviction")
    server.client.config_set("maxmemory", "1mb")
    job, summary = redis_case(make_job, sqlite_url, server, amsa_path, AMSA_BATCH)
    assert_store_fault(job, summary, "redis")
    server.client.config_set("maxmemory", "0")
    assert_recovered(job, summary, "redis", expected)


def test_redis_readonly_replica_waits_and_opens_the_breaker(
    make_job: Any, sqlite_url: str, private_redis: Callable[[], PrivateRedis], kystverket_path: Path, baseline: Any
) -> None:
    """A failover left the client on a replica: READONLY replies."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    primary, server = private_redis(), private_redis()
    server.client.replicaof("127.0.0.1", primary.port)
    wait_until(lambda: server.client.info("replication")["master_link_status"] == "up", 30, "the replica to sync")
    job, summary = redis_case(make_job, sqlite_url, server, kystverket_path, KYSTVERKET_BATCH)
    assert_store_fault(job, summary, "redis")
    server.client.replicaof("NO", "ONE")
    assert_recovered(job, summary, "redis", expected)


def ingest_with_fault_mid_run(job: Job, capture: Path, fault: Callable[[], None]) -> dict[str, Any]:
    """Stream the capture; once a quarter of it is written, bring the fault on for the rest."""
    feed = Feed(read_lines(capture))
    running = Running(job, feed.url, (*RUN, *KYSTVERKET_BATCH))
    feed.send(0.25)
    wait_until(lambda: processed(job) >= 200, 60, "200 messages processed")
    fault()
    feed.close()
    return running.join()


def test_redis_misconf_waits_and_opens_the_breaker(
    make_job: Any, sqlite_url: str, private_redis: Callable[[], PrivateRedis], kystverket_path: Path, baseline: Any
) -> None:
    """A snapshot that could not be saved: MISCONF refuses writes until one succeeds. (Mid-run:
    at start-up the job's own check refuses such a Redis as a configuration error.)"""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    server = private_redis()

    def fail_a_snapshot() -> None:
        server.client.config_set("stop-writes-on-bgsave-error", "yes")
        server.client.config_set("save", "3600 1")  # writes are refused only where snapshots are on
        server.dir.rmdir()  # its working directory (empty: nothing saved yet)
        server.client.bgsave()
        wait_until(lambda: server.client.info("persistence")["rdb_last_bgsave_status"] == "err", 30, "failed BGSAVE")

    job = make_job(sqlite_url, server.url, "")
    summary = ingest_with_fault_mid_run(job, kystverket_path, fail_a_snapshot)
    assert_store_fault(job, summary, "redis")
    # The operator's way out while the disk is fixed (the process's deleted working directory
    # cannot come back): stop refusing writes.
    server.client.config_set("stop-writes-on-bgsave-error", "no")
    assert_recovered(job, summary, "redis", expected)


def test_redis_busy_with_a_long_script_waits_and_opens_the_breaker(
    make_job: Any, sqlite_url: str, private_redis: Callable[[], PrivateRedis], kystverket_path: Path, baseline: Any
) -> None:
    """Another client's script runs past busy-reply-threshold: every other call gets BUSY until
    an operator's SCRIPT KILL."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    server = private_redis()
    server.client.config_set("busy-reply-threshold", "100")
    spinning: dict[str, BaseException] = {}

    def spin() -> None:
        hog = redis.Redis.from_url(server.url, socket_timeout=120)
        try:
            hog.eval("while true do end", 0)
        except redis.ResponseError as e:  # the SCRIPT KILL below ends it
            spinning["ended"] = e
        hog.close()

    thread = threading.Thread(target=spin, daemon=True)

    def busy() -> None:
        thread.start()
        probe = redis.Redis.from_url(server.url, socket_timeout=5)
        wait_until(lambda: _busy(probe), 30, "Redis to answer BUSY")
        probe.close()

    job = make_job(sqlite_url, server.url, "")
    summary = ingest_with_fault_mid_run(job, kystverket_path, busy)
    assert_store_fault(job, summary, "redis")
    server.client.script_kill()
    thread.join(timeout=30)
    assert "ended" in spinning
    assert_recovered(job, summary, "redis", expected)


def _busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.ResponseError as e:
        from breakwater.stores.faults import redis_reply_code

        return redis_reply_code(e) == "BUSY"
    return False


def test_redis_client_pause_times_out_waits_and_opens_the_breaker(
    make_job: Any, sqlite_url: str, private_redis: Callable[[], PrivateRedis], kystverket_path: Path, baseline: Any
) -> None:
    """CLIENT PAUSE WRITE (as during a manual failover): writes hang, the reply timeout makes
    them failures."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    server = private_redis()
    job = make_job(sqlite_url, server.url, "")
    summary = ingest_with_fault_mid_run(job, kystverket_path, lambda: server.client.client_pause(120_000, all=False))
    assert_store_fault(job, summary, "redis")
    server.client.client_unpause()
    assert_recovered(job, summary, "redis", expected)


def test_redis_cluster_losing_a_primary_waits_and_opens_the_breaker(
    make_job: Any,
    sqlite_url: str,
    redis_cluster: str,  # noqa: F811
    kystverket_path: Path,
    baseline: Any,
) -> None:
    """One primary of a three-shard Redis Cluster dies mid-run (connection refused, then
    CLUSTERDOWN once the others mark it failed); it comes back with its own nodes.conf."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    nodes = redis.cluster.RedisCluster.from_url(redis_cluster.partition("?")[0], decode_responses=True)
    victim = nodes.get_primaries()[-1]
    victim_port = int(victim.port)
    folder = Path(sqlite_url.removeprefix("sqlite:///")).parent / f"redis-{victim_port}"  # the fixture's
    nodes.close()
    for primary in _cluster_ports_of(redis_cluster):
        redis.Redis(host="127.0.0.1", port=primary).config_set("cluster-node-timeout", "500")
    # What the victim acknowledged must survive its death (its own AOF), or no retry could
    # bring the stores level: Breakwater cannot know what a store lost after saying yes.
    victim_client = redis.Redis(host="127.0.0.1", port=victim_port, decode_responses=True)
    victim_client.config_set("appendfsync", "always")
    victim_client.config_set("appendonly", "yes")
    wait_until(lambda: victim_client.info("persistence")["aof_rewrite_in_progress"] == 0, 30, "the first AOF")
    victim_client.close()

    def kill_a_primary() -> None:
        os.kill(int((folder / "redis.pid").read_text()), signal.SIGKILL)

    job = make_job(sqlite_url, redis_cluster, "")
    summary = ingest_with_fault_mid_run(job, kystverket_path, kill_a_primary)
    assert_store_fault(job, summary, "redis")
    subprocess.run(
        ["redis-server", "--port", str(victim_port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "yes",
         "--pidfile", str(folder / "redis.pid")],
        check=True,
    )  # fmt: skip
    port = _cluster_ports_of(redis_cluster)[0]
    wait_until(lambda: _cluster_ok(port), 60, "the cluster to be whole again")
    assert_recovered(job, summary, "redis", expected)


def _cluster_ports_of(url: str) -> list[int]:
    nodes = redis.cluster.RedisCluster.from_url(url.partition("?")[0])
    ports = [int(n.port) for n in nodes.get_primaries()]
    nodes.close()
    return ports


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(host="127.0.0.1", port=port, decode_responses=True).execute_command("CLUSTER INFO")
    return bool(info.get("cluster_state") == "ok")


def test_redis_script_flush_mid_run_is_transparent(
    make_job: Any, sqlite_url: str, private_redis: Callable[[], PrivateRedis], kystverket_path: Path, baseline: Any
) -> None:
    """SCRIPT FLUSH (as a restart or failover does) mid-run: the script is loaded again and
    nothing fails."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    server = private_redis()
    job = make_job(sqlite_url, server.url, "")
    feed = Feed(read_lines(kystverket_path))
    running = Running(job, feed.url, (*RUN, *KYSTVERKET_BATCH))
    feed.send(0.3)
    wait_until(lambda: processed(job) >= 250, 60, "250 messages processed")
    assert server.client.script_flush() is True
    feed.close()
    summary = running.join()
    assert summary["ok"], summary["errors"]
    for s in summary["sinks"].values():
        assert s["dead_letter_queue"] == 0
        assert s["received"] == s["written"] + s["duplicates"]
    assert breaker_trips(job, "redis") == 0
    assert_stores_equal(snapshot(sqlite_url, server.url), expected)


# -- PostgreSQL ------------------------------------------------------------------------------


def pg(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def with_schema(postgres_url: str) -> str:
    from breakwater.stores.engine import check_database

    check_database(postgres_url, timeout_s=5)
    return postgres_url.rsplit("/", 1)[1]


def pg_case(make_job: Any, url: str, capture: Path) -> tuple[Job, dict[str, Any]]:
    job = make_job(url)
    return job, job.ingest(capture, extra=(*RUN, *KYSTVERKET_BATCH))


@pytest.fixture
def own_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A login role of this test's own, with every right on the test database's tables: the
    superuser the other tests use cannot be refused anything."""
    name = f"bw_role_{uuid.uuid4().hex[:10]}"
    database = with_schema(postgres_url)
    pg(postgres_url, f"CREATE ROLE {name} LOGIN")
    pg(
        postgres_url,
        f'GRANT ALL ON DATABASE "{database}" TO {name}',
        f"GRANT ALL ON SCHEMA public TO {name}",
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}",
        f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}",
    )
    yield name, postgres_url.replace("postgresql://postgres@", f"postgresql://{name}@")
    pg(postgres_url, f"DROP OWNED BY {name}")
    pg(postgres_url, f"DROP ROLE {name}")


def test_postgres_insert_revoked_waits_and_opens_the_breaker(
    make_job: Any, postgres_url: str, own_role: tuple[str, str], kystverket_path: Path, baseline: Any
) -> None:
    """42501 insufficient privilege: the store is unusable, not the record."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    role, url = own_role
    pg(postgres_url, f"REVOKE INSERT ON positions FROM {role}")
    job, summary = pg_case(make_job, url, kystverket_path)
    assert_store_fault(job, summary, "db")
    pg(postgres_url, f"GRANT INSERT ON positions TO {role}")
    assert_recovered(job, summary, "db", expected)


def test_postgres_read_only_database_waits_and_opens_the_breaker(
    make_job: Any, postgres_url: str, kystverket_path: Path, baseline: Any
) -> None:
    """25006: the database turns read-only mid-run (default_transaction_read_only, as on a
    standby); the job's sessions are ended so that new ones see it. (At start-up the job's
    own check refuses a read-only database as a configuration error.)"""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    database = with_schema(postgres_url)

    def read_only() -> None:
        pg(postgres_url, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        pg(postgres_url, *(f"SELECT pg_terminate_backend({pid})" for pid in _sessions(postgres_url, database)))

    job = make_job(postgres_url)
    summary = ingest_with_fault_mid_run(job, kystverket_path, read_only)
    assert_store_fault(job, summary, "db")
    queue = job.queue()
    reasons = {x.history[-1]["message"].partition("]")[0] for x in queue.peek(10_000)}
    queue.close()
    assert "db: ReadOnlySqlTransaction [25006" in reasons
    pg(PG_ADMIN_URL, f'ALTER DATABASE "{database}" RESET default_transaction_read_only')  # not read-only itself
    assert_recovered(job, summary, "db", expected)


def _sessions(admin_url: str, database: str) -> list[int]:
    """The other sessions on the database: the job's pooled connections."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def test_postgres_dropped_table_waits_and_opens_the_breaker(
    make_job: Any, postgres_url: str, kystverket_path: Path, baseline: Any
) -> None:
    """42P01 undefined table: someone dropped `positions`; the records wait for its restore."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    with_schema(postgres_url)
    pg(postgres_url, "DROP TABLE positions")
    job, summary = pg_case(make_job, postgres_url, kystverket_path)
    assert_store_fault(job, summary, "db")
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    schema.positions.create(engine)  # the restore
    engine.dispose()
    assert_recovered(job, summary, "db", expected)


class TableLock:
    """An ACCESS EXCLUSIVE lock on `positions`, held by the test until released: the job's
    inserts wait on it, as behind a long migration."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


@pytest.mark.parametrize(
    ("setting", "error", "sqlstate"),
    [("statement_timeout", "QueryCanceled", "57014"), ("lock_timeout", "LockNotAvailable", "55P03")],
    ids=["statement-timeout-57014", "lock-timeout-55P03"],
)
def test_postgres_timeouts_wait_and_open_the_breaker(
    make_job: Any, postgres_url: str, kystverket_path: Path, baseline: Any, setting: str, error: str, sqlstate: str
) -> None:
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    database = with_schema(postgres_url)
    pg(postgres_url, f"ALTER DATABASE \"{database}\" SET {setting} = '300ms'")
    lock = TableLock(postgres_url)
    try:
        job, summary = pg_case(make_job, postgres_url, kystverket_path)
    finally:
        lock.release()
    assert_store_fault(job, summary, "db")

    queue = job.queue()
    reasons = {x.history[-1]["message"].partition("]")[0] for x in queue.peek(10_000)}
    # Batches that reached the lane while a call probed the failing store wait too (bulkheads).
    assert f"db: {error} [{sqlstate}" in reasons
    assert reasons <= {f"db: {error} [{sqlstate}", "breaker open", suspect_lane_message("db")}
    queue.close()
    pg(postgres_url, f'ALTER DATABASE "{database}" RESET {setting}')
    assert_recovered(job, summary, "db", expected)


def test_postgres_backend_terminated_mid_insert_waits_and_the_breaker_stays_closed(
    make_job: Any, postgres_url: str, kystverket_path: Path, baseline: Any
) -> None:
    """57P01 admin shutdown (pg_terminate_backend) of a backend in the middle of a write: that
    batch waits and is retried; one failure per backend is below the breaker's threshold."""
    expected = baseline(kystverket_path, KYSTVERKET_BATCH)
    database = with_schema(postgres_url)
    lock = TableLock(postgres_url)
    job = make_job(postgres_url)
    result: dict[str, Any] = {}
    threshold = ("--set", "breaker.failure_threshold=10")
    thread = threading.Thread(
        target=lambda: result.update(job.ingest(kystverket_path, extra=(*RUN, *KYSTVERKET_BATCH, *threshold)))
    )
    thread.start()
    try:
        blocked = wait_until(lambda: _waiting_on_locks(postgres_url, database), 60, "a write blocked on the lock")
        pg(postgres_url, *(f"SELECT pg_terminate_backend({pid})" for pid in blocked))
    finally:
        lock.release()
    thread.join(timeout=300)
    assert not thread.is_alive()
    summary = result
    assert summary["ok"], summary["errors"]
    s = summary["sinks"]["db"]
    assert s["received"] == s["written"] + s["duplicates"] + s["dead_letter_queue"]
    assert s["dead_letter_queue"] > 0 and s["dlq_waiting"] == s["dead_letter_queue"] and s["dlq_dead"] == 0
    assert breaker_trips(job, "db") == 0
    assert_recovered(job, summary, "db", expected)


def _waiting_on_locks(admin_url: str, database: str) -> list[int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (database,)
        ).fetchall()
    return [int(r[0]) for r in rows]


# -- bad records -----------------------------------------------------------------------------


def test_a_nul_byte_in_one_row_is_dead_alone_and_the_breaker_stays_closed(
    postgres_url: str, tmp_path: Path, kystverket_path: Path
) -> None:
    """psycopg refuses a NUL in a text field without a SQLSTATE (here the tag block's station,
    as in the issue): that row is poison, every other row is written, the breaker stays
    closed. Through the real writer, breaker and dead-letter queue, without Ray."""
    from breakwater import accounting as acc
    from breakwater.breaker import BreakerConfig, BreakerState, CircuitBreaker
    from breakwater.dead_letters import DEAD, DeadLetterConfig, DeadLetterQueue
    from breakwater.gate import SinkGate
    from breakwater.stores.sql import SqlSink
    from breakwater.writer import ShardWriter
    from tests.integration.test_stores import decoded_batches

    with_schema(postgres_url)
    batches = decoded_batches(kystverket_path)
    victim = batches[0].positions[100]
    poisoned = (*victim[:11], "ab\x00c", *victim[12:])
    batches[0].positions[100] = poisoned
    sink = SqlSink(postgres_url)
    breaker = CircuitBreaker("db", BreakerConfig(failure_threshold=1))
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    writer = ShardWriter([sink], {"db": SinkGate(breaker)}, queue, job_id="job")
    counts: Counter[str] = Counter()
    for i, batch in enumerate(batches):
        counts.update(writer.write(batch, f"b{i}").counts)
    writer.close()
    received = sum(len(b) for b in batches)
    assert counts[acc.sink("db", "received")] == received
    assert counts[acc.sink("db", acc.OUTCOME_DLQ)] == 1
    assert counts[acc.sink("db", acc.OUTCOME_WRITTEN)] + counts[acc.sink("db", acc.OUTCOME_DUPLICATE)] == received - 1
    dead = queue.peek(10, status=DEAD)
    assert [x.row for x in dead] == [poisoned]
    assert "NUL" in dead[0].history[-1]["message"]
    assert queue.stats().waiting == 0
    assert breaker.state == BreakerState.CLOSED and breaker.trips == 0
    queue.close()
    positions, _, _ = sql_snapshot(postgres_url)
    assert (victim[0], victim[2]) not in positions
    assert sum(positions.values()) == sum(len(b.positions) for b in batches) - 1
