"""Two receivers hearing the same ships: two TCP servers replay the Kystverket capture, each
under its own station name (tag block `s:`), the second with a clock one second ahead. Each
transmission is stored once, with both receivers; the second receiver's copies never move a
vessel's latest state, in SQL or in Redis."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from breakwater.stores import schema
from breakwater.stores.redis import RedisQueries
from breakwater.stores.sql_queries import SqlQueries
from jobs.bench.corpus import checksum
from tests.conftest import REDIS_URL, read_lines
from tests.integration.test_ingest_embedded import independent_tracks
from tests.integration.test_resilience import Feed, wait_until


def as_heard_by(line: bytes, station: str, clock_ahead_s: int) -> bytes:
    """The line as another receiver relays it: its station in the tag block, its receive
    time by that receiver's clock, the tag block's checksum made afresh."""
    tag, sentence = line[1:].split(b"\\", 1)
    fields = []
    for field in tag.split(b"*", 1)[0].split(b","):
        if field.startswith(b"c:"):
            field = b"c:%d" % (int(field[2:]) + clock_ahead_s)
        fields.append(field)
    body = b",".join([b"s:" + station.encode(), *fields])
    return b"\\%s*%s\\%s" % (body, checksum(body), sentence)


def count(url: str, table: Any, *where: Any) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
    engine.dispose()
    return int(n)


def test_two_receivers_copies_of_one_transmission_are_one_report_with_both_receivers(
    make_job: Any, postgres_url: str, redis_prefix: str, kystverket_path: Path
) -> None:
    lines = read_lines(kystverket_path)
    north = Feed([as_heard_by(line, "north", 0) for line in lines])
    south = Feed([as_heard_by(line, "south", 1) for line in lines])
    job = make_job(postgres_url, REDIS_URL, redis_prefix)
    summary: dict[str, Any] = {}
    running = threading.Thread(
        target=lambda: summary.update(
            job.ingest(north.url + "&name=feed-n", south.url + "&name=feed-s", extra=("--set", "flush_interval_ms=100"))
        ),
        daemon=True,
    )
    running.start()
    north.close()  # every line, then the end of that feed
    wait_until(lambda: count(postgres_url, schema.positions) == 748, 300, "the north receiver's reports stored")
    south.close()
    running.join(timeout=300)
    assert summary["ok"], summary["errors"]

    assert summary["reports"] == {"position": 2 * 748, "static": 2 * 128}
    assert summary["fused_copies"] == 876
    db, redis = summary["sinks"]["db"], summary["sinks"]["redis"]
    assert (db["received"], db["written"], db["duplicates"]) == (2 * 876, 2 * 876, 0)  # reports + receptions
    assert redis["received"] == redis["written"] + redis["duplicates"]
    assert count(postgres_url, schema.positions) == 748
    assert count(postgres_url, schema.receptions) == 876
    assert count(postgres_url, schema.receptions, schema.receptions.c.receiver == "south") == 876

    expected = independent_tracks(kystverket_path)  # the north receiver's times
    sql, live = SqlQueries(postgres_url), RedisQueries(REDIS_URL, prefix=redis_prefix)
    try:
        for mmsi, points in expected.items():
            track = sql.track(mmsi)
            assert [int(p.received_at.timestamp() * 1000) for p in track] == [t for t, *_ in points]
            assert all(p.receivers == ["north", "south"] for p in track), mmsi
            located = [p for p in points if p[2] is not None and p[3] is not None]
            for store in (sql, live) if located else ():
                state = store.latest(mmsi)
                assert state is not None
                assert int(state.received_at.timestamp() * 1000) == located[-1][0], (store, mmsi)
                # Provenance of the position part: the receiver and source of the stored copy.
                assert (state.station, state.source) == ("north", "feed-n"), (store, mmsi)
        # ... and of each static field: the report it came from, heard by north.
        engine = create_engine(postgres_url)
        with engine.connect() as conn:
            v = schema.vessels
            with_statics = conn.execute(select(v.c.mmsi).where(v.c.static_received_at.is_not(None))).scalars().all()
        engine.dispose()
        assert len(with_statics) > 50
        statics = [sql.vessel(m) for m in with_statics]
        assert all(v is not None and v.origins for v in statics)
        for vessel in statics:
            assert vessel is not None and vessel.static_received_at is not None
            for field, origin in vessel.origins.items():
                assert getattr(vessel, field) is not None
                assert (origin.station, origin.source) == ("north", "feed-n")
                assert origin.received_at <= vessel.static_received_at
    finally:
        sql.close()
