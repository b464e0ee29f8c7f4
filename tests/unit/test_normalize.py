"""AIS "not available" values become None; MMSIs are checked against the ITU forms."""

from __future__ import annotations

import pytest
from pyais.encode import encode_dict

from breakwater.decode import BatchDecoder
from breakwater.framing import LineBatch
from breakwater.models import PositionReport, StaticReport
from breakwater.normalize import (
    course_tenths,
    draught,
    eta,
    heading,
    latitude,
    longitude,
    mmsi_is_valid,
    nav_status,
    positive_or_none,
    rate_of_turn,
    speed_tenths,
    text,
)


def decode_one(fields: dict[str, object]) -> PositionReport | StaticReport:
    sentences = encode_dict(fields)
    batch = LineBatch("t", 0, 1_800_000_000_000, [b"\n".join(s.encode() for s in sentences)], len(sentences), [1])
    shard = BatchDecoder(1).decode(batch).shards[0]
    if shard.positions:
        return PositionReport.from_row(shard.positions[0])
    return StaticReport.from_row(shard.statics[0])


def test_every_class_a_sentinel_becomes_none_through_a_real_encode_and_decode() -> None:
    report = decode_one(
        {
            "type": 1,
            "mmsi": 257123450,
            "lat": 91,
            "lon": 181,
            "speed": 102.3,
            "course": 360,
            "heading": 511,
            "turn": -128,
            "status": 15,
        }
    )
    assert isinstance(report, PositionReport)
    assert report.model_dump(
        include={"lat", "lon", "sog_kn", "cog_deg", "heading_deg", "rot_deg_min", "nav_status"}
    ) == {
        "lat": None,
        "lon": None,
        "sog_kn": None,
        "cog_deg": None,
        "heading_deg": None,
        "rot_deg_min": None,
        "nav_status": None,
    }


def test_every_static_sentinel_becomes_none_through_a_real_encode_and_decode() -> None:
    report = decode_one(
        {
            "type": 5,
            "mmsi": 257123450,
            "imo": 0,
            "callsign": "",
            "shipname": "",
            "ship_type": 0,
            "to_bow": 0,
            "to_stern": 0,
            "to_port": 0,
            "to_starboard": 0,
            "month": 0,
            "day": 0,
            "hour": 24,
            "minute": 60,
            "draught": 0,
            "destination": "",
        }
    )
    assert isinstance(report, StaticReport)
    values = report.model_dump(
        exclude={"mmsi", "received_at", "digest", "msg_type", "time_source", "source", "station"}
    )
    assert values == dict.fromkeys(values)  # every one of them None


@pytest.mark.parametrize(
    ("function", "not_available", "valid", "expected"),
    [
        (latitude, 91.0, 59.5, 59.5),
        (longitude, 181.0, -10.25, -10.25),
        (speed_tenths, 102.3, 102.2, 102.2),
        (course_tenths, 360.0, 359.9, 359.9),
        (heading, 511, 359, 359),
        (nav_status, 15, 14, 14),
        (positive_or_none, 0, 42, 42),
        (draught, 0.0, 25.5, 25.5),
    ],
)
def test_not_available_values(function, not_available, valid, expected) -> None:  # type: ignore[no-untyped-def]
    assert function(not_available) is None
    assert function(valid) == expected
    assert function(None) is None


def test_out_of_range_values_are_not_available_either() -> None:
    assert latitude(-90.5) is None and longitude(180.5) is None
    assert heading(360) is None and course_tenths(-1) is None


def test_rate_of_turn_codes_without_a_rate() -> None:
    from pyais.constants import TurnRate

    for code in (TurnRate.NO_TI_DEFAULT, TurnRate.NO_TI_LEFT, TurnRate.NO_TI_RIGHT):
        assert rate_of_turn(code) is None
    assert rate_of_turn(-12.0) == -12.0


def test_text_fields() -> None:
    assert text("WERRA@@@@  ") == "WERRA"
    assert text("@@@@") is None
    assert text("") is None


def test_eta() -> None:
    assert eta(8, 7, 22, 30) == "08-07 22:30"
    assert eta(8, 7, 24, 60) == "08-07"
    assert eta(0, 7, 22, 30) is None
    assert eta(8, 0, 22, 30) is None


@pytest.mark.parametrize(
    "mmsi",
    [
        257742000,  # Norwegian ship station (MID 257)
        503581800,  # Australian ship station
        2573535,  # coast station 00MIDxxxx
        25712345,  # group call 0MIDxxxxx
        111257123,  # SAR aircraft
        825712345,  # handheld
        970123456,  # AIS-SART
        972123456,  # MOB device
        974123456,  # EPIRB-AIS
        982571234,  # craft associated with a parent ship
        995031029,  # aid to navigation (real, from the AMSA capture)
    ],
)
def test_valid_mmsis(mmsi: int) -> None:
    assert mmsi_is_valid(mmsi)


@pytest.mark.parametrize(
    "mmsi",
    [
        None,
        0,
        -1,
        123456789,  # placeholder, MID 123 does not exist
        777003006,  # MID 777 is not assigned (seen in the AMSA capture)
        1_000_873_988,  # ten digits
        8900658,  # an IMO number typed into the MMSI field (seen in the AMSA capture)
        18927,  # too short
        111111111,
        999999999,
        199999999,
    ],
)
def test_invalid_mmsis(mmsi: int | None) -> None:
    assert not mmsi_is_valid(mmsi)
