"""Every store ends where the reference write model ends, field by field.

Hypothesis draws reports (tests/unit/test_write_model.py), delivers them shuffled, partly
twice, cut into batches, and makes some batches fail part-way before they are retried later:
SQLite and PostgreSQL get a poison row (msg_type NULL breaks a NOT NULL constraint, so the
whole transaction is refused), Redis gets an update for a vessel whose key holds a string
(WRONGTYPE inside the script: the buckets and updates before it are applied, the rest not,
as when a pipeline dies half-way). The retry sends the batch without the poison. The writes
go through `SqlSink` and `RedisSink` themselves, no Ray; one database or key prefix per test,
emptied before each example.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from breakwater.errors import StoreError
from breakwater.reports import ReportBatch
from breakwater.stores import schema
from breakwater.stores.engine import check_database
from breakwater.stores.redis import RedisKeys, RedisSink
from breakwater.stores.sql import SqlSink
from breakwater.write_model import LATEST_FIELDS, STATIC_VALUE_FIELDS, WriteModel
from tests.conftest import REDIS_URL
from tests.unit.test_write_model import BASE_MS, MMSIS, batch_of, flags, reports

BUCKETS = 2  # few buckets: a failing bucket shares its script call with real updates
SOURCE = "generated"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[tuple[str, Any]], list[tuple[list[tuple[str, Any]], int | None]]]:
    """(every delivery of a report, the batches as delivered: each with the index at which a
    failing first attempt carries its poison, or None when the first attempt succeeds). A
    report delivered again may be judged differently (flagged once, plausible once)."""
    items = draw(st.lists(reports, min_size=1, max_size=24))
    again = [(kind, (*row[:-1], draw(flags))) for kind, row in draw(st.lists(st.sampled_from(items), max_size=6))]
    shuffled = draw(st.permutations(items + again))
    cuts = sorted(draw(st.lists(st.integers(0, len(shuffled)), max_size=4)))
    pieces = [p for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True) if (p := shuffled[a:b])]
    return items + again, [(p, draw(st.one_of(st.none(), st.integers(0, len(p))))) for p in pieces]


def run_schedule(
    write: Any, poisoned: Any, batches: list[tuple[list[tuple[str, Any]], int | None]], retry_after: int = 2
) -> None:
    """Write each batch; a failing one is retried `retry_after` batches later (or at the end)."""
    pending: list[tuple[int, ReportBatch]] = []
    for step, (items, poison_at) in enumerate(batches):
        batch = batch_of(items, SOURCE)
        if poison_at is None:
            write(batch)
        else:
            with pytest.raises(StoreError):
                write(poisoned(items, poison_at))
            pending.append((step + retry_after, batch))
        for due, retry in [p for p in pending if p[0] <= step]:
            write(retry)
            pending.remove((due, retry))
    for _, retry in pending:
        write(retry)


def expected(items: list[tuple[str, Any]]) -> WriteModel:
    model = WriteModel()
    model.apply(batch_of(items, SOURCE))
    return model


# -- SQL ------------------------------------------------------------------------------------------


def _ms(value: datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * 1000)


def sql_state(sink: SqlSink) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    lp, v = schema.latest_positions, schema.vessels
    with sink.engine.connect() as conn:
        latest = {}
        for row in conn.execute(select(lp)).mappings():
            values = {f: row[f] for f in LATEST_FIELDS if f != "received_ms"}
            latest[row["mmsi"]] = {**values, "received_ms": _ms(row["received_at"]), "source": row["source"]}
        vessels = {
            row["mmsi"]: {
                **{f: row[f] for f in STATIC_VALUE_FIELDS},
                "static_received_ms": _ms(row["static_received_at"]),
            }
            for row in conn.execute(select(v)).mappings()
        }
    return latest, vessels


def sql_flags(sink: SqlSink) -> dict[tuple[str, int, int, int], str | None]:
    """Every history row's flag, by kind and identity."""
    out = {}
    with sink.engine.connect() as conn:
        for kind, table in (("p", schema.positions), ("s", schema.static_reports)):
            for row in conn.execute(select(table.c.mmsi, table.c.received_at, table.c.digest, table.c.flag)):
                out[(kind, row.mmsi, _ms(row.received_at), row.digest)] = row.flag
    return out


def expected_flags(deliveries: list[tuple[str, Any]]) -> dict[tuple[str, int, int, int], str | None]:
    """A report is flagged in the history only if every delivery of it was (rule 4)."""
    out: dict[tuple[str, int, int, int], str | None] = {}
    for kind, row in deliveries:
        key = (kind, row[0], row[1], row[2])
        if key not in out or row[-1] is None:
            out[key] = row[-1]
    return out


