"""Backup and restore (issue 13), with real stores.

The drills ingest the AMSA capture through a live feed with Redis cut (so the queue fills),
back up while the ingest runs, restore into fresh stores of another deployment, and check
that the restored stores and queue hold exactly what the backup's manifest says, and that the
restored queue drains into Redis. The other tests build a small deployment without Ray and
check the refusals; test_backup_restore_cli.py runs the commands.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from breakwater.backup import DATA_TABLES, BackupError, backup, restore, store_rows
from breakwater.config import Settings, load_settings
from breakwater.dead_letters import Failure
from breakwater.deployment import Deployment, deployment_queue
from breakwater.errors import ConfigError
from breakwater.stores import schema
from breakwater.stores.engine import check_database
from breakwater.stores.sql import SqlSink
from jobs.fault_proxy import FaultProxy
from tests.conftest import REDIS_URL, read_lines
from tests.integration.conftest import Job
from tests.integration.test_resilience import (
    FAST,
    Feed,
    Running,
    drain_until_empty,
    processed,
    proxied,
    redis_latest,
    sql_latest,
    wait_until,
)
from tests.integration.test_stores import decoded_batches

# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def new_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Fresh databases on demand (a restore's target), dropped afterwards."""
    names: list[str] = []

    def create() -> str:
        name = f"bw_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    yield create
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_for(database_url: str, journal: Path, redis_prefix: str | None = None) -> Settings:
    overrides: dict[str, Any] = {"database_url": database_url, "dlq": {"path": journal}, "namespace": "backup-test"}
    if redis_prefix is not None:
        overrides.update(redis_url=REDIS_URL, redis_prefix=redis_prefix)
    return load_settings(overrides)


def queue_counts(settings: Settings) -> dict[str, dict[str, int]]:
    """The queue's waiting and dead records per sink, as the deployment's own queue sees them."""
    queue = deployment_queue(settings)
    try:
        by_sink = queue.stats().by_sink
    finally:
        queue.close()
    return {sink: dict(counts) for sink, counts in by_sink.items() if any(counts.values())}


def table_rows(database_url: str) -> dict[str, int]:
    """Rows per data table of a restored store, read with a plain query."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = {t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()) for t in DATA_TABLES}
    engine.dispose()
    return rows


def small_deployment(tmp_path: Path, kystverket_path: Path) -> Settings:
    """A SQLite store holding the Kystverket capture, and a queue of 50 Redis records, 10 of them dead."""
    settings = settings_for(f"sqlite:///{tmp_path / 'live' / 'store.sqlite3'}", tmp_path / "live" / "dl.sqlite3")
    check_database(settings.database_url, timeout_s=10)
    sink = SqlSink(settings.database_url)
    batches = decoded_batches(kystverket_path)
    for batch in batches:
        sink.write(batch)
    sink.close()
    queue = deployment_queue(settings)
    positions = batches[0].positions[:50]
    failure = Failure("StoreUnavailable", "connection refused", "CLOSED", time.time())
    queue.enqueue(
        "redis", {"position": positions[:40]}, source="t", job_id="j", batch_id="a", read_ms=0, failure=failure
    )
    poison = Failure("PoisonRecord", "out of range", "CLOSED", time.time(), transient=False)
    queue.enqueue(
        "redis", {"position": positions[40:]}, source="t", job_id="j", batch_id="b", read_ms=0, failure=poison
    )
    queue.close()
    return settings


# -- the drills ------------------------------------------------------------------------------


def backup_while_ingesting(job: Job, redis_proxy: FaultProxy, amsa: list[bytes], target: Path) -> dict[str, Any]:
    """Stream the capture with Redis cut after the first lines; back up half-way, while the
    ingest runs and the queue takes Redis's records; return the manifest."""
    feed = Feed(amsa)
    running = Running(job, feed.url, FAST)
    feed.send(0.02)
    wait_until(lambda: processed(job) > 0, 180, "the first messages")
    redis_proxy.set_mode("reset")
    feed.send(0.5)
    wait_until(lambda: queue_counts(job.settings()).get("redis", {}).get("waiting", 0) > 0, 180, "queued records")
    manifest = backup(job.settings(), target)
    feed.close()
    summary = running.join()
    assert summary["ok"], summary["errors"]
    redis_proxy.set_mode("up")
    # The backup was taken mid-run: it holds less than the run wrote in the end.
    assert 0 < manifest["counts"]["tables"]["positions"] < table_rows(job.database_url)["positions"]
    return manifest


