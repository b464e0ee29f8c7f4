"""The reference write model's own rules (breakwater/write_model.py), on generated reports.

The strategies here generate normalized report rows the way the decoder emits them (a
missing value is None), with few vessels and few distinct receive times, so ties on the
millisecond, repeats and polar or missing positions are common. The store tests
(tests/integration/test_write_model_stores.py) feed the same strategies to every store.
"""

from __future__ import annotations

import zlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from breakwater.reports import (
    FLAG_CLOCK_AHEAD,
    FLAG_DEMOTED,
    FLAG_TOO_FAST,
    FLAGS,
    P_LAT,
    STATIC_FIELDS,
    ReportBatch,
    with_flag,
)
from breakwater.write_model import (
    GEO_MAX_LAT,
    LATEST_FIELDS,
    STATIC_VALUE_FIELDS,
    WriteModel,
    geo_covers,
    has_position,
    order_key,
)

MMSIS = (257000001, 257000002, 311000003, 636091763)
BASE_MS = 1_600_000_000_000
LATITUDES = (None, 59.9, -33.86, 0.0, 85.05112878, 87.065, -89.5, 90.0)
LONGITUDES = (None, 10.7, 151.2, -180.0, 154.2, 180.0)


# Most reports go to two vessels, so one vessel's reports meet in every order and batch.
mmsis = st.one_of(st.sampled_from(MMSIS[:2]), st.sampled_from(MMSIS[:2]), st.sampled_from(MMSIS))


def _digest(values: tuple[Any, ...]) -> int:
    """A CRC-32 of the content, as the decoder's payload digest: the same (MMSI, time,
    digest) is the same report, so a store keeping either copy keeps the same values."""
    return zlib.crc32(repr(values).encode())


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


# Mostly plausible; the flag is not part of the digest: the same report may come flagged once
# and plausible another time (write_model rule 4).
flags = st.one_of(st.none(), st.none(), st.sampled_from(FLAGS))


@st.composite
def position_rows(draw: st.DrawFn) -> tuple[Any, ...]:
    head = (draw(mmsis), BASE_MS + draw(st.integers(0, 3)) * 1000)
    body = (
        draw(st.sampled_from((1, 2, 3, 18, 27))),
        draw(st.sampled_from(LATITUDES)),
        draw(st.sampled_from(LONGITUDES)),
        draw(_maybe(st.sampled_from((0.0, 5.5, 12.3)))),
        draw(_maybe(st.sampled_from((0.0, 90.0, 359.9)))),
        draw(_maybe(st.integers(0, 359))),
        draw(_maybe(st.integers(0, 15))),
        draw(_maybe(st.sampled_from((0.0, -4.5)))),
        draw(_maybe(st.sampled_from(("rA", "rB")))),
        draw(st.sampled_from(("tag_block", "trailer"))),
    )
    return (*head, _digest(head + body), *body, draw(flags))


@st.composite
def static_rows(draw: st.DrawFn) -> tuple[Any, ...]:
    head = (draw(mmsis), BASE_MS + draw(st.integers(0, 3)) * 1000)
    body = (
        draw(st.sampled_from((5, 19, 24))),
        draw(_maybe(st.sampled_from((9000001, 9000002)))),  # imo
        draw(_maybe(st.sampled_from(("LAXA", "LBXB")))),  # callsign
        draw(_maybe(st.sampled_from(("NORNE", "SKARV")))),  # name
        draw(_maybe(st.sampled_from((30, 70)))),  # ship_type
        draw(_maybe(st.integers(0, 300))),  # to_bow_m
        draw(_maybe(st.integers(0, 300))),  # to_stern_m
        draw(_maybe(st.integers(0, 60))),  # to_port_m
        draw(_maybe(st.integers(0, 60))),  # to_starboard_m
        draw(_maybe(st.sampled_from(("05-17 12:00", "12-24 08:30")))),  # eta
        draw(_maybe(st.sampled_from((5.2, 11.0)))),  # draught_m
        draw(_maybe(st.sampled_from(("OSLO", "BERGEN", "TROMSO")))),  # destination
        draw(_maybe(st.sampled_from(("rA", "rB")))),
        draw(st.sampled_from(("tag_block", "trailer"))),
    )
    return (*head, _digest(head + body), *body, draw(flags))


