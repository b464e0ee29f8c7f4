"""The production stores: PostgreSQL and Redis, beside the embedded SQLite, chosen by URL.

One parametrized suite runs the same conservation and idempotence checks over every store
combination; the rest checks what only one store does: Redis's newer-wins script under a
race, its geo queries, key prefixes; PostgreSQL's schema upgrade and soft delete.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, func, select, text

from breakwater.decode import BatchDecoder
from breakwater.framing import Reader
from breakwater.reports import ReportBatch
from breakwater.stores import schema
from breakwater.stores.redis import RedisKeys, RedisQueries, RedisSink
from breakwater.stores.sql import SqlSink
from tests.conftest import REDIS_URL, read_lines
from tests.integration.conftest import Job
from tests.integration.test_ingest_embedded import independent_tracks

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Written again here, not imported: the test checks Breakwater's answers independently."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def decoded_batches(path: Path, batch_lines: int = 400) -> list[ReportBatch]:
    reader, decoder = Reader(path.name, max_lines=batch_lines), BatchDecoder(1)
    batches = [b for line in read_lines(path) if (b := reader.feed(line))]
    if (last := reader.close()) is not None:
        batches.append(last)
    return [decoder.decode(b).shards[0] for b in batches]


def sql_rows(url: str) -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        n = sum(
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (schema.positions, schema.static_reports, schema.other_messages)
        )
    engine.dispose()
    return n


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+redis", "sqlite+redis"])
def store_job(request: pytest.FixtureRequest, make_job: Any, sqlite_url: str) -> Job:
    database, _, with_redis = request.param.partition("+")
    url = sqlite_url if database == "sqlite" else request.getfixturevalue("postgres_url")
    if with_redis:
        return make_job(url, REDIS_URL, request.getfixturevalue("redis_prefix"))  # type: ignore[no-any-return]
    return make_job(url)  # type: ignore[no-any-return]


def test_every_store_adds_up_and_is_idempotent(store_job: Job, amsa_path: Path, kystverket_path: Path) -> None:
    first = store_job.ingest(kystverket_path, amsa_path)
    rows = sql_rows(store_job.database_url)
    # Re-ingest the capture whose every line carries its receive time: nothing may change.
    # (Lines without one are stamped with the ingest time, so a second ingest of the AMSA
    # capture records them again as new observations: see the README, "Receive times".)
    second = store_job.ingest(kystverket_path)
    for summary in (first, second):
        assert summary["ok"], summary["errors"]
        for sink in summary["sinks"].values():
            assert sink["written"] + sink["duplicates"] + sink["dead_letter_queue"] == sink["received"]
            assert sink["dead_letter_queue"] == 0
    assert first["sinks"]["db"]["written"] == rows
    assert second["sinks"]["db"]["written"] == 0
    assert sql_rows(store_job.database_url) == rows
    if store_job.redis_url:
        r1, r2 = first["sinks"]["redis"], second["sinks"]["redis"]
        assert r1["received"] == first["reports"]["position"] + first["reports"]["static"]
        assert r2["written"] == 0 and r2["duplicates"] == r2["received"]
        # The live picture in Redis agrees with the SQL latest state, vessel by vessel.
        settings = store_job.settings()
        live = RedisQueries(settings.redis_url, prefix=settings.redis_prefix)
        from breakwater.stores.sql_queries import SqlQueries

        sql = SqlQueries(settings.database_url)
        for mmsi in list(independent_tracks(kystverket_path))[:40]:
            a, b = live.latest(mmsi), sql.latest(mmsi)
            assert a is not None and b is not None
            assert (a.received_at, a.lat, a.lon, a.sog_kn) == (b.received_at, b.lat, b.lon, b.sog_kn)
        live.close()
        sql.close()


def test_newer_wins_in_redis_when_two_writers_race(redis_prefix: str) -> None:
    """Two writers send the same vessel's history in opposite orders, many times over: the
    script must leave the newest position whichever write lands last."""
    mmsi = 257000123
    start = 1_600_000_000_000
    rows = [
        (mmsi, start + i * 1000, i, 1, 59.0 + i / 1000, 10.0, 5.0, 90.0, 90, 0, 0.0, None, "tag_block", None)
        for i in range(200)
    ]
    writers = [RedisSink(REDIS_URL, prefix=redis_prefix) for _ in range(2)]

    def send(sink: RedisSink, order: list[tuple[Any, ...]]) -> None:
        for row in order:
            sink.write(ReportBatch("race", 0, positions=[row]))

    threads = [
        threading.Thread(target=send, args=(writers[0], rows)),
        threading.Thread(target=send, args=(writers[1], rows[::-1])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = redis.Redis.from_url(REDIS_URL, decode_responses=True).hgetall(RedisKeys(redis_prefix).vessel(mmsi))
    assert int(state["pos_ms"]) == rows[-1][1]
    assert float(state["lat"]) == rows[-1][4]
    # and a late retry of an old report changes nothing
    assert writers[0].write(ReportBatch("retry", 0, positions=[rows[3]])).written == 0


def test_two_prefixes_share_one_redis_without_touching_each_other(
    kystverket_path: Path, make_job: Any, sqlite_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prod, staging = "prodtest:", "stagingtest:"
    for prefix in (prod, staging):
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    batches = decoded_batches(kystverket_path)
    RedisSink(REDIS_URL, prefix=prod).write(batches[0])
    RedisSink(REDIS_URL, prefix=staging).write(batches[1])
    prod_keys, staging_keys = set(client.scan_iter(f"{prod}*")), set(client.scan_iter(f"{staging}*"))
    try:
        assert prod_keys and staging_keys and not prod_keys & staging_keys
        vessel = batches[0].positions[0][0]
        assert RedisQueries(REDIS_URL, prefix=prod).latest(vessel) is not None
        assert RedisQueries(REDIS_URL, prefix=staging).latest(vessel) is None or vessel in {
            r[0] for r in batches[1].positions
        }
    finally:
        client.delete(*prod_keys, *staging_keys)


def test_keys_a_script_touches_share_one_cluster_slot() -> None:
    from redis.crc import key_slot

    keys = RedisKeys("prod:", buckets=16)
    for mmsi in (257742000, 503581800, 2573535, 995031029):
        bucket = keys.bucket(mmsi)
        assert key_slot(keys.vessel(mmsi).encode()) == key_slot(keys.geo(bucket).encode())
    slots = {key_slot(keys.geo(b).encode()) for b in range(16)}
    assert len(slots) == 16  # buckets spread over the cluster


def test_geo_queries_match_distances_computed_here(
    make_job: Any, sqlite_url: str, redis_prefix: str, kystverket_path: Path
) -> None:
    job = make_job(sqlite_url, REDIS_URL, redis_prefix)
    job.ingest(kystverket_path)
    latest = {m: p[-1] for m, p in independent_tracks(kystverket_path).items() if p[-1][2] is not None}
    centre, radius = (59.9, 10.7), 60.0  # Oslofjord
    distances = {m: haversine_km(*centre, p[2], p[3]) for m, p in latest.items()}
    must = {m for m, d in distances.items() if d < radius * 0.995}
    may = {m for m, d in distances.items() if d <= radius * 1.005}  # Redis's own earth radius and geohash
    assert must, "the capture has vessels near Oslo"
    with job.client() as client:
        found = client.nearby(*centre, radius_km=radius, limit=10_000)
        assert must <= {s.mmsi for s in found} <= may
        for state in found:
            assert state.distance_km == pytest.approx(distances[state.mmsi], rel=0.005)
        assert [s.distance_km for s in found] == sorted(s.distance_km for s in found)
        south, west, north, east = 59.0, 10.0, 60.0, 11.0
        boxed = {s.mmsi for s in client.in_box(south, west, north, east)}
        assert boxed == {m for m, p in latest.items() if south <= p[2] <= north and west <= p[3] <= east}
    sql_job = make_job(sqlite_url)  # the same query answered by SQL alone
    with sql_job.client() as client:
        assert must <= {s.mmsi for s in client.nearby(*centre, radius_km=radius, limit=10_000)} <= may


def test_capped_update_stream(redis_prefix: str, kystverket_path: Path) -> None:
    sink = RedisSink(REDIS_URL, prefix=redis_prefix, stream_maxlen=50)
    for batch in decoded_batches(kystverket_path):
        sink.write(batch)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    length = client.xlen(RedisKeys(redis_prefix).updates)
    assert 50 <= length < 200  # MAXLEN ~ trims in whole macro-nodes
    newest = client.xrevrange(RedisKeys(redis_prefix).updates, count=1)[0][1]
    assert int(newest["mmsi"]) > 0


def test_soft_delete_restore_and_purge(
    make_job: Any, postgres_url: str, redis_prefix: str, kystverket_path: Path
) -> None:
    job = make_job(postgres_url, REDIS_URL, redis_prefix)
    job.ingest(kystverket_path)
    tracks = independent_tracks(kystverket_path)
    mmsi = max(tracks, key=lambda m: len(tracks[m]))
    lat, lon = tracks[mmsi][-1][2], tracks[mmsi][-1][3]
    # The caller's own settings never decide: the store holds the deployment's token.
    settings = job.settings().model_copy(update={"admin_token": "t0ken"})
    from breakwater import AdminAuthError, Client, NotFoundError

    with Client(settings) as client, pytest.raises(AdminAuthError, match="has none"):
        client.delete_vessel(mmsi, admin_token="t0ken")
    job.ingest(kystverket_path, extra=("--set", "admin_token=t0ken"))  # the deployment's token
    with Client(job.settings()) as client:
        with pytest.raises(AdminAuthError, match="wrong"):
            client.delete_vessel(mmsi, admin_token="wrong")
        with pytest.raises(NotFoundError, match="111111111"):
            client.delete_vessel(111111111, admin_token="t0ken")
        assert client.delete_vessel(mmsi, admin_token="t0ken")
        assert not client.delete_vessel(mmsi, admin_token="t0ken")  # hidden already
        assert client.latest(mmsi) is None and client.track(mmsi) == [] and client.vessel(mmsi) is None
        assert mmsi not in {s.mmsi for s in client.nearby(lat, lon, 1.0)}
        assert client.counts().deleted_vessels == 1
        assert client.restore_vessel(mmsi, admin_token="t0ken")
        assert len(client.track(mmsi)) == len(tracks[mmsi])
        assert client.latest(mmsi) is not None
        client.delete_vessel(mmsi, admin_token="t0ken")
        with pytest.raises(ValueError, match="confirm"):
            client.purge_deleted(confirm=False, admin_token="t0ken")
        removed = client.purge_deleted(confirm=True, admin_token="t0ken")
        assert removed["positions"] == len(tracks[mmsi])
        assert removed["redis_vessels"] == 1
        assert client.counts().deleted_vessels == 0
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM positions WHERE mmsi = %s", (mmsi,)).fetchone() == (0,)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_schema_upgrade_from_the_previous_version_keeps_every_row(
    database: str, request: pytest.FixtureRequest, sqlite_url: str, kystverket_path: Path
) -> None:
    from breakwater.stores.engine import make_engine

    url = sqlite_url if database == "sqlite" else request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    assert schema.migrate(engine, target=1) == (0, 1)
    v1 = schema.define_tables(v1_meta := __import__("sqlalchemy").MetaData(), 1)
    assert "deleted_at" not in v1["vessels"].c and v1_meta is not None
    rows = [
        {
            "mmsi": 257000000 + i,
            "received_at": 1_565_218_798_000 + i,
            "digest": i,
            "msg_type": 1,
            "lat": 59.0,
            "lon": 10.0,
        }
        for i in range(100)
    ]
    with engine.begin() as conn:
        conn.execute(v1["positions"].insert(), rows)
        conn.execute(v1["vessels"].insert(), [{"mmsi": 257000001, "name": "OLD ROW"}])
    latest = schema.LATEST_VERSION
    assert schema.migrate(engine) == (1, latest)
    assert schema.migrate(engine) == (latest, latest)  # a second start changes nothing
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.positions)).scalar_one() == 100
        vessel = conn.execute(select(schema.vessels)).mappings().one()
        assert vessel["name"] == "OLD ROW" and vessel["deleted_at"] is None
        assert conn.execute(text("SELECT version FROM breakwater_schema")).scalar_one() == latest
        assert conn.execute(select(func.count()).select_from(schema.deployment_settings)).scalar_one() == 0
    # and the upgraded database takes writes
    sink = SqlSink(url, engine=engine)
    assert sink.write(decoded_batches(kystverket_path)[0]).written > 0
    engine.dispose()


@pytest.mark.parametrize(
    ("flag", "value", "setting"),
    [
        ("--redis-url", "redis://127.0.0.1:1/0", "BREAKWATER_REDIS_URL (--redis-url)"),
        ("--database-url", "postgresql://postgres:s3cret@127.0.0.1:1/x", "BREAKWATER_DATABASE_URL (--database-url)"),
        ("--redis-url", "redis//no-scheme", "BREAKWATER_REDIS_URL (--redis-url)"),
    ],
)
def test_an_unreachable_or_malformed_store_stops_the_job_with_one_line(
    flag: str, value: str, setting: str, kystverket_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.ingest import main

    args = [str(kystverket_path), "--database-url", sqlite_url, flag, value, "--metrics-port", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"breakwater: {setting}: ")
    assert len(err.splitlines()) == 1
    assert "s3cret" not in err


def test_sqlite_and_postgresql_derive_the_same_vessels_and_latest_state(
    postgres_url: str, sqlite_url: str, kystverket_path: Path, amsa_path: Path
) -> None:
    """The two write paths (executemany upserts on SQLite, set-based statements from the
    staging tables on PostgreSQL) must agree row for row."""
    from breakwater.stores.engine import check_database

    batches = decoded_batches(kystverket_path, 300) + decoded_batches(amsa_path, 3000)
    tables: dict[str, dict[str, list[Any]]] = {}
    for url in (sqlite_url, postgres_url):
        check_database(url, timeout_s=5)
        sink = SqlSink(url)
        for batch in batches:
            sink.write(batch)
        with sink.engine.connect() as conn:
            tables[url] = {
                "vessels": sorted(
                    tuple(r) for r in conn.execute(select(schema.vessels).order_by(schema.vessels.c.mmsi))
                ),
                "latest": sorted(tuple(r) for r in conn.execute(select(schema.latest_positions))),
            }
        sink.close()
    assert len(tables[sqlite_url]["vessels"]) > 1000
    assert tables[sqlite_url] == tables[postgres_url]


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[str]:
    """A real three-shard Redis Cluster on loopback ports, started and stopped by the test."""
    import shutil
    import subprocess

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed for the Redis Cluster test")
    ports = _cluster_ports(3)
    pidfiles = []
    for port in ports:
        folder = tmp_path / f"redis-{port}"
        folder.mkdir()
        pidfiles.append(folder / "redis.pid")
        subprocess.run(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder), "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(pidfiles[-1])],
            check=True,
        )  # fmt: skip
    try:
        for port in ports:
            _wait_for_redis(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, capture_output=True,
        )  # fmt: skip
        _wait_for_cluster_ok(ports[0])
        yield f"redis://127.0.0.1:{ports[0]}/0?cluster=true"
    finally:
        for pidfile in pidfiles:
            if pidfile.exists():
                __import__("os").kill(int(pidfile.read_text()), 15)


def _cluster_ports(n: int) -> list[int]:
    """Free ports whose cluster-bus twin (port + 10000) is free too; Redis wants port <= 55535."""
    import random
    import socket

    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20_000, 45_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        if port not in ports:
            ports.append(port)
    return ports


def _wait_for_redis(port: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(host="127.0.0.1", port=port).ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    pytest.fail(f"redis-server on port {port} did not start")


def _wait_for_cluster_ok(port: int) -> None:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = redis.Redis(host="127.0.0.1", port=port, decode_responses=True).execute_command("CLUSTER INFO")
        if info.get("cluster_state") == "ok":  # redis-py parses the reply into a dict
            return
        time.sleep(0.05)
    pytest.fail("the Redis Cluster did not reach cluster_state:ok")


def test_the_same_code_runs_on_a_redis_cluster(
    make_job: Any, sqlite_url: str, redis_cluster: str, kystverket_path: Path
) -> None:
    job = make_job(sqlite_url, redis_cluster, "prod:")
    first = job.ingest(kystverket_path)
    second = job.ingest(kystverket_path)
    assert first["ok"] and second["ok"]
    live = first["sinks"]["redis"]
    assert live["written"] + live["duplicates"] == live["received"] == 876
    assert second["sinks"]["redis"]["written"] == 0
    settings = job.settings()
    cluster = RedisQueries(settings.redis_url, prefix=settings.redis_prefix)
    from breakwater.stores.sql_queries import SqlQueries

    sql = SqlQueries(settings.database_url)
    for mmsi in list(independent_tracks(kystverket_path))[:50]:
        a, b = cluster.latest(mmsi), sql.latest(mmsi)
        assert a is not None and b is not None and (a.received_at, a.lat, a.lon) == (b.received_at, b.lat, b.lon)
    assert cluster.vessel_count() == sum(
        1 for s in [sql.latest(m) for m in independent_tracks(kystverket_path)] if s and s.lat is not None
    )
    near = {s.mmsi for s in cluster.nearby(59.9, 10.7, 60.0, 10_000)}
    assert near and near <= {s.mmsi for s in sql.nearby(59.9, 10.7, 60.3, 10_000)}
    cluster.close()
    sql.close()


# -- the write model's regressions (issue 10): every store, the same answer ----------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_sink(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[SqlSink]:
    from breakwater.stores.engine import check_database

    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    check_database(url, timeout_s=5)
    sink = SqlSink(url)
    yield sink
    sink.close()


def _static(ms: int, msg_type: int = 5, **values: Any) -> tuple[Any, ...]:
    from breakwater.write_model import STATIC_VALUE_FIELDS

    return (257000001, ms, ms // 1000, msg_type, *(values.get(f) for f in STATIC_VALUE_FIELDS), None, "tag_block", None)


def _position(mmsi: int, ms: int, lat: float | None, lon: float | None) -> tuple[Any, ...]:
    return (mmsi, ms, ms // 1000, 1, lat, lon, 5.0, 90.0, 90, 0, 0.0, None, "tag_block", None)


def test_an_older_static_report_never_sets_a_field_back(sql_sink: SqlSink, redis_prefix: str) -> None:
    """Stored destination OSLO at t=10; a batch with BERGEN at t=5 and a type 24B at t=12:
    the SQL merge used to judge the whole batch by its newest time and leave BERGEN."""
    t = 1_600_000_000_000
    first = ReportBatch("a", 0, statics=[_static(t + 10_000, destination="OSLO")])
    second = ReportBatch(
        "b", 0, statics=[_static(t + 5_000, destination="BERGEN"), _static(t + 12_000, 24, callsign="LAXA")]
    )
    redis_sink = RedisSink(REDIS_URL, prefix=redis_prefix)
    for batch in (first, second):
        sql_sink.write(batch)
        redis_sink.write(batch)
    with sql_sink.engine.connect() as conn:
        row = conn.execute(select(schema.vessels).where(schema.vessels.c.mmsi == 257000001)).mappings().one()
    assert (row["destination"], row["callsign"], row["static_received_at"].timestamp()) == (
        "OSLO",
        "LAXA",
        (t + 12_000) / 1000,
    )
    live = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    assert live.hmget(redis_sink.keys.vessel(257000001), "destination", "callsign", "static_ms") == [
        "OSLO",
        "LAXA",
        str(t + 12_000),
    ]
    live.close()
    redis_sink.close()


def test_a_newer_report_without_a_position_keeps_the_known_one(sql_sink: SqlSink, redis_prefix: str) -> None:
    t = 1_600_000_000_000
    redis_sink = RedisSink(REDIS_URL, prefix=redis_prefix)
    known = ReportBatch("a", 0, positions=[_position(257000001, t, 59.9, 10.7)])
    missing = ReportBatch("b", 0, positions=[_position(257000001, t + 60_000, None, None)])
    for batch in (known, missing):
        sql_sink.write(batch)
        redis_sink.write(batch)
    from breakwater.stores.sql_queries import SqlQueries

    sql = SqlQueries("", engine=sql_sink.engine)
    live = RedisQueries(REDIS_URL, prefix=redis_prefix)
    for state in (sql.latest(257000001), live.latest(257000001)):
        assert state is not None
        assert (state.received_at.timestamp(), state.lat, state.lon) == (t / 1000, 59.9, 10.7)  # type: ignore[union-attr]
    with sql_sink.engine.connect() as conn:  # the report itself is history
        assert conn.execute(select(func.count()).select_from(schema.positions)).scalar_one() == 2
    live.close()
    redis_sink.close()


def test_a_polar_position_is_kept_counted_and_answered_from_sql(
    postgres_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """GEOADD refuses |lat| > 85.05112878: the script used to fail after writing the hash,
    and `breakwater nearby 87.065 154.2` raised ResponseError."""
    from breakwater.client import Client
    from breakwater.stores.engine import check_database

    check_database(postgres_url, timeout_s=5)
    t = 1_600_000_000_000
    batch = ReportBatch(
        "polar", 0, positions=[_position(257000001, t, 87.065, 154.2), _position(257000002, t, 84.0, 154.2)]
    )
    sql_sink, redis_sink = SqlSink(postgres_url), RedisSink(REDIS_URL, prefix=redis_prefix)
    sql_sink.write(batch)
    assert redis_sink.write(batch).written == 2
    assert redis_sink.off_geo_positions == 1
    keys = redis_sink.keys
    live = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    assert live.hget(keys.vessel(257000001), "lat") == "87.065"
    assert live.zscore(keys.geo(keys.bucket(257000001)), "257000001") is None
    assert live.smembers(keys.off_geo(keys.bucket(257000001))) == {"257000001"}
    with Client(database_url=postgres_url, redis_url=REDIS_URL, redis_prefix=redis_prefix) as client:
        assert [s.mmsi for s in client.nearby(87.065, 154.2, 10)] == [257000001]
        assert [s.mmsi for s in client.nearby(84.0, 154.2, 10)] == [257000002]  # from Redis
        assert [s.mmsi for s in client.in_box(80.0, 150.0, 88.0, 160.0)] == [257000001, 257000002]
        assert client.latest(257000001).lat == 87.065  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="SQL store"):
            client.redis.nearby(87.065, 154.2, 10)  # type: ignore[union-attr]
    from breakwater.cli import main

    stores = ["--database-url", postgres_url, "--redis-url", REDIS_URL, "--redis-prefix", redis_prefix]
    capsys.readouterr()
    assert main([*stores, "nearby", "87.065", "154.2"]) == 0  # the command; it raised ResponseError
    assert "257000001" in capsys.readouterr().out
    # A later position inside GEO's latitudes puts the vessel back in the index.
    redis_sink.write(ReportBatch("polar", 0, positions=[_position(257000001, t + 1000, 80.0, 154.2)]))
    assert live.zscore(keys.geo(keys.bucket(257000001)), "257000001") is not None
    assert live.smembers(keys.off_geo(keys.bucket(257000001))) == set()
    live.close()
    redis_sink.close()
    sql_sink.close()