def assert_restored_as_manifest(manifest: dict[str, Any], restored: Settings) -> None:
    """The restored stores and queue hold what the manifest says, and the queue drains."""
    assert table_rows(restored.database_url) == {t: manifest["counts"]["tables"][t] for t in DATA_TABLES}
    waiting = manifest["counts"]["dead_letters"]["redis"]["waiting"]
    assert waiting > 0
    assert queue_counts(restored) == manifest["counts"]["dead_letters"]


def queued_redis_vessels(journal: Path) -> set[int]:
    """The MMSIs of the position records waiting for Redis in a journal (a row leads with its MMSI)."""
    with sqlite3.connect(journal) as conn:
        rows = conn.execute(
            "SELECT row FROM dead_letters WHERE sink='redis' AND kind='position' AND status='waiting'"
        ).fetchall()
    return {int(json.loads(row)[0]) for (row,) in rows}


def drain_restored(make_job: Any, restored: Settings, redis_prefix: str) -> None:
    """The retry job of the restored deployment empties its queue into its own, fresh Redis
    prefix: afterwards that prefix holds a latest position for exactly the vessels whose
    positions were queued for Redis, and nothing waits."""
    expected = queued_redis_vessels(restored.dlq.path)
    assert expected
    job = make_job(restored.database_url, REDIS_URL, redis_prefix)
    job.dlq_path = restored.dlq.path
    drain_until_empty(job)
    assert queue_counts(restored).get("redis", {}).get("waiting", 0) == 0
    assert set(redis_latest(redis_prefix)) == expected


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", 6379)) as proxy:
        yield proxy


