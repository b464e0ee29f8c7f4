"""From a decoded pyais message to a normalized report row.

AIS marks a missing value with an in-band sentinel (latitude 91, speed 102.3, heading 511, ...).
Here every sentinel, and every value outside its physical range, becomes None, so a store or
a map never mistakes "not available" for a position in the Arctic Ocean.

Reference for the sentinels: ITU-R M.1371-5 and https://gpsd.gitlab.io/gpsd/AIVDM.html.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from breakwater.reports import KIND_OTHER, KIND_POSITION, KIND_STATIC

# Maritime Identification Digits assigned by the ITU are 201 to 775.
MID_MIN, MID_MAX = 201, 775


def _mid_ok(mid: int) -> bool:
    return MID_MIN <= mid <= MID_MAX


def mmsi_is_valid(mmsi: int | None) -> bool:
    """True when `mmsi` has one of the forms ITU-R M.585 assigns.

    Ship stations MIDxxxxxx, groups 0MIDxxxxx, coast stations 00MIDxxxx, SAR aircraft
    111MIDxxx, handhelds 8MIDxxxxx, craft of a parent ship 98MIDxxxx, aids to navigation
    99MIDxxxx, and the distress devices 970/972/974xxxxxx. Anything else (0, 123456789,
    ten digits, an unassigned MID) cannot name a station and is rejected.
    """
    if mmsi is None or mmsi <= 0 or mmsi > 999_999_999:
        return False
    if mmsi < 10_000_000:  # 00MIDxxxx: seven significant digits
        return mmsi >= 1_000_000 and _mid_ok(mmsi // 10_000)
    if mmsi < 100_000_000:  # 0MIDxxxxx
        return _mid_ok(mmsi // 100_000)
    first = mmsi // 100_000_000
    if 2 <= first <= 7:
        return _mid_ok(mmsi // 1_000_000)
    if first == 8:
        return _mid_ok((mmsi // 100_000) % 1000)
    if first == 1:
        return mmsi // 1_000_000 == 111 and _mid_ok((mmsi // 1000) % 1000)
    prefix = mmsi // 1_000_000  # first == 9
    if prefix in (970, 972, 974):
        return True
    if prefix // 10 in (98, 99):
        return _mid_ok((mmsi // 10_000) % 1000)
    return False


def latitude(value: Any) -> float | None:
    """Degrees north; 91 means not available."""
    if value is None or not -90.0 <= value <= 90.0:
        return None
    return float(value)


def longitude(value: Any) -> float | None:
    """Degrees east; 181 means not available."""
    if value is None or not -180.0 <= value <= 180.0:
        return None
    return float(value)


def speed_tenths(value: Any) -> float | None:
    """Speed over ground in knots, 0.1 kn resolution; 102.3 means not available."""
    if value is None or not 0.0 <= value < 102.25:
        return None
    return float(value)


def course_tenths(value: Any) -> float | None:
    """Course over ground in degrees; 360.0 means not available."""
    if value is None or not 0.0 <= value < 360.0:
        return None
    return float(value)


def heading(value: Any) -> int | None:
    """True heading in degrees; 511 means not available."""
    if value is None or not 0 <= value <= 359:
        return None
    return int(value)


def nav_status(value: Any) -> int | None:
    """Navigational status 0-14; 15 means not defined."""
    if value is None or not 0 <= value <= 14:
        return None
    return int(value)


def rate_of_turn(value: Any) -> float | None:
    """Degrees per minute as pyais computes it; the no-turn-indicator codes become None.

    pyais returns the TurnRate enum (a float subclass) for -128 (no information) and +-127
    (turning faster than 5 degrees per 30 s, rate unknown): none of them is a rate.
    """
    if value is None or type(value) is not float:
        return None
    return value


def positive_or_none(value: Any) -> int | None:
    """Dimensions, IMO numbers, ship types: 0 means not available."""
    if not value:
        return None
    return int(value)


def draught(value: Any) -> float | None:
    """Metres, 0.1 m resolution; 0 means not available."""
    if not value:
        return None
    return float(value)


def text(value: Any) -> str | None:
    """Six-bit text fields pad with '@' and spaces; an empty name is not available."""
    if not value:
        return None
    cleaned = str(value).replace("@", " ").strip()
    return cleaned or None


def eta(month: Any, day: Any, hour: Any, minute: Any) -> str | None:
    """Estimated time of arrival as 'MM-DD HH:MM' (UTC; AIS sends no year).

    Month 0 or day 0 means not available; hour 24 or minute 60 leaves the time of day off.
    """
    if not month or not day or month > 12 or day > 31:
        return None
    if hour is None or minute is None or hour > 23 or minute > 59:
        return f"{month:02d}-{day:02d}"
    return f"{month:02d}-{day:02d} {hour:02d}:{minute:02d}"


# A row builder turns (pyais message, receive time, digest, station, time source) into rows.
Rows = list[tuple[str, tuple[Any, ...]]]
RowBuilder = Callable[[Any, int, int, Any, str], Rows]


class Origin(NamedTuple):
    """What every row of one message starts and ends with (a named tuple: one is made per
    message, and a frozen dataclass costs a microsecond more to make)."""

    mmsi: int
    received_ms: int
    digest: int
    msg_type: int
    station: Any
    time_source: str


def _position(
    o: Origin, lat: Any, lon: Any, sog: Any, cog: Any, hdg: Any, status: Any, rot: Any
) -> tuple[str, tuple[Any, ...]]:
    """A row in POSITION_FIELDS order; every value already normalized."""
    values = (lat, lon, sog, cog, hdg, status, rot)
    row = (o.mmsi, o.received_ms, o.digest, o.msg_type, *values, o.station, o.time_source, None)
    return KIND_POSITION, row


def _static(o: Origin, *values: Any) -> tuple[str, tuple[Any, ...]]:
    """A row in STATIC_FIELDS order: imo, callsign, name, ship type, the four dimensions,
    eta, draught and destination, already normalized."""
    return KIND_STATIC, (o.mmsi, o.received_ms, o.digest, o.msg_type, *values, o.station, o.time_source, None)


def _dimensions(m: Any) -> tuple[int | None, ...]:
    return tuple(positive_or_none(getattr(m, f, None)) for f in ("to_bow", "to_stern", "to_port", "to_starboard"))


def _class_a_position(m: Any, ms: int, digest: int, station: Any, ts: str) -> Rows:
    o = Origin(m.mmsi, ms, digest, m.msg_type, station, ts)
    speed, course = speed_tenths(m.speed), course_tenths(m.course)
    return [
        _position(
            o,
            latitude(m.lat),
            longitude(m.lon),
            speed,
            course,
            heading(m.heading),
            nav_status(m.status),
            rate_of_turn(m.turn),
        )
    ]


def _class_b_position(m: Any, ms: int, digest: int, station: Any, ts: str) -> Rows:
    o = Origin(m.mmsi, ms, digest, m.msg_type, station, ts)
    speed, course = speed_tenths(m.speed), course_tenths(m.course)
    return [_position(o, latitude(m.lat), longitude(m.lon), speed, course, heading(m.heading), None, None)]


def _class_b_extended(m: Any, ms: int, digest: int, station: Any, ts: str) -> Rows:
    """Type 19 carries a position and the vessel's name, type and size: two rows."""
    o = Origin(m.mmsi, ms, digest, m.msg_type, station, ts)
    static = _static(o, None, None, text(m.shipname), positive_or_none(m.ship_type), *_dimensions(m), None, None, None)
    return [*_class_b_position(m, ms, digest, station, ts), static]


