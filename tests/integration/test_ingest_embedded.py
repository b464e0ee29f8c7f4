"""The ingest job on a real local Ray cluster with the embedded SQLite store."""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyais import NMEAMessage
from sqlalchemy import create_engine, func, select

from breakwater.stores import schema
from breakwater.stores.redis import RedisQueries
from breakwater.stores.sql_queries import SqlQueries
from tests.conftest import REDIS_URL, read_lines
from tests.integration.conftest import Job

TAG_TIME = re.compile(rb"c:(\d+)")


def independent_tracks(path: Path) -> dict[int, list[tuple[int, int, float | None, float | None]]]:
    """Position reports per MMSI decoded straight with pyais, no Breakwater code: (receive
    ms, payload CRC-32, lat, lon), deduplicated and in time order."""
    tracks: dict[int, set[tuple[int, int, float | None, float | None]]] = defaultdict(set)
    for line in read_lines(path):
        sentence = line.rsplit(b"\\", 1)[-1]
        if b",1,1," not in sentence[:12]:
            continue
        message = NMEAMessage(sentence)
        decoded = message.decode()
        if decoded.msg_type not in (1, 2, 3, 18) or not message.is_valid:
            continue
        time_ms = int(TAG_TIME.search(line).group(1)) * 1000  # type: ignore[union-attr]
        lat = None if decoded.lat == 91 else decoded.lat
        lon = None if decoded.lon == 181 else decoded.lon
        tracks[decoded.mmsi].add((time_ms, zlib.crc32(message.payload), lat, lon))
    return {mmsi: sorted(points) for mmsi, points in tracks.items()}


def table_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (
                schema.positions,
                schema.static_reports,
                schema.other_messages,
                schema.vessels,
                schema.latest_positions,
            )
        }
    engine.dispose()
    return counts


def test_both_captures_add_up_exactly(sqlite_job: Job, amsa_path: Path, kystverket_path: Path) -> None:
    summary = sqlite_job.ingest(amsa_path, kystverket_path)
    assert summary["ok"] and summary["errors"] == []
    assert summary["lines"] == {"read": 45_687, "decoded": 34_215, "rejected": 11_472, "pending": 0}
    assert summary["messages_decoded"] == 33_217 + 876
    assert summary["reports"] == {"other": 6_007, "position": 25_846, "static": 2_240}
    db = summary["sinks"]["db"]
    assert db["received"] == 6_007 + 25_846 + 2_240
    assert db["written"] + db["duplicates"] == db["received"]
    assert db["dead_letter_queue"] == 0
    counts = table_counts(sqlite_job.database_url)
    assert counts["positions"] + counts["static_reports"] + counts["other_messages"] == db["written"]


def test_ingesting_the_same_file_again_adds_no_rows(sqlite_job: Job, kystverket_path: Path) -> None:
    first = sqlite_job.ingest(kystverket_path)
    before = table_counts(sqlite_job.database_url)
    second = sqlite_job.ingest(kystverket_path)
    assert table_counts(sqlite_job.database_url) == before
    assert first["sinks"]["db"]["written"] == 876
    assert second["sinks"]["db"] == {**first["sinks"]["db"], "written": 0, "duplicates": 876}


def test_latest_states_and_tracks_match_an_independent_decode(sqlite_job: Job, kystverket_path: Path) -> None:
    sqlite_job.ingest(kystverket_path)
    expected = independent_tracks(kystverket_path)
    busiest = sorted(expected, key=lambda m: -len(expected[m]))[:5]
    with sqlite_job.client() as client:
        for mmsi in busiest:
            track = client.track(mmsi)
            assert [(p.lat, p.lon) for p in track] == [(lat, lon) for _, _, lat, lon in expected[mmsi]]
            assert [int(p.received_at.timestamp() * 1000) for p in track] == [t for t, *_ in expected[mmsi]]
            newest = expected[mmsi][-1]
            latest = client.latest(mmsi)
            assert latest is not None
            assert (latest.lat, latest.lon) == (newest[2], newest[3])
            assert latest.received_at == datetime.fromtimestamp(newest[0] / 1000, UTC)
        window = client.track(
            busiest[0], start=datetime.fromtimestamp(1565218800, UTC), end=datetime.fromtimestamp(1565218805, UTC)
        )
        assert [int(p.received_at.timestamp()) for p in window] == [
            t // 1000 for t, *_ in expected[busiest[0]] if 1565218800_000 <= t <= 1565218805_000
        ]


