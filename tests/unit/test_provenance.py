"""Provenance of a vessel's latest state: which source and receiver each part came from, on
the embedded SQLite store (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from breakwater.reports import ReportBatch
from breakwater.stores import schema
from breakwater.stores.engine import make_engine
from breakwater.stores.sql import SqlSink
from breakwater.stores.sql_queries import SqlQueries

T0 = 1_700_000_000_000
MMSI = 257000001


def static(ms: int, digest: int, station: str, *, name: str | None, callsign: str | None) -> tuple[Any, ...]:
    return (
        MMSI,
        ms,
        digest,
        5,
        None,
        callsign,
        name,
        70,
        None,
        None,
        None,
        None,
        None,
        None,
        "OSLO",
        station,
        "tag_block",
        None,
    )


def position(ms: int, station: str) -> tuple[Any, ...]:
    return (MMSI, ms, 1, 1, 60.0, 5.0, 10.0, 90.0, 90, 0, 0.0, station, "tag_block", None)


def test_each_static_field_says_which_report_it_came_from_and_the_position_its_receiver(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    engine = make_engine(url)
    schema.migrate(engine)
    engine.dispose()
    sink = SqlSink(url)
    # The name only in an older report from the north receiver; the call sign newer from south.
    sink.write(
        ReportBatch("feed-n", T0, [position(T0, "north")], [static(T0, 7, "north", name="ALPHA", callsign="LA1")])
    )
    sink.write(ReportBatch("feed-s", T0, [], [static(T0 + 60_000, 8, "south", name=None, callsign="LA2")]))
    sink.close()
    queries = SqlQueries(url)
    vessel = queries.vessel(MMSI)
    latest = queries.latest(MMSI)
    queries.close()
    assert vessel is not None and (vessel.name, vessel.callsign, vessel.destination) == ("ALPHA", "LA2", "OSLO")
    at = {ms: datetime.fromtimestamp(ms / 1000, UTC) for ms in (T0, T0 + 60_000)}
    origins = {f: (o.received_at, o.source, o.station) for f, o in vessel.origins.items()}
    assert origins == {
        "name": (at[T0], "feed-n", "north"),
        "callsign": (at[T0 + 60_000], "feed-s", "south"),
        "ship_type": (at[T0 + 60_000], "feed-s", "south"),
        "destination": (at[T0 + 60_000], "feed-s", "south"),
    }
    assert latest is not None and (latest.source, latest.station) == ("feed-n", "north")
