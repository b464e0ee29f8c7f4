"""Plausibility checks and receiver demotion (breakwater.plausibility), with a hand-driven clock."""

from __future__ import annotations

from typing import Any

import pytest

from breakwater.fusion import FusionWindow
from breakwater.plausibility import COVER_S, MIN_CHECKED, Plausibility, distance_nm
from breakwater.reports import FLAG, FLAG_CLOCK_AHEAD, FLAG_DEMOTED, FLAG_TOO_FAST, ReportBatch, with_flag
from breakwater.write_model import WriteModel
from tests.unit.fakes import Clock

T0 = 1_700_000_000_000
MINUTE = 60_000


def position(
    mmsi: int, ms: int, lat: float, lon: float, station: str | None = "north", *, digest: int | None = None
) -> tuple[Any, ...]:
    digest = ms // 1000 + round(lat * 1000) if digest is None else digest
    return (mmsi, ms, digest, 1, lat, lon, 12.0, 90.0, 90, 0, 0.0, station, "tag_block", None)


def static(mmsi: int, ms: int, name: str, station: str) -> tuple[Any, ...]:
    return (mmsi, ms, ms // 1000, 5, None, None, name, *([None] * 8), station, "tag_block", None)


def check(p: Plausibility, *rows: tuple[Any, ...], statics: tuple[tuple[Any, ...], ...] = ()) -> list[Any]:
    return [row[FLAG] for row in p.check(ReportBatch("feed", 0, list(rows), list(statics))).batch.positions]


def test_distance_is_great_circle_in_nautical_miles() -> None:
    assert distance_nm(0.0, 0.0, 1.0, 0.0) == pytest.approx(60.04, abs=0.05)  # a minute of arc is ~1 nm
    assert distance_nm(59.0, 10.0, -33.9, 151.2) == pytest.approx(8_650, rel=0.01)  # Oslofjord to Sydney


def test_a_fix_a_vessel_could_not_reach_is_flagged_and_the_next_good_one_is_not() -> None:
    p = Plausibility(clock=Clock())
    # 12 kn east, then Sydney a minute later, then back on track.
    assert check(p, position(1, T0, 59.0, 10.0)) == [None]
    assert check(p, position(1, T0 + MINUTE, -33.9, 151.2)) == [FLAG_TOO_FAST]
    assert check(p, position(1, T0 + 2 * MINUTE, 59.0, 10.0 + 0.8 / 60)) == [None]


def test_speed_is_judged_over_at_least_ten_seconds_and_older_reports_are_not_judged() -> None:
    p = Plausibility(clock=Clock())
    check(p, position(1, T0, 59.0, 10.0))
    # 0.2 nm in 1 s is 720 kn, but within 100 kn * 10 s (0.28 nm): clocks and GPS noise.
    assert check(p, position(1, T0 + 1000, 59.0 + 0.2 / 60, 10.0)) == [None]
    assert check(p, position(1, T0 - MINUTE, 10.0, 10.0)) == [None]  # older: moves nothing anyway


def test_two_reports_in_a_row_that_agree_replace_a_wrong_reference() -> None:
    """The first fix was the wrong one: one report is flagged, then the track is back."""
    p = Plausibility(clock=Clock())
    check(p, position(1, T0, 0.0, 0.0))  # a receiver's bogus 0,0
    assert check(p, position(1, T0 + MINUTE, 59.0, 10.0)) == [FLAG_TOO_FAST]
    assert check(p, position(1, T0 + 2 * MINUTE, 59.0, 10.003)) == [None]
    assert check(p, position(1, T0 + 3 * MINUTE, 59.0, 10.006)) == [None]


def test_positions_of_a_batch_are_judged_oldest_first() -> None:
    p = Plausibility(clock=Clock())
    rows = [position(1, T0 + i * MINUTE, 59.0, 10.0 + i * 0.003) for i in (3, 1, 2, 0)]
    assert check(p, *rows) == [None] * 4


def test_a_receiver_with_a_clock_ten_years_ahead_is_demoted_and_restored_when_it_recovers() -> None:
    clock = Clock()
    p = Plausibility(clock=clock, window_s=60.0)
    ten_years = 10 * 365 * 86_400_000
    changes = []
    for i in range(MIN_CHECKED):
        good = position(100 + i, T0 + i * 1000, 59.0, 10.0, "trusted")
        bad = with_flag(position(100 + i, T0 + ten_years + i * 1000, 59.0, 10.0, "skewed"), FLAG_CLOCK_AHEAD)
        changes += p.check(ReportBatch("feed", 0, [good, bad])).changes
    assert [(c.receiver, c.demoted, c.checked, c.failed) for c in changes] == [("skewed", True, 20, 20)]
    assert p.demoted() == ["skewed"]
    assert "receiver skewed demoted: 20 of its last 20 checked reports failed (limit 50%)" in changes[0].describe(0.5)

    # Its clock fixed: its reports pass, but while demoted they move no vessel "trusted" covers.
    assert check(p, position(100, T0 + MINUTE, 59.0, 10.001, "skewed")) == [FLAG_DEMOTED]
    # A vessel only it hears is still taken from it.
    assert check(p, position(999, T0 + MINUTE, 60.0, 5.0, "skewed")) == [None]
    clock.now += 61  # the failures leave the window; the passes restore it
    restored = []
    for i in range(MIN_CHECKED):
        restored += p.check(ReportBatch("feed", 0, [position(500 + i, T0 + i, 59.0, 10.0, "skewed")])).changes
    assert [(c.receiver, c.demoted) for c in restored] == [("skewed", False)]
    assert p.demoted() == []
    assert check(p, position(100, T0 + 2 * MINUTE, 59.0, 10.002, "skewed")) == [None]


def test_cover_by_a_trusted_receiver_lapses_after_cover_s() -> None:
    clock = Clock()
    p = Plausibility(clock=clock)
    for i in range(MIN_CHECKED):
        p.check(ReportBatch("feed", 0, [with_flag(position(2000 + i, T0, 1.0, 1.0, "bad"), FLAG_CLOCK_AHEAD)]))
    assert p.demoted() == ["bad"]
    check(p, position(1, T0, 59.0, 10.0, "good"))
    assert check(p, position(1, T0 + MINUTE, 59.0, 10.003, "bad")) == [FLAG_DEMOTED]
    clock.now += COVER_S + 1
    assert check(p, position(1, T0 + 2 * MINUTE, 59.0, 10.006, "bad")) == [None]


def test_a_demoted_receivers_static_reports_do_not_change_a_covered_vessel() -> None:
    p = Plausibility(clock=Clock())
    for i in range(MIN_CHECKED):
        p.check(ReportBatch("feed", 0, [with_flag(position(2000 + i, T0, 1.0, 1.0, "bad"), FLAG_CLOCK_AHEAD)]))
    good, echo = static(1, T0, "NORNE", "good"), static(1, T0 + MINUTE, "GHOST", "bad")
    checked = p.check(ReportBatch("feed", 0, [], [good, echo]))
    assert [row[FLAG] for row in checked.batch.statics] == [None, FLAG_DEMOTED]
    model = WriteModel()
    model.apply(checked.batch)
    assert model.vessel_rows()[1]["name"] == "NORNE"


def test_three_receivers_outvote_the_one_whose_clock_drifts() -> None:
    window = FusionWindow(5.0, max_drift_s=2.0)
    rows = [position(1, T0, 59.0, 10.0, "a", digest=7), position(1, T0 + 500, 59.0, 10.0, "b", digest=7)]
    rows.append(position(1, T0 + 4000, 59.0, 10.0, "c", digest=7))  # 3.5 s after the median
    fused = window.admit(ReportBatch("feed", 0, rows))
    assert sorted(fused.drift) == [("a", True), ("b", True), ("c", False)]
    p = Plausibility(clock=Clock())
    recorded = p.record_drift(fused.drift)
    assert recorded.failures == {("c", "clock_drift"): 1}
    # Two receivers alone tell nothing about whose clock is wrong.
    pair = FusionWindow(5.0).admit(ReportBatch("feed", 0, [position(2, T0, 1.0, 1.0, "a", digest=8), rows[2]]))
    assert pair.drift == []


def test_flagged_reports_are_never_fused_so_a_trusted_copy_is_stored_as_a_report() -> None:
    window = FusionWindow(5.0)
    demoted = with_flag(position(1, T0, 59.0, 10.0, "bad", digest=7), FLAG_DEMOTED)
    trusted = position(1, T0 + 300, 59.0, 10.0, "good", digest=7)
    fused = window.admit(ReportBatch("feed", 0, [demoted, trusted]))
    assert fused.batch.positions == [demoted, trusted]
    assert fused.batch.receptions == []


def test_reports_without_a_receive_time_of_their_own_are_not_judged() -> None:
    p = Plausibility(clock=Clock())
    placed = [(*position(1, T0 + i, (i % 2) * 80.0, 0.0)[:-2], "file", None) for i in range(4)]
    assert check(p, *placed) == [None] * 4
    assert p.check(ReportBatch("feed", 0, placed)).checks == {}


def test_of_one_batchs_copies_of_a_transmission_the_earliest_is_the_report() -> None:
    late = position(1, T0 + 800, 59.0, 10.0, "b", digest=7)
    early = position(1, T0, 59.0, 10.0, "a", digest=7)
    checked = Plausibility(clock=Clock()).check(ReportBatch("feed", 0, [late, early]))
    fused = FusionWindow(5.0).admit(checked.batch)
    assert fused.batch.positions == [early]
    assert fused.batch.receptions == [(1, T0, 7, "position", "b", T0 + 800)]
