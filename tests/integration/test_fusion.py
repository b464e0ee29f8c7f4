"""Two receivers hearing the same ships: two TCP servers replay the Kystverket capture, each
under its own station name (tag block `s:`), the second with a clock one second ahead. Each
transmission is stored once, with both receivers; the second receiver's copies never move a
vessel's latest state, in SQL or in Redis. A second receiver whose clock is ten years ahead
is demoted (as `breakwater sources` shows), its reports fill the history flagged, and not one
of them moves a latest state or a static field."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from breakwater.reports import FLAG_CLOCK_AHEAD
from breakwater.stores import schema
from breakwater.stores.redis import RedisQueries
from breakwater.stores.sql_queries import SqlQueries
from jobs.bench.corpus import checksum
from jobs.bench.runners import free_port
from tests.acceptance.shell import VENV_BIN, clean_env
from tests.conftest import REDIS_URL, read_lines
from tests.integration.test_ingest_embedded import independent_tracks
from tests.integration.test_resilience import Feed, wait_until

TEN_YEARS_S = 10 * 365 * 86_400


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


def sources(metrics_port: int, home: Path) -> dict[str, Any]:
    """`breakwater --json sources`, as an operator runs it beside the job."""
    shown = subprocess.run(
        [str(VENV_BIN / "breakwater"), "--json", "sources", "--url", f"http://127.0.0.1:{metrics_port}"],
        env=clean_env(home), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def test_a_receiver_with_a_clock_ten_years_ahead_is_demoted_and_never_moves_a_latest_state(
    make_job: Any, postgres_url: str, redis_prefix: str, kystverket_path: Path, tmp_path: Path
) -> None:
    lines = read_lines(kystverket_path)
    north = Feed([as_heard_by(line, "north", 0) for line in lines])
    skewed = Feed([as_heard_by(line, "skewed", TEN_YEARS_S) for line in lines])
    metrics_port = free_port()
    job = make_job(postgres_url, REDIS_URL, redis_prefix)
    summary: dict[str, Any] = {}
    extra = ("--set", "flush_interval_ms=100", "--metrics-port", str(metrics_port))
    running = threading.Thread(
        target=lambda: summary.update(job.ingest(north.url + "&name=feed-n", skewed.url + "&name=feed-x", extra=extra)),
        daemon=True,
    )
    running.start()
    # The skewed receiver first, then both: it is heard before and beside the trusted one.
    skewed.send(0.5)
    north.send(1.0)
    skewed.send(1.0)
    wait_until(lambda: count(postgres_url, schema.positions) == 2 * 748, 300, "both receivers' reports stored")

    def demoted() -> dict[str, Any] | None:
        receivers = {r["receiver"]: r for r in sources(metrics_port, tmp_path / "home")["receivers"]}
        return receivers if receivers.get("skewed", {}).get("state", "").startswith("demoted") else None

    receivers = wait_until(demoted, 60, "the skewed receiver shown demoted")
    assert receivers["north"]["state"] == "trusted"
    assert receivers["north"]["failed"] == 0
    assert receivers["skewed"]["failures"] == {"clock_ahead": receivers["skewed"]["checks"]}
    north.close()
    skewed.close()
    running.join(timeout=300)
    assert summary["ok"], summary["errors"]

    # Every report of both is in the history; the skewed one's are flagged, none is fused.
    assert summary["reports"] == {"position": 2 * 748, "static": 2 * 128}
    assert summary["flagged"] == {"clock_ahead": 876}
    assert summary["fused_copies"] == 0
    assert summary["receivers"]["demoted"] >= 1
    p, s = schema.positions, schema.static_reports
    assert count(postgres_url, p, p.c.flag == FLAG_CLOCK_AHEAD) == count(postgres_url, p, p.c.station == "skewed")
    assert count(postgres_url, p, p.c.flag == FLAG_CLOCK_AHEAD) == 748
    assert count(postgres_url, s, s.c.flag == FLAG_CLOCK_AHEAD) == 128

    # Not one latest state or static field from it: SQL and Redis hold the trusted receiver's.
    now = time.time()
    lp, v = schema.latest_positions, schema.vessels
    assert count(postgres_url, lp) > 100
    assert count(postgres_url, lp, lp.c.station != "north") == 0
    assert count(postgres_url, v, v.c.static_received_at > datetime.fromtimestamp(now, UTC)) == 0
    expected = independent_tracks(kystverket_path)
    sql, live = SqlQueries(postgres_url), RedisQueries(REDIS_URL, prefix=redis_prefix)
    try:
        for mmsi, points in expected.items():
            located = [p for p in points if p[2] is not None and p[3] is not None]
            for store in (sql, live) if located else ():
                state = store.latest(mmsi)
                assert state is not None and state.received_at.timestamp() < now
                assert (state.station, int(state.received_at.timestamp() * 1000)) == ("north", located[-1][0])
            vessel = sql.vessel(mmsi)
            if vessel is not None:
                assert all(o.station == "north" for o in vessel.origins.values())
            # The track shows the flagged reports for what they are.
            flags = {pt.flag for pt in sql.track(mmsi)}
            assert flags <= {None, FLAG_CLOCK_AHEAD}
    finally:
        sql.close()