def test_an_out_of_order_file_never_moves_a_latest_state_back(
    sqlite_job: Job, kystverket_path: Path, tmp_path: Path
) -> None:
    reversed_file = tmp_path / "reversed.nmea"
    lines = read_lines(kystverket_path)
    # Reverse whole messages (keep each multi-sentence group in order) so old reports come last.
    groups: list[list[bytes]] = []
    for line in lines:
        if b"g:2-2" in line and groups:
            groups[-1].append(line)
        else:
            groups.append([line])
    reversed_file.write_bytes(b"\n".join(b"\n".join(g) for g in reversed(groups)) + b"\n")
    summary = sqlite_job.ingest(reversed_file, extra=("--batch-lines", "50"))
    assert summary["ok"]
    expected = independent_tracks(kystverket_path)
    with sqlite_job.client() as client:
        for mmsi, points in expected.items():
            # Latest state is the newest report with a position (breakwater/write_model.py).
            located = [p for p in points if p[2] is not None and p[3] is not None]
            latest = client.latest(mmsi)
            if not located:
                assert latest is None, mmsi
                continue
            assert latest is not None
            assert int(latest.received_at.timestamp() * 1000) == located[-1][0], mmsi  # type: ignore[union-attr]
            assert (latest.lat, latest.lon) == (located[-1][2], located[-1][3])


def test_vessel_static_data_from_the_capture(sqlite_job: Job, kystverket_path: Path) -> None:
    sqlite_job.ingest(kystverket_path)
    statics: dict[int, Any] = {}
    for line in read_lines(kystverket_path):
        sentence = line.rsplit(b"\\", 1)[-1]
        if b",1,1," in sentence[:12]:
            decoded = NMEAMessage(sentence).decode()
            if decoded.msg_type == 24 and decoded.partno == 0:
                statics[decoded.mmsi] = decoded.shipname
    assert statics, "the capture has class B names"
    with sqlite_job.client() as client:
        for mmsi, name in list(statics.items())[:5]:
            vessel = client.vessel(mmsi)
            assert vessel is not None and vessel.name == name
        assert client.counts().vessels_with_static_data >= len(statics)


def test_standard_input_is_a_source(sqlite_job: Job, kystverket_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(kystverket_path.read_bytes())))
    summary = sqlite_job.ingest("-")
    assert summary["ok"]
    assert summary["lines"]["read"] == 1_000
    assert summary["messages_decoded"] == 876


def last_positions_in_file_order(lines: list[bytes]) -> dict[int, tuple[float, float]]:
    """Each MMSI's position in the last single-sentence position report of the file that has
    one, decoded straight with pyais: the latest state when the lines carry no receive time."""
    last: dict[int, tuple[float, float]] = {}
    for line in lines:
        if b",1,1," not in line[:12]:
            continue
        message = NMEAMessage(line)
        decoded = message.decode()
        if message.is_valid and decoded.msg_type in (1, 2, 3, 18) and decoded.lat != 91 and decoded.lon != 181:
            last[decoded.mmsi] = (decoded.lat, decoded.lon)
    return last


def test_a_file_without_receive_times_keeps_file_order_and_a_second_ingest_adds_nothing(
    make_job: Any, postgres_url: str, redis_prefix: str, kystverket_path: Path, tmp_path: Path
) -> None:
    """The Kystverket capture with its tag blocks (and so its receive times) cut off, both
    stores on, small batches so one vessel's reports fall in many batches."""
    timeless = tmp_path / "timeless.nmea"
    lines = [line.rsplit(b"\\", 1)[-1] for line in read_lines(kystverket_path)]
    timeless.write_bytes(b"\n".join(lines) + b"\n")
    job = make_job(postgres_url, REDIS_URL, redis_prefix)
    first = job.ingest(timeless, extra=("--batch-lines", "50"))
    assert first["ok"] and first["sinks"]["db"]["written"] == first["sinks"]["db"]["received"] == 876
    before = table_counts(postgres_url)

    second = job.ingest(timeless, extra=("--batch-lines", "70"))
    assert second["ok"]
    assert table_counts(postgres_url) == before
    assert second["sinks"]["db"] == {**first["sinks"]["db"], "written": 0, "duplicates": 876}
    assert second["sinks"]["redis"]["written"] == 0

    expected = last_positions_in_file_order(lines)
    assert len(expected) > 100
    sql, live = SqlQueries(postgres_url), RedisQueries(REDIS_URL, prefix=redis_prefix)
    mtime = datetime.fromtimestamp(timeless.stat().st_mtime_ns // 1_000_000 / 1000, UTC)
    try:
        for mmsi, position in expected.items():
            for store in (sql, live):
                state = store.latest(mmsi)
                assert state is not None, (store, mmsi)
                assert (state.lat, state.lon) == position, (store, mmsi)
                assert state.received_at == mtime
    finally:
        sql.close()
