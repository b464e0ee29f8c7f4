"""`breakwater rebuild-redis`: Redis's live picture rebuilt from the SQL store, with real
Ray, Redis and PostgreSQL.

Only the test's own key prefix is ever deleted (the Redis is shared): "losing Redis" here is
deleting every key of the deployment, which is what a FLUSHALL does to it.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg
import redis

from breakwater import accounting as acc
from breakwater.cli import main as cli_main
from breakwater.config import load_settings
from breakwater.decode import BatchDecoder
from breakwater.framing import Reader
from breakwater.rebuild import RebuildCounts, rebuild_redis
from breakwater.reports import ReportBatch
from breakwater.stores.engine import check_database
from breakwater.stores.redis import RedisKeys, RedisQueries, RedisSink
from breakwater.stores.sql import SqlSink
from breakwater.stores.sql_queries import SqlQueries
from breakwater.write_model import STATIC_VALUE_FIELDS
from tests.acceptance.shell import VENV_BIN, clean_env
from tests.conftest import REDIS_URL, read_lines
from tests.integration.test_resilience import (
    FAST,
    Feed,
    Running,
    assert_redis_matches_sql,
    drain_until_empty,
    processed,
    sql_latest,
    wait_until,
)
from tests.integration.test_stores import _position, decoded_batches
from tests.integration.test_write_model_stores import redis_state


def redis_keys(prefix: str) -> dict[str, Any]:
    """Every key of the deployment with its whole value: hashes field by field, the GEO
    indexes member by member with their geohash scores (the position), plain sets."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    held: dict[str, Any] = {}
    for key in client.scan_iter(f"{prefix}*", count=1000):
        kind = client.type(key)
        if kind == "hash":
            held[key] = client.hgetall(key)
        elif kind == "zset":
            held[key] = dict(client.zrange(key, 0, -1, withscores=True))
        elif kind == "set":
            held[key] = client.smembers(key)
        else:
            raise AssertionError(f"{key} is a {kind}: the rebuild does not know this key")
    client.close()
    return held