def _long_range_position(m: Any, ms: int, digest: int, station: Any, ts: str) -> Rows:
    """Type 27: whole knots (63 not available) and whole degrees (511 not available)."""
    o = Origin(m.mmsi, ms, digest, m.msg_type, station, ts)
    speed = float(m.speed) if m.speed is not None and 0 <= m.speed < 63 else None
    course = float(m.course) if m.course is not None and 0 <= m.course < 360 else None
    return [_position(o, latitude(m.lat), longitude(m.lon), speed, course, None, nav_status(m.status), None)]


def _static_voyage(m: Any, ms: int, digest: int, station: Any, ts: str) -> Rows:
    o = Origin(m.mmsi, ms, digest, m.msg_type, station, ts)
    return [
        _static(
            o,
            positive_or_none(m.imo),
            text(m.callsign),
            text(m.shipname),
            positive_or_none(m.ship_type),
            *_dimensions(m),
            eta(m.month, m.day, m.hour, m.minute),
            draught(m.draught),
            text(m.destination),
        )
    ]


def _static_class_b(m: Any, ms: int, digest: int, station: Any, ts: str) -> Rows:
    """Type 24 comes in part A (the name) and part B (type, call sign, size; an auxiliary
    craft's part B carries its mother ship's MMSI instead of dimensions, so those stay None)."""
    o = Origin(m.mmsi, ms, digest, m.msg_type, station, ts)
    if m.partno == 0:
        return [_static(o, None, None, text(m.shipname), None, None, None, None, None, None, None, None)]
    return [_static(o, None, text(m.callsign), None, positive_or_none(m.ship_type), *_dimensions(m), None, None, None)]


ROW_BUILDERS: dict[int, RowBuilder] = {
    1: _class_a_position,
    2: _class_a_position,
    3: _class_a_position,
    18: _class_b_position,
    19: _class_b_extended,
    27: _long_range_position,
    5: _static_voyage,
    24: _static_class_b,
}


def other_row(m: Any, ms: int, digest: int, nmea: str, station: Any, ts: str) -> tuple[str, tuple[Any, ...]]:
    """A message of a type Breakwater does not normalize yet (base stations, aids to
    navigation, binary messages ...) is kept whole: its NMEA text, so it can be decoded later."""
    return (KIND_OTHER, (m.mmsi, ms, digest, m.msg_type, nmea, station, ts, None))