def test_drill_postgres(
    make_job: Any,
    tmp_path: Path,
    postgres_url: str,
    new_database: Callable[[], str],
    redis_prefix: str,
    redis_proxy: FaultProxy,
    amsa_path: Path,
) -> None:
    job = make_job(postgres_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    manifest = backup_while_ingesting(job, redis_proxy, read_lines(amsa_path), tmp_path / "backup")
    assert manifest["database"] == {"kind": "postgresql", "file": "database.pgdump"}
    assert manifest["deployment"]["fingerprint"] == Deployment.of(job.settings()).fingerprint

    restored_prefix = f"{redis_prefix}restored:"
    restored = settings_for(new_database(), tmp_path / "restored" / "dl.sqlite3", restored_prefix)
    result = restore(restored, tmp_path / "backup")
    assert result["dead_letters_rebound"] == sum(sum(c.values()) for c in manifest["counts"]["dead_letters"].values())
    assert_restored_as_manifest(manifest, restored)
    drain_restored(make_job, restored, restored_prefix)


def test_drill_sqlite(
    make_job: Any, tmp_path: Path, sqlite_url: str, redis_prefix: str, redis_proxy: FaultProxy, amsa_path: Path
) -> None:
    job = make_job(sqlite_url, proxied(REDIS_URL, redis_proxy), redis_prefix)
    manifest = backup_while_ingesting(job, redis_proxy, read_lines(amsa_path), tmp_path / "backup")
    assert manifest["database"] == {"kind": "sqlite", "file": "database.sqlite3"}

    restored_prefix = f"{redis_prefix}restored:"
    restored = settings_for(
        f"sqlite:///{tmp_path / 'restored' / 'store.sqlite3'}", tmp_path / "restored" / "dl.sqlite3", restored_prefix
    )
    restore(restored, tmp_path / "backup")
    assert_restored_as_manifest(manifest, restored)
    drain_restored(make_job, restored, restored_prefix)


# -- a small deployment, no Ray ----------------------------------------------------------------


def test_the_manifest_counts_what_the_files_hold_and_a_restore_rebinds_the_queue(
    tmp_path: Path, kystverket_path: Path
) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    manifest = backup(live, tmp_path / "backup")
    assert manifest["schema_version"] == schema.LATEST_VERSION
    assert manifest["counts"]["tables"] == {
        **table_rows(live.database_url),
        "breakwater_schema": 1,
        "breakwater_settings": 0,
    }
    assert manifest["counts"]["dead_letters"] == {"redis": {"waiting": 40, "dead": 10}}
    assert set(manifest["sha256"]) == {"database.sqlite3", "dead-letters.sqlite3"}
    assert manifest["deployment"]["fingerprint"] == Deployment.of(live).fingerprint

    restored = settings_for(f"sqlite:///{tmp_path / 'other' / 'store.sqlite3'}", tmp_path / "other" / "dl.sqlite3")
    assert Deployment.of(restored).fingerprint != Deployment.of(live).fingerprint
    # Copied as it is, the journal's records belong to the old stores: the new queue sees none.
    unbound = settings_for(restored.database_url, tmp_path / "unbound.sqlite3")
    (tmp_path / "unbound.sqlite3").write_bytes((tmp_path / "backup" / "dead-letters.sqlite3").read_bytes())
    assert queue_counts(unbound) == {}

    result = restore(restored, tmp_path / "backup")
    assert result["dead_letters_rebound"] == 50
    assert table_rows(restored.database_url) == table_rows(live.database_url)
    assert queue_counts(restored) == {"redis": {"waiting": 40, "dead": 10}}
    with sqlite3.connect(restored.dlq.path) as conn:
        destinations = conn.execute("SELECT DISTINCT destination FROM dead_letters").fetchall()
    assert destinations == [(Deployment.of(restored).fingerprint,)]


def test_restore_refuses_stores_that_are_not_empty(tmp_path: Path, kystverket_path: Path) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    backup(live, tmp_path / "backup")
    rows = store_rows(live.database_url)
    with pytest.raises(ConfigError, match=r"^BREAKWATER_DATABASE_URL \(--database-url\): the store is not empty \("):
        restore(live, tmp_path / "backup")
    assert store_rows(live.database_url) == rows

    # An empty store, but a journal that holds records: refused too, naming the journal.
    other = settings_for(f"sqlite:///{tmp_path / 'empty' / 'store.sqlite3'}", live.dlq.path)
    with pytest.raises(ConfigError, match=r"^BREAKWATER_DLQ__PATH \(--dlq-path\): .* restore only into an empty"):
        restore(other, tmp_path / "backup")
    assert not (tmp_path / "empty" / "store.sqlite3").exists()


def damage(path: Path) -> None:
    """Flip one byte in the middle of a backed-up file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_restore_refuses_a_damaged_file_and_writes_nothing(tmp_path: Path, kystverket_path: Path) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    backup(live, tmp_path / "backup")
    damage(tmp_path / "backup" / "dead-letters.sqlite3")

    target = settings_for(f"sqlite:///{tmp_path / 'new' / 'store.sqlite3'}", tmp_path / "new" / "dl.sqlite3")
    with pytest.raises(BackupError) as refused:
        restore(target, tmp_path / "backup")
    assert str(refused.value) == (
        f"{tmp_path / 'backup'}: dead-letters.sqlite3 does not match its SHA-256 in the manifest: "
        "the file is damaged, nothing was restored"
    )
    assert not (tmp_path / "new").exists()


def test_backup_refuses_a_directory_that_is_not_empty(tmp_path: Path, kystverket_path: Path) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as refused:
        backup(live, tmp_path / "taken")
    assert (
        str(refused.value) == f"PATH: {tmp_path / 'taken'} exists and is not an empty directory: back up into a new one"
    )
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]


def test_postgres_backup_restores_into_an_empty_database_and_refuses_a_full_one(
    tmp_path: Path, kystverket_path: Path, postgres_url: str, new_database: Callable[[], str]
) -> None:
    live = settings_for(postgres_url, tmp_path / "live" / "dl.sqlite3")
    check_database(postgres_url, timeout_s=10)
    sink = SqlSink(postgres_url)
    for batch in decoded_batches(kystverket_path):
        sink.write(batch)
    sink.close()
    manifest = backup(live, tmp_path / "backup")
    assert manifest["journal"] is None  # this deployment never journaled anything
    assert manifest["counts"]["tables"] == {
        **table_rows(postgres_url),
        "breakwater_schema": 1,
        "breakwater_settings": 0,
    }

    target = new_database()
    check_database(target, timeout_s=10)  # an empty schema, as an ingest job's start leaves it, is empty
    restored = settings_for(target, tmp_path / "restored" / "dl.sqlite3")
    restore(restored, tmp_path / "backup")
    assert table_rows(target) == table_rows(postgres_url)
    assert sql_latest(target) == sql_latest(postgres_url)
    with pytest.raises(Exception, match="the store is not empty"):
        restore(restored, tmp_path / "backup")
