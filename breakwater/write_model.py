"""The write model: what a vessel's latest state and static data are, given the reports.

Plain Python, applied report by report. It is the oracle the stores are tested against
(SQLite, PostgreSQL and the Redis script must end in the same state for the same reports,
whatever their order, duplication, batching or retries), and the place the rules are written
down once:

1. **Order.** Reports compare by (receive time, digest): `reports.is_newer`. The digest breaks
   ties between different reports of the same millisecond, so the winner never depends on
   arrival order. A report seen twice (same MMSI, time and digest) changes nothing.
2. **Latest position.** A vessel's latest state is the newest position report *that carries
   a valid position* (latitude and longitude both present and in range), taken whole: its
   time, position, speed, course, heading, status and provenance. A report without a valid
   position stays in the history but never touches the latest state, so it can neither erase
   a known position nor pair its own status fields with another report's position. (Status
   fields are therefore exactly as fresh as the position they came with.)
3. **Static merge, per field.** Each static field (name, call sign, destination, ...) takes
   the value of the newest static report *that carries that field*, each field judged by
   that report's own time, never by a batch's or the vessel's. A report that leaves a field
   empty leaves it as it was. `static_received_ms` is the newest static report's time.
4. **Flags.** A report that failed a plausibility check (`reports.FLAGS`: a receiver clock
   ahead, an impossible speed, a demoted receiver) is kept in the history with its flag and
   is otherwise as if it never came: it moves no latest position and no static field. The
   same report (same identity) may arrive flagged once and plausible another time (a file
   ingested again when its receiver is trusted again): then it is plausible, whatever the
   order, and the history's copy loses its flag. So a report is flagged in the end only if
   every delivery of it was.
5. **Polar positions.** A position with |latitude| > `GEO_MAX_LAT` is valid and is the latest
   state in SQL and in the Redis vessel hash; only Redis's GEO index cannot hold it, so the
   vessel is left out of the index (and counted there) while that is its latest position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from breakwater.reports import (
    DIGEST,
    FLAG,
    MMSI,
    P_LAT,
    P_LON,
    POSITION_FIELDS,
    RECEIVED_MS,
    STATIC_FIELDS,
    ReportBatch,
    is_newer,
)

# Redis GEO accepts latitudes up to this (the Web Mercator limit); beyond it GEOADD fails.
GEO_MAX_LAT = 85.05112878
# What a latest state holds of its report: every position field but the flag (rule 4: a
# latest state is plausible by construction).
LATEST_FIELDS = POSITION_FIELDS[:-1]
# The static fields merged per field: imo .. destination.
STATIC_VALUE_FIELDS = STATIC_FIELDS[4:15]
_STATIC_OFFSET = STATIC_FIELDS.index("imo")


def is_plausible(row: tuple[Any, ...]) -> bool:
    """Not flagged (rule 4): the report may move a latest state or a static field."""
    return row[FLAG] is None


def has_position(row: tuple[Any, ...]) -> bool:
    """A position row whose latitude and longitude are both present and on the globe."""
    lat, lon = row[P_LAT], row[P_LON]
    return lat is not None and lon is not None and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


def geo_indexable(lat: float) -> bool:
    """Whether Redis's GEO index can hold a position at this latitude."""
    return -GEO_MAX_LAT <= lat <= GEO_MAX_LAT


def geo_covers(south: float, north: float) -> bool:
    """Whether Redis's GEO index can answer for every latitude from `south` to `north`: it
    holds none beyond ±GEO_MAX_LAT (those vessels are in their hashes and in SQL)."""
    return south >= -GEO_MAX_LAT and north <= GEO_MAX_LAT


def positioned(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The position rows that may become latest state (rules 2 and 4)."""
    return [row for row in rows if is_plausible(row) and has_position(row)]


def plausible(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows that may move a static merge (rule 4)."""
    return [row for row in rows if is_plausible(row)]


def order_key(row: tuple[Any, ...]) -> tuple[int, int]:
    return (row[RECEIVED_MS], row[DIGEST])


@dataclass(slots=True)
class StaticField:
    """One static field's value and the (receive time, digest) of the report it came from."""

    value: Any
    order: tuple[int, int]


@dataclass(slots=True)
class VesselStatics:
    fields: dict[str, StaticField] = field(default_factory=dict)
    newest: tuple[int, int] | None = None  # the newest static report's (time, digest)


class WriteModel:
    """Every vessel's latest position and merged static data, from reports applied one by one."""

    def __init__(self) -> None:
        self.latest: dict[int, tuple[tuple[Any, ...], str]] = {}  # mmsi -> (position row, source)
        self.statics: dict[int, VesselStatics] = {}

    def apply_position(self, row: tuple[Any, ...], source: str) -> bool:
        """Rules 2 and 4; True when the latest state changed."""
        if not has_position(row) or not is_plausible(row):
            return False
        current = self.latest.get(row[MMSI])
        if current is not None and not is_newer(row, current[0]):
            return False
        self.latest[row[MMSI]] = (row, source)
        return True

    def apply_static(self, row: tuple[Any, ...]) -> bool:
        """Rules 3 and 4; True when any field or the static time changed."""
        if not is_plausible(row):
            return False
        vessel = self.statics.setdefault(row[MMSI], VesselStatics())
        order = order_key(row)
        changed = False
        if vessel.newest is None or order > vessel.newest:
            vessel.newest, changed = order, True
        for i, name in enumerate(STATIC_VALUE_FIELDS, start=_STATIC_OFFSET):
            value = row[i]
            if value is None:
                continue
            current = vessel.fields.get(name)
            if current is None or order > current.order:
                vessel.fields[name] = StaticField(value, order)
                changed = True
        return changed

    def apply(self, batch: ReportBatch) -> None:
        for row in batch.positions:
            self.apply_position(row, batch.source)
        for row in batch.statics:
            self.apply_static(row)

    # -- the state, in the shape the stores are compared in ------------------------------------

    def latest_rows(self) -> dict[int, dict[str, Any]]:
        """mmsi -> every position field of the latest report, plus its source."""
        return {
            mmsi: {**dict(zip(LATEST_FIELDS, row[:-1], strict=True)), "source": source}
            for mmsi, (row, source) in self.latest.items()
        }

    def vessel_rows(self) -> dict[int, dict[str, Any]]:
        """mmsi -> each static field's merged value (None if no report carried it) and
        `static_received_ms`."""
        rows = {}
        for mmsi, vessel in self.statics.items():
            row: dict[str, Any] = {name: None for name in STATIC_VALUE_FIELDS}
            row.update({name: f.value for name, f in vessel.fields.items()})
            row["static_received_ms"] = None if vessel.newest is None else vessel.newest[0]
            rows[mmsi] = row
        return rows

    def off_geo_index(self) -> set[int]:
        """Vessels whose latest position Redis keeps out of its GEO index (rule 4)."""
        return {mmsi for mmsi, (row, _) in self.latest.items() if not geo_indexable(row[P_LAT])}