def sql_poisoned(items: list[tuple[str, Any]], at: int) -> ReportBatch:
    """The batch with a position row the history refuses (msg_type NULL): nothing lands."""
    poison = ("p", (MMSIS[0], BASE_MS + 500, 1, None, 59.0, 10.0, *([None] * 6), "tag_block", None))
    return batch_of([*items[:at], poison, *items[at:]], SOURCE)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_sink(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[SqlSink]:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    check_database(url, timeout_s=5)
    sink = SqlSink(url)
    yield sink
    sink.close()


def clear_sql(sink: SqlSink) -> None:
    with sink.engine.begin() as conn:
        for table in (schema.positions, schema.static_reports, schema.other_messages, schema.latest_positions):
            conn.execute(delete(table))
        conn.execute(delete(schema.vessels))


def test_sql_stores_equal_the_reference_model(sql_sink: SqlSink) -> None:
    @PROPERTY
    @given(case=deliveries())
    def check(case: Any) -> None:
        items, batches = case
        clear_sql(sql_sink)
        run_schedule(sql_sink.write, sql_poisoned, batches)
        model = expected(items)
        latest, vessels = sql_state(sql_sink)
        assert latest == model.latest_rows()
        assert vessels == model.vessel_rows()
        flags = sql_flags(sql_sink)
        assert {k: v is None for k, v in flags.items()} == {k: v is None for k, v in expected_flags(items).items()}

    check()


# -- Redis ----------------------------------------------------------------------------------------


def _poison_mmsis(keys: RedisKeys) -> dict[int, int]:
    """For each bucket, an MMSI no generated report uses."""
    found: dict[int, int] = {}
    mmsi = 999_000_000
    while len(found) < keys.buckets:
        found.setdefault(keys.bucket(mmsi), mmsi)
        mmsi += 1
    return found


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def redis_state(client: Any, keys: RedisKeys) -> dict[str, Any]:
    latest, vessels = {}, {}
    for key in client.scan_iter(keys.pattern(), count=1000):
        data = client.hgetall(key)
        mmsi = int(data["mmsi"])
        if "pos_ms" in data:
            latest[mmsi] = {
                **{f: data.get(f) for f in LATEST_FIELDS[3:]},
                "mmsi": data["mmsi"],
                "received_ms": data["pos_ms"],
                "digest": data["pos_digest"],
                "source": data.get("source"),
            }
        if "static_ms" in data:
            vessels[mmsi] = {
                **{f: data.get(f) for f in STATIC_VALUE_FIELDS},
                "static_received_ms": data["static_ms"],
                "stamps": {k: v for k, v in data.items() if k.startswith("t:")},
            }
    geo = {int(m) for b in range(keys.buckets) for m in client.zrange(keys.geo(b), 0, -1)}
    off_geo = {int(m) for b in range(keys.buckets) for m in client.smembers(keys.off_geo(b))}
    return {"latest": latest, "vessels": vessels, "geo": geo, "off_geo": off_geo}


def model_as_redis(model: WriteModel) -> dict[str, Any]:
    """The model as the hash holds it: strings, and no field for a value never carried."""
    latest = {m: {f: _text(v) for f, v in row.items()} for m, row in model.latest_rows().items()}
    vessels: dict[int, dict[str, Any]] = {
        m: {f: (None if v is None else str(v)) for f, v in row.items()} for m, row in model.vessel_rows().items()
    }
    for mmsi, statics in model.statics.items():
        # A field set by a report other than the newest static one keeps that report's stamp.
        vessels[mmsi]["stamps"] = {
            f"t:{name}": f"{field.order[0]}:{field.order[1]}"
            for name, field in statics.fields.items()
            if field.order != statics.newest
        }
    return {
        "latest": latest,
        "vessels": vessels,
        "geo": set(latest) - model.off_geo_index(),
        "off_geo": model.off_geo_index(),
    }


def test_the_redis_script_equals_the_reference_model(redis_prefix: str) -> None:
    sink = RedisSink(REDIS_URL, prefix=redis_prefix, buckets=BUCKETS)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    poison_mmsis = _poison_mmsis(sink.keys)

    def poisoned(items: list[tuple[str, Any]], at: int) -> ReportBatch:
        # A static update for a vessel whose key is a string: the script stops there.
        bucket = sink.keys.bucket(items[min(at, len(items) - 1)][1][0])
        poison = ("s", (poison_mmsis[bucket], BASE_MS + 3500, 1, 5, *([None] * 10), "OSLO", None, "tag_block", None))
        return batch_of([*items[:at], poison, *items[at:]], SOURCE)

    @PROPERTY
    @given(case=deliveries())
    def check(case: Any) -> None:
        items, batches = case
        stale = list(client.scan_iter(f"{redis_prefix}*", count=1000))
        if stale:
            client.delete(*stale)
        for mmsi in poison_mmsis.values():
            client.set(sink.keys.vessel(mmsi), "not a hash")
        run_schedule(sink.write, poisoned, batches)
        for mmsi in poison_mmsis.values():
            client.delete(sink.keys.vessel(mmsi))
        assert redis_state(client, sink.keys) == model_as_redis(expected(items))

    try:
        check()
    finally:
        sink.close()
        client.close()


# -- exhaustively: every arrival order of a few static reports of one vessel ---------------------


def _static(ms_s: int, digest: int, **values: Any) -> tuple[str, tuple[Any, ...]]:
    row = (MMSIS[0], BASE_MS + ms_s * 1000, digest, 5, *(values.get(f) for f in STATIC_VALUE_FIELDS), None, "tag_block")
    row = (*row, None)
    return ("s", row)


# Fields set, superseded, set again by a newer report, and offered again by older ones; a tie.
FIVE_STATICS = [
    _static(1, 11, destination="OSLO", name="NORNE"),
    _static(2, 22, callsign="LAXA"),
    _static(5, 55, destination="BERGEN"),
    _static(3, 33, destination="TROMSO", name="SKARV"),
    _static(3, 34, name="HEIDRUN", callsign="LBXB"),
]


def test_every_order_of_five_static_reports_ends_where_the_model_does(sql_sink: SqlSink, redis_prefix: str) -> None:
    import itertools

    redis_sink = RedisSink(REDIS_URL, prefix=redis_prefix, buckets=BUCKETS)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    want = expected(FIVE_STATICS)
    assert want.vessel_rows()[MMSIS[0]]["destination"] == "BERGEN"
    for order in itertools.permutations(FIVE_STATICS):
        clear_sql(sql_sink)
        stale = list(client.scan_iter(f"{redis_prefix}*", count=1000))
        if stale:
            client.delete(*stale)
        for item in order:
            sql_sink.write(batch_of([item], SOURCE))
            redis_sink.write(batch_of([item], SOURCE))
        assert sql_state(sql_sink)[1] == want.vessel_rows(), order
        assert redis_state(client, redis_sink.keys)["vessels"] == model_as_redis(want)["vessels"], order
    redis_sink.close()
    client.close()


def test_a_concurrent_writer_of_the_same_vessel_waits_and_reads_the_newer_report(postgres_url: str) -> None:
    """An ingest writer and a drain may write one vessel at once. Each merge reads the
    history, so the second must see the first's report: without the per-vessel lock it merged
    from a snapshot taken before the first committed and set the destination back.

    A third connection holds the vessel's row, so both writers are caught mid-transaction
    (the first holding its new history row, the second with its merge started), then lets go."""
    import threading

    import psycopg

    from tests.integration.test_resilience import wait_until

    check_database(postgres_url, timeout_s=5)
    first = SqlSink(postgres_url)
    first.write(batch_of([_static(1, 11, destination="OSLO")], SOURCE))
    newer, older = _static(5, 55, destination="BERGEN"), _static(3, 33, destination="TROMSO")
    watcher = psycopg.connect(postgres_url, autocommit=True)

    def waiting() -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return int(watcher.execute(query).fetchone()[0])  # type: ignore[index]

    blocker = psycopg.connect(postgres_url)
    blocker.execute("SELECT 1 FROM vessels WHERE mmsi = %s FOR UPDATE", (MMSIS[0],))
    sinks = [SqlSink(postgres_url), SqlSink(postgres_url)]
    threads = [
        threading.Thread(target=sink.write, args=(batch_of([item], SOURCE),))
        for sink, item in zip(sinks, (newer, older), strict=True)
    ]
    threads[0].start()
    wait_until(lambda: waiting() == 1, 30, "the first writer to wait for the vessel's row")
    threads[1].start()
    wait_until(lambda: waiting() == 2, 30, "the second writer to wait")
    blocker.rollback()
    for thread in threads:
        thread.join()
    assert sql_state(first)[1][MMSIS[0]]["destination"] == "BERGEN"
    for closing in (blocker, watcher):
        closing.close()
    for sink in (first, *sinks):
        sink.close()
