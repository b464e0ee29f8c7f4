"""Resilience with real Ray, Redis and PostgreSQL: stores fail mid-ingest, actors die, a
record keeps failing. Nothing is lost, nothing is written twice, the numbers add up.

The input arrives through a live TCP feed that the test controls, so the failure happens
mid-stream at a known point (after a known number of messages), not after a guessed sleep.
A fault-injecting proxy (jobs/fault_proxy.py) stands between Breakwater and the store.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray
import redis
from sqlalchemy import create_engine, select

from breakwater.stores.redis import RedisKeys
from jobs.fault_proxy import FaultProxy, Mode
from tests.conftest import REDIS_URL, read_lines
from tests.integration.conftest import Job

# Fast healing for tests: the breaker tries again after a second, retries back off briefly.
FAST_SETTINGS = (
    "--set",
    "breaker.reset_timeout_s=1",
    "--set",
    "breaker.failure_threshold=3",
    "--set",
    "retry.backoff_base_s=0.2",
    "--set",
    "retry.backoff_max_s=1",
    "--set",
    "metrics_push_interval_s=0.2",
    "--set",
    "store_timeout_s=2",
)
FAST = (*FAST_SETTINGS, "--set", "flush_interval_ms=100", "--batch-lines", "1000", "--no-scheduler")


def wait_until(condition: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Feed:
    """A TCP server that sends the capture in parts, when the test says so."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.sent = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.conn: socket.socket | None = None
        self._accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.getsockname()[1]}?reconnect=0"

    def _accept(self) -> None:
        self.conn, _ = self.server.accept()
        self._accepted.set()

    def send(self, fraction: float) -> None:
        """Send lines up to `fraction` of the capture."""
        self.send_until(int(len(self.lines) * fraction))

    def send_until(self, end: int) -> None:
        """Send the lines before index `end`."""
        # Bounded generously: a loaded 2-core machine can take a minute and more to start Ray.
        assert self._accepted.wait(300), "the ingest job never connected to the feed"
        assert self.conn is not None
        self.conn.sendall(b"".join(line + b"\n" for line in self.lines[self.sent : end]))
        self.sent = end

    def close(self) -> None:
        self.send(1.0)
        assert self.conn is not None
        self.conn.close()
        self.server.close()


class Running:
    """An ingest job on a background thread (the test keeps the main thread to steer)."""

    def __init__(self, job: Job, source: str, extra: tuple[str, ...]) -> None:
        self.job = job
        self.summary: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(source, extra), daemon=True)
        self.thread.start()

    def _run(self, source: str, extra: tuple[str, ...]) -> None:
        try:
            self.summary = self.job.ingest(source, extra=extra)
        except BaseException as e:
            self.error = e

    def join(self) -> dict[str, Any]:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "the ingest job did not finish"
        if self.error:
            raise self.error
        return self.summary


def actor(job: Job, name: str) -> Any:
    return wait_until(lambda: _find(name, job.namespace), 180, f"actor {name}")


def _find(name: str, namespace: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def processed(job: Job) -> float:
    metrics = _find("metrics", job.namespace)
    return 0.0 if metrics is None else float(ray.get(metrics.counter.remote("ais_messages_processed")))


def breaker_state(job: Job, sink: str) -> str:
    return str(ray.get(actor(job, f"breaker-{sink}").status.remote())["state"])


def drain_until_empty(job: Job) -> None:
    """The retry job, run again until the queue is empty (each run drains what the breaker
    lets through; a breaker that just reopened needs its second to pass)."""

    def empty() -> bool:
        assert job.retry("--force", *FAST_SETTINGS) == 0
        queue = job.queue()
        stats = queue.stats()
        queue.close()
        return stats.waiting == 0

    wait_until(empty, 120, "the dead-letter queue to drain")


def redis_latest(prefix: str) -> dict[int, dict[str, str]]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = RedisKeys(prefix)
    states = {}
    for key in client.scan_iter(keys.pattern(), count=1000):
        data = client.hgetall(key)
        if "pos_ms" in data:
            states[int(data["mmsi"])] = data
    return states


def sql_latest(database_url: str) -> dict[int, tuple[Any, ...]]:
    from breakwater.stores import schema

    lp = schema.latest_positions
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(select(lp.c.mmsi, lp.c.received_at, lp.c.digest, lp.c.lat, lp.c.lon, lp.c.sog_kn)).all()
    engine.dispose()
    return {r[0]: tuple(r[1:]) for r in rows}


def assert_redis_matches_sql(prefix: str, database_url: str) -> None:
    """Every vessel's latest state in Redis is the one the SQL store holds: Redis ended up
    as if it had never been away."""
    live, stored = redis_latest(prefix), sql_latest(database_url)
    assert set(live) == set(stored)
    for mmsi, (received_at, digest, lat, lon, _sog) in stored.items():
        state = live[mmsi]
        assert int(state["pos_ms"]) == round(received_at.timestamp() * 1000), mmsi
        assert int(state["pos_digest"]) == digest
        assert (state["lat"] or None, state["lon"] or None) == (
            None if lat is None else repr(lat),
            None if lon is None else repr(lon),
        )


def assert_no_duplicate_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (mmsi, received_at, digest)) FROM positions"
        ).fetchone()  # type: ignore[misc]
    assert total == distinct
    return int(total)