# A report: ("p", position row) or ("s", static row).
reports = st.one_of(st.tuples(st.just("p"), position_rows()), st.tuples(st.just("s"), static_rows()))


def batch_of(items: list[tuple[str, tuple[Any, ...]]], source: str = "generated") -> ReportBatch:
    return ReportBatch(
        source,
        0,
        positions=[row for kind, row in items if kind == "p"],
        statics=[row for kind, row in items if kind == "s"],
    )


def model_of(batches: list[ReportBatch]) -> WriteModel:
    model = WriteModel()
    for batch in batches:
        model.apply(batch)
    return model


def position(mmsi: int, ms: int, lat: float | None, lon: float | None, digest: int = 1) -> tuple[Any, ...]:
    return (mmsi, ms, digest, 1, lat, lon, 5.0, 90.0, 90, 0, 0.0, None, "tag_block", None)


def static(mmsi: int, ms: int, digest: int = 1, msg_type: int = 5, **values: Any) -> tuple[Any, ...]:
    return (mmsi, ms, digest, msg_type, *(values.get(f) for f in STATIC_VALUE_FIELDS), None, "tag_block", None)


# -- generated: the state is a function of the set of reports -----------------------------------


@settings(max_examples=100, deadline=None)
@given(items=st.lists(reports, max_size=40), data=st.data())
def test_order_duplicates_and_batching_change_nothing(items: list[tuple[str, Any]], data: st.DataObject) -> None:
    repeats = data.draw(st.lists(st.sampled_from(items), max_size=10)) if items else []
    # A repeat may be judged differently: flagged once, plausible another time.
    again = items + [(kind, (*row[:-1], data.draw(flags))) for kind, row in repeats]
    once = model_of([batch_of(again)])
    shuffled = data.draw(st.permutations(again))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=4)))
    pieces = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    other = model_of([batch_of(piece) for piece in pieces])
    assert other.latest_rows() == once.latest_rows()
    assert other.vessel_rows() == once.vessel_rows()
    assert other.off_geo_index() == once.off_geo_index()


@settings(max_examples=100, deadline=None)
@given(items=st.lists(reports, max_size=40))
def test_latest_is_the_newest_report_with_a_valid_position(items: list[tuple[str, Any]]) -> None:
    rows = [row for kind, row in items if kind == "p"]
    latest = model_of([batch_of(items)]).latest_rows()
    for mmsi in MMSIS:
        candidates = [r for r in rows if r[0] == mmsi and r[P_LAT] is not None and r[5] is not None and r[-1] is None]
        if not candidates:
            assert mmsi not in latest
            continue
        newest = max(candidates, key=order_key)
        assert latest[mmsi] == {**dict(zip(LATEST_FIELDS, newest[:-1], strict=True)), "source": "generated"}


@settings(max_examples=100, deadline=None)
@given(items=st.lists(reports, max_size=40))
def test_each_static_field_comes_from_the_newest_report_that_carries_it(items: list[tuple[str, Any]]) -> None:
    rows = [row for kind, row in items if kind == "s"]
    vessels = model_of([batch_of(items)]).vessel_rows()
    for mmsi in MMSIS:
        mine = [r for r in rows if r[0] == mmsi and r[-1] is None]
        if not mine:
            assert mmsi not in vessels
            continue
        assert vessels[mmsi]["static_received_ms"] == max(r[1] for r in mine)
        for i, name in enumerate(STATIC_VALUE_FIELDS, start=STATIC_FIELDS.index("imo")):
            carrying = [r for r in mine if r[i] is not None]
            expected = max(carrying, key=order_key)[i] if carrying else None
            assert vessels[mmsi][name] == expected, name


# -- the cases, by hand ------------------------------------------------------------------


