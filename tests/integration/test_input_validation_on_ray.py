"""Issue 10 on a real Ray cluster: the decode tasks hold receive times against the job's own
`max_clock_skew_s`, corrupt bytes never reach them, what is rejected is counted in the job
summary and never stored, and a report from a clock ahead is kept in history, flagged, and
never becomes latest."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import reduce
from operator import xor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from breakwater.stores import schema
from tests.integration.conftest import Job

CLASS_A = b"!BSVDM,1,1,,A,33mkDd1000QbddT`LhTnCiKh0Dfr,0*68"  # MMSI 257742000
MMSI = 257742000


def tagged(c: int) -> bytes:
    tag = b"c:%d" % c
    return b"\\" + tag + b"*%02X" % reduce(xor, tag, 0) + b"\\" + CLASS_A


def latest_received(database_url: str) -> datetime:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        t = schema.latest_positions
        received: datetime = conn.execute(select(t.c.received_at).where(t.c.mmsi == MMSI)).scalar_one()
    engine.dispose()
    return received.replace(tzinfo=UTC) if received.tzinfo is None else received


def history_flags(database_url: str) -> dict[int, str | None]:
    """Receive time (s) -> flag, of the vessel's history rows."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        t = schema.positions
        rows = conn.execute(select(t.c.received_at, t.c.flag).where(t.c.mmsi == MMSI)).all()
    engine.dispose()
    return {int(at.timestamp()): flag for at, flag in rows}


def test_the_clock_skew_setting_reaches_the_decode_tasks_and_a_bad_clock_never_becomes_latest(
    sqlite_job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job's reader stamps its batches with the real clock: times here are relative to it.
    now = int(time.time())
    genuine, ten_minutes_ahead, year_2043 = tagged(now - 60), tagged(now + 600), tagged(2_334_337_317)
    nul = genuine[:30] + b"\x00" + genuine[30:]
    path = tmp_path / "feed.nmea"
    path.write_bytes(b"\n".join([genuine, year_2043, ten_minutes_ahead, nul]) + b"\n")

    summary = sqlite_job.ingest(path)
    assert summary["ok"] and summary["errors"] == []
    assert summary["lines"] == {"read": 4, "decoded": 3, "rejected": 1, "pending": 0}
    assert summary["rejected"] == {"not_printable": 1}
    assert summary["flagged"] == {"clock_ahead": 2}
    assert latest_received(sqlite_job.database_url) == datetime.fromtimestamp(now - 60, UTC)
    ahead = "clock_ahead"
    assert history_flags(sqlite_job.database_url) == {now - 60: None, now + 600: ahead, 2_334_337_317: ahead}

    # With an hour's skew allowed, ten minutes ahead is plausible: the history row loses its flag.
    monkeypatch.setenv("BREAKWATER_MAX_CLOCK_SKEW_S", "3600")
    summary = sqlite_job.ingest(path)
    assert summary["flagged"] == {"clock_ahead": 1}  # the year 2043 still is
    assert latest_received(sqlite_job.database_url) == datetime.fromtimestamp(now + 600, UTC)
    assert history_flags(sqlite_job.database_url) == {now - 60: None, now + 600: None, 2_334_337_317: ahead}