def identities(database_url: str) -> dict[tuple[Any, ...], int]:
    """Each history row's identity; for rows stamped with the ingest time, the time is left
    out (another run reads at another time)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT mmsi, digest, time_source, "
            "CASE WHEN time_source = 'ingest' THEN NULL ELSE received_at END, count(*) "
            "FROM positions GROUP BY 1, 2, 3, 4"
        ).fetchall()
    return {tuple(r[:4]): r[4] for r in rows}


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", 6379)) as proxy:
        yield proxy


@pytest.fixture
def postgres_proxy() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", 5432)) as proxy:
        yield proxy


def proxied(url: str, proxy: FaultProxy) -> str:
    return url.replace(":5432/", f":{proxy.port}/").replace(":6379/", f":{proxy.port}/")


def run_with_outage(
    job: Job, amsa: list[bytes], proxies: list[FaultProxy], sinks: list[str], mode: Mode = "reset"
) -> dict[str, Any]:
    """Stream the capture; a third of the way in take the stores away (connections reset, or
    a frozen server that never answers) until every breaker has opened and more data has
    arrived, then bring them back for the rest."""
    feed = Feed(amsa)
    running = Running(job, feed.url, FAST)
    feed.send(0.3)
    wait_until(lambda: processed(job) >= 5_000, 180, "5,000 messages processed")
    for proxy in proxies:
        proxy.set_mode(mode)
    feed.send(0.6)
    for sink in sinks:
        wait_until(lambda s=sink: breaker_state(job, s) == "OPEN", 180, f"the {sink} breaker to open")
    for proxy in proxies:
        proxy.set_mode("up")
    feed.close()
    summary = running.join()
    assert summary["ok"], summary["errors"]
    for sink in sinks:
        assert summary["sinks"][sink]["dead_letter_queue"] > 0, f"the {sink} outage sent nothing to the DLQ"
    return summary


def assert_drained(job: Job, summary: dict[str, Any], sinks: list[str]) -> None:

    queue = job.queue()
    tally = queue.job_tally(summary["job_id"])
    queue.close()
    for sink in sinks:
        t, s = tally[sink], summary["sinks"][sink]
        assert t.waiting == 0 and t.dead == 0
        assert t.retried_written + t.retried_duplicates == s["dead_letter_queue"]


def test_redis_outage_mid_ingest_heals(
    make_job: Any, postgres_url: str, redis_prefix: str, redis_proxy: FaultProxy, amsa_path: Path
) -> None:
    job = make_job(postgres_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    summary = run_with_outage(job, read_lines(amsa_path), [redis_proxy], ["redis"])
    assert summary["sinks"]["db"]["dead_letter_queue"] == 0
    drain_until_empty(job)
    assert_drained(job, summary, ["redis"])
    assert_redis_matches_sql(redis_prefix, postgres_url)
    assert_no_duplicate_rows(postgres_url)


def test_a_frozen_redis_trips_its_breaker_and_the_database_keeps_up(
    make_job: Any, postgres_url: str, redis_prefix: str, redis_proxy: FaultProxy, amsa_path: Path
) -> None:
    """Redis accepts connections but never answers: the reply timeout turns that into
    failures, the breaker opens, and the database sink is written all along."""
    job = make_job(postgres_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    summary = run_with_outage(job, read_lines(amsa_path), [redis_proxy], ["redis"], mode="hang")
    assert summary["sinks"]["db"]["dead_letter_queue"] == 0
    drain_until_empty(job)
    assert_drained(job, summary, ["redis"])
    assert_redis_matches_sql(redis_prefix, postgres_url)


def test_postgres_outage_mid_ingest_heals(
    make_job: Any, redis_prefix: str, postgres_proxy: FaultProxy, amsa_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url")
    job = make_job(proxied(url, postgres_proxy), REDIS_URL, redis_prefix)
    summary = run_with_outage(job, read_lines(amsa_path), [postgres_proxy], ["db"])
    assert summary["sinks"]["redis"]["dead_letter_queue"] == 0
    drain_until_empty(job)
    assert_drained(job, summary, ["db"])
    assert_no_duplicate_rows(url)
    assert_redis_matches_sql(redis_prefix, url)
    assert_history_as_without_outage(make_job, request, job, url, amsa_path)


def test_both_stores_down_at_once(
    make_job: Any,
    redis_prefix: str,
    postgres_proxy: FaultProxy,
    redis_proxy: FaultProxy,
    amsa_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    url = request.getfixturevalue("postgres_url")
    job = make_job(proxied(url, postgres_proxy), proxied(REDIS_URL, redis_proxy), redis_prefix)
    summary = run_with_outage(job, read_lines(amsa_path), [postgres_proxy, redis_proxy], ["db", "redis"])
    drain_until_empty(job)
    assert_drained(job, summary, ["db", "redis"])
    assert_no_duplicate_rows(url)
    assert_redis_matches_sql(redis_prefix, url)
    assert_history_as_without_outage(make_job, request, job, url, amsa_path)


def assert_history_as_without_outage(
    make_job: Any, request: pytest.FixtureRequest, job: Job, url: str, amsa_path: Path
) -> None:
    """The history is what a run without any outage writes, row for row (rows stamped with
    the ingest time are compared without their time: another run reads at another time)."""
    clean_url = request.getfixturevalue("postgres_url")
    clean = make_job(clean_url)
    clean.ingest(_as_file(job.tmp_path, amsa_path), extra=("--batch-lines", "1000"))
    assert identities(url) == identities(clean_url)


def _as_file(tmp_path: Path, amsa_path: Path) -> Path:
    path = tmp_path / "amsa.nmea"
    path.write_bytes(b"".join(line + b"\n" for line in read_lines(amsa_path)))
    return path


def assert_every_redis_record_waited_and_heals(
    job: Job, summary: dict[str, Any], redis_proxy: FaultProxy, redis_prefix: str, postgres_url: str
) -> None:
    """A run whose Redis records all went to the queue: each is journaled once, and with
    Redis back a drain leaves Redis equal to SQL, with no row written twice."""
    assert summary["ok"], summary["errors"]
    redis_sink = summary["sinks"]["redis"]
    assert redis_sink["dlq_waiting"] == redis_sink["dead_letter_queue"] > 0
    redis_proxy.set_mode("up")
    drain_until_empty(job)
    assert_drained(job, summary, ["redis"])
    assert_redis_matches_sql(redis_prefix, postgres_url)
    assert_no_duplicate_rows(postgres_url)


def test_killing_the_dead_letter_queue_and_a_writer_mid_run_loses_nothing(
    make_job: Any, postgres_url: str, redis_prefix: str, redis_proxy: FaultProxy, amsa_path: Path
) -> None:
    job = make_job(postgres_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    feed = Feed(read_lines(amsa_path))
    running = Running(job, feed.url, FAST)
    feed.send(0.02)
    wait_until(lambda: processed(job) > 0, 180, "the first messages")
    redis_proxy.set_mode("reset")  # from here on everything for Redis goes to the DLQ
    feed.send(0.25)
    wait_until(lambda: processed(job) >= 4_000, 180, "4,000 messages processed")
    ray.kill(actor(job, "dead-letters"), no_restart=False)
    feed.send(0.5)
    writers = wait_until(
        lambda: [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == job.namespace and a["name"].startswith("writer-")
        ],
        30,
        "writers",
    )
    ray.kill(ray.get_actor(writers[0]["name"], namespace=job.namespace), no_restart=False)
    feed.send(0.75)
    ray.kill(actor(job, "dead-letters"), no_restart=False)
    feed.close()
    assert_every_redis_record_waited_and_heals(job, running.join(), redis_proxy, redis_prefix, postgres_url)


def dlq_actor_pid(job: Job) -> int:
    return int(ray.get(actor(job, "dead-letters").__ray_call__.remote(lambda _self: os.getpid()), timeout=60))


def test_a_dead_letter_queue_that_stops_answering_holds_the_batch_and_nothing_is_lost(
    make_job: Any, postgres_url: str, redis_prefix: str, redis_proxy: FaultProxy, amsa_path: Path
) -> None:
    """The queue actor's process is frozen (SIGSTOP: alive, never answering) while Redis is
    out. Writers' enqueues time out (ray_timeout_s), the batches stay unacknowledged and are
    journaled when it answers again: every record once, none lost, none written twice."""
    job = make_job(postgres_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    feed = Feed(read_lines(amsa_path))
    running = Running(job, feed.url, (*FAST, "--set", "ray_timeout_s=20"))
    feed.send(0.2)
    wait_until(lambda: processed(job) > 0, 180, "the first messages")
    redis_proxy.set_mode("reset")
    pid = dlq_actor_pid(job)
    os.kill(pid, signal.SIGSTOP)
    try:
        feed.send(0.6)
        wait_until(lambda: unanswered(job) > 0, 180, "a writer to find the queue silent")
    finally:
        os.kill(pid, signal.SIGCONT)
    feed.close()
    assert_every_redis_record_waited_and_heals(job, running.join(), redis_proxy, redis_prefix, postgres_url)


def unanswered(job: Job) -> float:
    return float(ray.get(actor(job, "metrics").counter.remote("ais_dlq_unanswered")))


@pytest.fixture
def trigger(postgres_url: str) -> Iterator[Callable[[int, str], None]]:
    """Makes PostgreSQL refuse positions of one MMSI with a given SQLSTATE, until dropped."""

    def install(mmsi: int, sqlstate: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                f"""
                CREATE OR REPLACE FUNCTION refuse_one() RETURNS trigger AS $$
                BEGIN
                    IF NEW.mmsi = {int(mmsi)} THEN
                        RAISE EXCEPTION 'test refuses vessel %', NEW.mmsi USING ERRCODE = '{sqlstate}';
                    END IF;
                    RETURN NEW;
                END $$ LANGUAGE plpgsql;
                DROP TRIGGER IF EXISTS refuse_one ON positions;
                CREATE TRIGGER refuse_one BEFORE INSERT ON positions FOR EACH ROW EXECUTE FUNCTION refuse_one();
                """
            )

    yield install
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER IF EXISTS refuse_one ON positions")


def test_a_record_that_always_fails_dies_after_its_attempts_and_a_redrive_writes_it(
    make_job: Any, postgres_url: str, kystverket_path: Path, trigger: Callable[[int, str], None]
) -> None:
    from breakwater.stores.engine import check_database
    from breakwater.stores.sql_queries import SqlQueries
    from tests.integration.test_ingest_embedded import independent_tracks

    check_database(postgres_url, timeout_s=5)  # the schema, so the trigger has its table
    tracks = independent_tracks(kystverket_path)
    victim = max(tracks, key=lambda m: len(tracks[m]))
    trigger(victim, "55P03")  # lock_not_available: a transient error, every time
    job = make_job(postgres_url)
    settings = ("--set", "retry.max_attempts=3", "--set", "admin_token=t0k")
    summary = job.ingest(kystverket_path, extra=(*FAST, *settings))
    assert summary["sinks"]["db"]["dead_letter_queue"] > 0

    def victim_dead() -> bool:
        # Each retry that reaches the store is an attempt; one that finds the breaker open
        # (the search for the failing records trips it) parks them until the breaker allows.
        assert job.retry("--force", *FAST_SETTINGS, *settings) == 0
        queue = job.queue()
        stats = queue.stats()
        queue.close()
        return stats.dead == len(tracks[victim]) and stats.waiting == 0

    wait_until(victim_dead, 120, "the victim's records dead after their attempts, the others written")
    queue = job.queue()
    dead = queue.peek(100, status="dead")
    assert {x.row[0] for x in dead} == {victim}
    assert len(dead) == len(tracks[victim])
    assert queue.stats().waiting == 0
    assert "3 attempts failed" in (dead[0].dead_reason or "") and len(dead[0].history) == 3
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_one ON positions")  # the fix
    from breakwater import Client

    settings = job.settings().model_copy(update={"admin_token": "t0k"})
    with Client(settings) as client:
        assert client.dlq_redrive(admin_token="t0k") == len(dead)
        assert client.dlq_retry_now() == {"db.written": len(dead)}
        assert len(client.track(victim)) == len(tracks[victim])
    assert queue.stats().waiting == queue.stats().dead == 0
    queue.close()
    assert SqlQueries(postgres_url).counts().positions == 748


def test_a_poison_record_goes_straight_to_the_dead_letter_store(
    make_job: Any, postgres_url: str, kystverket_path: Path, trigger: Callable[[int, str], None]
) -> None:
    from breakwater.stores.engine import check_database
    from tests.integration.test_ingest_embedded import independent_tracks

    check_database(postgres_url, timeout_s=5)
    tracks = independent_tracks(kystverket_path)
    victim = max(tracks, key=lambda m: len(tracks[m]))
    trigger(victim, "23514")  # check_violation: the data, not the server
    job = make_job(postgres_url)
    summary = job.ingest(kystverket_path, extra=FAST)
    db = summary["sinks"]["db"]
    assert db["dlq_dead"] == db["dead_letter_queue"] == len(tracks[victim])
    assert db["dlq_waiting"] == 0
    assert breaker_state(job, "db") == "CLOSED"  # bad data says nothing about the server


def test_a_restarted_breaker_actor_keeps_its_state(make_job: Any, sqlite_url: str, kystverket_path: Path) -> None:
    from breakwater import AdminAuthError, Client

    job = make_job(sqlite_url)
    job.ingest(kystverket_path, extra=("--set", "admin_token=t0k"))  # the cluster's own token
    settings = job.settings().model_copy(update={"admin_token": "t0k"})
    with Client(settings) as client:
        with pytest.raises(AdminAuthError):
            client.force_breaker("db", "open", admin_token="wrong")
        opened = client.force_breaker("db", "open", admin_token="t0k")
        assert opened["state"] == "OPEN" and opened["forced"]
        ray.kill(actor(job, "breaker-db"), no_restart=False)
        # A restored breaker starts a new epoch: wait for the restarted actor to answer.
        after = wait_until(
            lambda: (status := _status_or_none(job)) and status["epoch"] > opened["epoch"] and status,
            60,
            "the restarted breaker actor",
        )
        assert after["state"] == "OPEN" and after["forced"]
        released = client.force_breaker("db", "release", admin_token="t0k")
        assert released["state"] == "CLOSED"


def _status_or_none(job: Job) -> dict[str, Any] | None:
    try:
        return dict(ray.get(actor(job, "breaker-db").status.remote(), timeout=5))
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_a_full_queue_holds_the_reader_back_until_it_drains(
    make_job: Any, sqlite_url: str, redis_prefix: str, redis_proxy: FaultProxy, amsa_path: Path
) -> None:
    job = make_job(sqlite_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    feed = Feed(read_lines(amsa_path))
    extra = (
        *FAST_SETTINGS,
        "--set",
        "flush_interval_ms=100",
        "--batch-lines",
        "1000",
        "--max-batches-in-flight",
        "1",
        "--set",
        "dlq.max_records=500",
        "--set",
        "retry.interval_s=0.5",
    )
    running = Running(job, feed.url, extra)
    feed.send(0.02)
    wait_until(lambda: processed(job) > 0, 180, "the first messages")
    redis_proxy.set_mode("reset")
    feed.send(0.5)
    metrics = actor(job, "metrics")
    wait_until(lambda: ray.get(metrics.summary.remote()).get("ais_dlq_full") == 1, 180, "the queue to report full")
    held_at = processed(job)
    feed.send(0.6)
    # While full, nothing more is submitted: the processed count does not move.
    wait_until(
        lambda: ray.get(metrics.summary.remote()).get("ais_batches_in_flight") == 0, 180, "in-flight batches to finish"
    )
    assert processed(job) <= held_at + 1000 * 2  # at most the batches already in flight
    redis_proxy.set_mode("up")  # the scheduler drains, the reader resumes
    feed.close()
    summary = running.join()
    assert summary["ok"], summary["errors"]
    assert summary["lines"]["read"] == 44_687


def test_the_ingest_jobs_scheduler_heals_without_anyone_running_the_retry_job(
    make_job: Any, sqlite_url: str, redis_prefix: str, redis_proxy: FaultProxy, amsa_path: Path
) -> None:
    job = make_job(sqlite_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    feed = Feed(read_lines(amsa_path))
    running = Running(job, feed.url, (*FAST[:-1], "--set", "retry.interval_s=0.5"))  # scheduler on
    feed.send(0.3)
    wait_until(lambda: processed(job) >= 5_000, 180, "5,000 messages processed")
    redis_proxy.set_mode("reset")
    feed.send(0.6)
    wait_until(lambda: breaker_state(job, "redis") == "OPEN", 180, "the redis breaker to open")
    redis_proxy.set_mode("up")
    feed.close()
    summary = running.join()
    assert summary["sinks"]["redis"]["dead_letter_queue"] > 0

    queue = job.queue()
    wait_until(lambda: queue.stats().waiting == 0, 120, "the scheduler to drain the queue")
    queue.close()
    assert_drained(job, summary, ["redis"])
    assert_redis_matches_sql(redis_prefix, sqlite_url)


def test_retry_job_every_starts_a_detached_scheduler_on_a_running_cluster(
    make_job: Any, sqlite_url: str, journal_path: Path, kystverket_path: Path
) -> None:
    from breakwater.dead_letters import Failure
    from tests.integration.test_stores import decoded_batches

    job = make_job(sqlite_url)
    queue = job.queue()
    batch = decoded_batches(kystverket_path)[0]
    failure = Failure("StoreUnavailable", "connection refused", "CLOSED", 0.0)
    queue.enqueue(
        "db", {"position": batch.positions}, source="test", job_id="j", batch_id="b", read_ms=0, failure=failure
    )
    address = ray.get_runtime_context().gcs_address
    assert job.retry("--every", "0.5", "--address", address, "--set", "retry.backoff_base_s=0.1") == 0
    scheduler = actor(job, "retry-scheduler")
    assert ray.get(scheduler.status.remote())["interval_s"] == 0.5
    wait_until(lambda: queue.stats().waiting == 0, 180, "the detached scheduler to drain")
    assert queue.job_tally("j")["db"].retried_written == len(batch.positions)
    queue.close()


def test_retry_job_drains_a_journal_whose_cluster_is_gone(
    make_job: Any, sqlite_url: str, kystverket_path: Path
) -> None:
    """No Breakwater actors anywhere: the retry job opens the journal itself (no Ray needed)."""
    import subprocess
    import sys

    from breakwater.dead_letters import Failure
    from breakwater.stores.engine import check_database
    from tests.integration.test_stores import decoded_batches

    job = make_job(sqlite_url)
    check_database(sqlite_url, timeout_s=5)
    queue = job.queue()
    batch = decoded_batches(kystverket_path)[0]
    failure = Failure("StoreUnavailable", "connection refused", "CLOSED", 0.0)
    queue.enqueue("db", {"position": batch.positions}, source="t", job_id="j", batch_id="b", read_ms=0, failure=failure)
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-m", "jobs.retry_dlq", "--local", "--force", *job.settings_args()],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "import ray" not in result.stderr
    assert queue.stats().waiting == 0
    assert queue.job_tally("j")["db"].retried_written == len(batch.positions)
    queue.close()