def test_an_older_report_in_a_batch_with_a_newer_one_never_sets_a_field_back() -> None:
    """Stored destination OSLO at t=10; a batch with BERGEN at t=5 and a type 24B at t=12."""
    model = model_of(
        [
            batch_of([("s", static(1, 10_000, destination="OSLO"))]),
            batch_of(
                [
                    ("s", static(1, 5_000, destination="BERGEN")),
                    ("s", static(1, 12_000, msg_type=24, callsign="LAXA", ship_type=37)),
                ]
            ),
        ]
    )
    vessel = model.vessel_rows()[1]
    assert (vessel["destination"], vessel["callsign"], vessel["static_received_ms"]) == ("OSLO", "LAXA", 12_000)


def test_a_tie_on_the_millisecond_goes_to_the_greater_digest_in_any_order() -> None:
    a, b = static(1, 10_000, digest=7, name="A"), static(1, 10_000, digest=9, name="B")
    p, q = position(1, 10_000, 59.0, 10.0, digest=9), position(1, 10_000, 60.0, 11.0, digest=7)
    for order in ([a, b], [b, a]):
        assert model_of([batch_of([("s", r) for r in order])]).vessel_rows()[1]["name"] == "B"
    for order in ([p, q], [q, p]):
        assert model_of([batch_of([("p", r) for r in order])]).latest_rows()[1]["lat"] == 59.0


def test_a_newer_report_without_a_position_keeps_the_known_one() -> None:
    model = model_of(
        [batch_of([("p", position(1, 10_000, 59.9, 10.7))]), batch_of([("p", position(1, 20_000, None, None))])]
    )
    assert (model.latest_rows()[1]["received_ms"], model.latest_rows()[1]["lat"]) == (10_000, 59.9)
    only_missing = model_of([batch_of([("p", position(2, 20_000, 59.9, None))])])
    assert only_missing.latest_rows() == {}


def test_a_polar_position_is_latest_state_but_outside_the_geo_index() -> None:
    model = model_of([batch_of([("p", position(1, 10_000, 87.065, 154.2)), ("p", position(2, 10_000, 85.05, 1.0))])])
    assert set(model.latest_rows()) == {1, 2}
    assert model.off_geo_index() == {1}
    model.apply(batch_of([("p", position(1, 20_000, 80.0, 154.2))]))
    assert model.off_geo_index() == set()


def test_valid_positions_and_geo_latitudes() -> None:
    assert has_position(position(1, 0, -90.0, 180.0))
    assert not has_position(position(1, 0, 91.0, 10.0))
    assert not has_position(position(1, 0, 10.0, 181.0))
    assert geo_covers(-GEO_MAX_LAT, GEO_MAX_LAT)
    assert not geo_covers(80.0, 86.0)
    assert not geo_covers(-85.06, 0.0)


def test_a_flagged_report_moves_no_latest_position_and_no_static_field() -> None:
    """Rule 4: a receiver clock years ahead, a teleport, a demoted receiver's report."""
    known = [("p", position(1, 10_000, 59.0, 10.0)), ("s", static(1, 10_000, destination="OSLO"))]
    for reason in (FLAG_CLOCK_AHEAD, FLAG_TOO_FAST, FLAG_DEMOTED):
        flagged = [
            ("p", with_flag(position(1, 999_000, 1.0, 1.0, digest=2), reason)),
            ("s", with_flag(static(1, 999_000, digest=2, destination="NOWHERE", name="GHOST"), reason)),
        ]
        model = model_of([batch_of(known), batch_of(flagged)])
        assert model.latest_rows()[1]["received_ms"] == 10_000
        assert model.vessel_rows()[1]["destination"] == "OSLO"
        assert model.vessel_rows()[1]["name"] is None
        assert model.vessel_rows()[1]["static_received_ms"] == 10_000


def test_a_report_plausible_in_any_delivery_is_plausible_whatever_the_order() -> None:
    plain = position(1, 20_000, 60.0, 11.0, digest=2)
    flagged = with_flag(plain, FLAG_DEMOTED)
    for order in ([flagged, plain], [plain, flagged]):
        model = model_of([batch_of([("p", position(1, 10_000, 59.0, 10.0))])] + [batch_of([("p", r)]) for r in order])
        assert model.latest_rows()[1]["received_ms"] == 20_000