def lose_redis(prefix: str) -> int:
    """What a flush does to the deployment: every one of its keys gone (a running ingest
    may write new ones at once). Returns how many went."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


def sql_counts(postgres_url: str) -> tuple[int, int]:
    """(vessels with a latest position or a static report, vessels with a latest position)."""
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM (SELECT mmsi FROM latest_positions"
            " UNION SELECT mmsi FROM static_reports) v), (SELECT count(*) FROM latest_positions)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


POLAR_MMSI = 257999991


def _static_report(mmsi: int, ms: int, digest: int, **values: Any) -> tuple[Any, ...]:
    return (mmsi, ms, digest, 24, *(values.get(f) for f in STATIC_VALUE_FIELDS), None, "tag_block", None)


def stores_from_capture(postgres_url: str, prefix: str, capture: Path) -> None:
    """The capture written to PostgreSQL and Redis through the sinks the writers use, and one
    vessel beyond the latitudes Redis GEO holds (its place is the `off_geo` set)."""
    check_database(postgres_url, timeout_s=30)
    sql, live = SqlSink(postgres_url, timeout_s=30), RedisSink(REDIS_URL, prefix=prefix)
    t = 1_600_000_000_000
    # Class B static data comes in two parts, each with its own fields: both decide the hash.
    part_a = _static_report(POLAR_MMSI, t, 1, name="POLARIS")
    part_b = _static_report(POLAR_MMSI, t + 1, 2, callsign="LA1234")
    polar = ReportBatch("polar", 0, positions=[_position(POLAR_MMSI, t, 87.065, 154.2)], statics=[part_a, part_b])
    for batch in [*decoded_batches(capture), polar]:
        sql.write(batch)
        live.write(batch)
    sql.close()
    live.close()


def settings_for(postgres_url: str, prefix: str) -> Any:
    return load_settings({"database_url": postgres_url, "redis_url": REDIS_URL, "redis_prefix": prefix})


def test_a_rebuild_after_losing_redis_restores_every_key(
    make_job: Any, postgres_url: str, redis_prefix: str, amsa_path: Path
) -> None:
    job = make_job(postgres_url, REDIS_URL, redis_prefix)
    assert job.ingest(amsa_path)["ok"]
    held = redis_keys(redis_prefix)
    vessels, positioned = sql_counts(postgres_url)
    assert sum(":vessel:" in key for key in held) == vessels
    lose_redis(redis_prefix)
    assert redis_keys(redis_prefix) == {}

    counts = rebuild_redis(job.settings())

    assert redis_keys(redis_prefix) == held
    assert (counts.vessels, counts.positions_sent, counts.positions_applied) == (vessels, positioned, positioned)
    assert counts.statics_applied == counts.statics_sent > 0
    print(f"rebuild of the AMSA capture: {counts.as_dict()}")


def test_a_second_rebuild_changes_nothing(postgres_url: str, redis_prefix: str, kystverket_path: Path) -> None:
    stores_from_capture(postgres_url, redis_prefix, kystverket_path)
    settings = settings_for(postgres_url, redis_prefix)
    hidden = min(sql_latest(postgres_url))
    sql, live = SqlQueries(postgres_url), RedisQueries(REDIS_URL, prefix=redis_prefix)
    assert sql.delete_vessel(hidden)  # as `delete-vessel` does: SQL first, then Redis
    live.set_deleted(hidden, True)
    sql.close()
    live.close()
    held = redis_keys(redis_prefix)
    assert held[f"{redis_prefix}vessels:deleted"] == {str(hidden)}
    structured = redis_state(redis.Redis.from_url(REDIS_URL, decode_responses=True), RedisKeys(redis_prefix))
    assert structured["off_geo"] == {POLAR_MMSI}
    assert (structured["vessels"][POLAR_MMSI]["name"], structured["vessels"][POLAR_MMSI]["callsign"]) == (
        "POLARIS",
        "LA1234",
    )
    assert len(structured["geo"]) == sql_counts(postgres_url)[1] - 1

    on_a_full_redis = rebuild_redis(settings, chunk_vessels=7)
    lose_redis(redis_prefix)
    first = rebuild_redis(settings, chunk_vessels=7)
    second = rebuild_redis(settings, chunk_vessels=7)

    assert redis_keys(redis_prefix) == held
    assert first.positions_applied == first.positions_sent > 0
    assert first.statics_applied == first.statics_sent > 0
    assert first.deleted == 1
    for unchanged in (on_a_full_redis, second):
        assert (unchanged.positions_applied, unchanged.statics_applied) == (0, 0)
        assert (unchanged.vessels, unchanged.positions_sent, unchanged.statics_sent) == (
            first.vessels,
            first.positions_sent,
            first.statics_sent,
        )


def test_a_rebuild_while_ingesting_never_sets_a_vessel_back(
    make_job: Any, postgres_url: str, redis_prefix: str, amsa_path: Path
) -> None:
    """Redis is lost a third of the way into a live feed; the rebuild runs (in small chunks,
    so it takes a while) while the job goes on writing the next part; at the end Redis holds
    exactly SQL's latest state, as if it had never been lost."""
    job = make_job(postgres_url, REDIS_URL, redis_prefix)
    lines = read_lines(amsa_path)
    feed = Feed(lines)
    running = Running(job, feed.url, FAST)
    # Redis is lost between batches: a batch written to Redis before the loss and to SQL
    # only after the rebuild read its vessel would stay behind until its vessel's next
    # report (the README says to run the rebuild again when it started during an ingest).
    # Every batch is written when the job has counted each message sent so far.
    cut, messages = whole_messages_before(lines, len(lines) * 3 // 10)
    feed.send_until(cut)
    wait_until(lambda: processed(job) == messages, 180, f"the first {messages:,} messages written")
    assert lose_redis(redis_prefix) > 0
    rebuilt: list[RebuildCounts] = []
    rebuild = threading.Thread(target=lambda: rebuilt.append(rebuild_redis(job.settings(), chunk_vessels=20)))
    rebuild.start()
    feed.send(0.6)
    feed.close()
    rebuild.join(timeout=300)
    assert not rebuild.is_alive(), "the rebuild did not finish"
    summary = running.join()
    assert summary["ok"], summary["errors"]
    assert rebuilt and rebuilt[0].vessels > 0
    # A loaded machine can time a Redis write out: the queue writes it later, newer-wins.
    drain_until_empty(job)
    assert_redis_matches_sql(redis_prefix, postgres_url)


def whole_messages_before(lines: list[bytes], start: int) -> tuple[int, int]:
    """The first index at or after `start` where the lines before it hold whole messages
    only, and how many messages the job decodes from them."""
    decoder = BatchDecoder(1)
    for cut in range(start, start + 10):
        reader, decoded = Reader("feed", max_lines=len(lines)), 0
        batches = [b for line in lines[:cut] if (b := reader.feed(line))]
        if reader.pending_lines:
            continue
        if (last := reader.close()) is not None:
            batches.append(last)
        for batch in batches:
            decoded += decoder.decode(batch).counts[acc.MESSAGES_DECODED]
        return cut, decoded
    raise AssertionError(f"no message boundary within 10 lines of line {start}")


def test_the_command_as_a_user_runs_it(
    postgres_url: str, redis_prefix: str, kystverket_path: Path, tmp_path: Path
) -> None:
    stores_from_capture(postgres_url, redis_prefix, kystverket_path)
    held = redis_keys(redis_prefix)
    vessels, positioned = sql_counts(postgres_url)
    lose_redis(redis_prefix)
    stores = ["--database-url", postgres_url, "--redis-url", REDIS_URL, "--redis-prefix", redis_prefix]

    done = subprocess.run(
        [str(VENV_BIN / "breakwater"), *stores, "--json", "rebuild-redis"],
        cwd=tmp_path,
        env=clean_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["vessels"], printed["positions_applied"]) == (vessels, positioned)
    assert printed["statics_applied"] == printed["statics_sent"] > 0
    assert set(printed) >= {"seconds", "vessels_per_s", "deleted"}
    assert redis_keys(redis_prefix) == held
    # Without a Redis to rebuild, the command names the setting and exits 2.
    assert cli_main(["--database-url", postgres_url, "rebuild-redis"]) == 2
