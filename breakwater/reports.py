"""The hot-path form of normalized reports: plain tuples in batches.

A report crosses two Ray boundaries (decode task -> writer actor -> store) and there are
thousands per second, so on the hot path it is a plain tuple whose columns are named by the
`*_FIELDS` constants below; tuples pickle about ten times faster than dicts or pydantic
models. `breakwater.models` holds the pydantic model of each kind with the same field names,
for the client API and for tests (`PositionReport.from_row`).

Times are integers in milliseconds since the Unix epoch (UTC) until a store turns them into
timestamps: integers compare exactly, which the idempotence keys need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# How a report's receive time was found, from best to worst.
TIME_FROM_TAG_BLOCK = "tag_block"  # NMEA 4.10 tag block `c:` field
TIME_FROM_TRAILER = "trailer"  # AMSA style `,<epoch>` after the checksum
TIME_FROM_FILE = "file"  # neither, in a file: the file's modification time
TIME_FROM_INGEST = "ingest"  # neither, on a live feed or a pipe: the time the line was read

POSITION_FIELDS = (
    "mmsi",
    "received_ms",
    "digest",
    "msg_type",
    "lat",
    "lon",
    "sog_kn",
    "cog_deg",
    "heading_deg",
    "nav_status",
    "rot_deg_min",
    "station",
    "time_source",
    "flag",
)
STATIC_FIELDS = (
    "mmsi",
    "received_ms",
    "digest",
    "msg_type",
    "imo",
    "callsign",
    "name",
    "ship_type",
    "to_bow_m",
    "to_stern_m",
    "to_port_m",
    "to_starboard_m",
    "eta",
    "draught_m",
    "destination",
    "station",
    "time_source",
    "flag",
)
OTHER_FIELDS = (
    "mmsi",
    "received_ms",
    "digest",
    "msg_type",
    "nmea",
    "station",
    "time_source",
    "flag",
)

# A receiver's copy of a report stored already (breakwater.fusion): the stored report's
# identity and kind, the receiver that heard the copy, and the copy's own receive time.
RECEPTION_FIELDS = ("mmsi", "received_ms", "digest", "kind", "receiver", "heard_ms")

# Why a report is kept in history but may not move a latest state or a static merge
# (breakwater.plausibility): the `flag` column, None for a plausible report.
FLAG_CLOCK_AHEAD = "clock_ahead"  # receive time beyond max_clock_skew_s ahead of the ingest clock
FLAG_TOO_FAST = "too_fast"  # the implied speed from the vessel's previous fix is above max_speed_kn
FLAG_DEMOTED = "demoted"  # from a demoted receiver while a trusted one covers the vessel
FLAGS = (FLAG_CLOCK_AHEAD, FLAG_TOO_FAST, FLAG_DEMOTED)

# Column positions shared by every kind of row: the identity first, provenance and flag last.
MMSI, RECEIVED_MS, DIGEST, MSG_TYPE = 0, 1, 2, 3
STATION, TIME_SOURCE, FLAG = -3, -2, -1
# Position columns used by the stores.
P_LAT, P_LON = 4, 5

PositionRow = tuple[Any, ...]
StaticRow = tuple[Any, ...]
OtherRow = tuple[Any, ...]

POSITION_TYPES = frozenset({1, 2, 3, 18, 19, 27})
STATIC_TYPES = frozenset({5, 19, 24})  # type 19 carries both a position and static data

KIND_POSITION = "position"
KIND_STATIC = "static"
KIND_OTHER = "other"
KINDS = (KIND_POSITION, KIND_STATIC, KIND_OTHER)  # the kinds of report
KIND_RECEPTION = "reception"
RECORD_KINDS = (*KINDS, KIND_RECEPTION)  # what a batch carries to the stores


def with_flag(row: tuple[Any, ...], flag: str) -> tuple[Any, ...]:
    """The row flagged: kept in history, never moving a latest state or a static merge."""
    return (*row[:FLAG], flag)


_WIDTH = {KIND_POSITION: len(POSITION_FIELDS), KIND_STATIC: len(STATIC_FIELDS), KIND_OTHER: len(OTHER_FIELDS)}


def current_form(kind: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as this release writes it. A report journaled before rows had a flag (the
    dead-letter journal outlives releases) is one column short: it was plausible."""
    width = _WIDTH.get(kind)
    return (*row, None) if width is not None and len(row) == width - 1 else row


def shard_of(mmsi: int, n: int) -> int:
    """Which of `n` shards (writers, Redis buckets) a vessel belongs to.

    Not `mmsi % n`: MMSIs are handed out in round numbers, and in the captures 85% of the
    reports have an even MMSI (most end in 0). Fibonacci hashing spreads them evenly and is
    stable, so every report of a vessel always lands in the same shard."""
    return (((mmsi * 0x9E3779B1) & 0xFFFFFFFF) * n) >> 32


def row_key(row: tuple[Any, ...]) -> tuple[int, int, int]:
    """The identity of a report: the same message received at the same time is one report."""
    return (row[MMSI], row[RECEIVED_MS], row[DIGEST])


def is_newer(candidate: tuple[Any, ...], current: tuple[Any, ...]) -> bool:
    """Newer-wins order for latest state: receive time first, then the digest.

    The digest breaks ties between different reports received in the same millisecond, so
    every writer and every retry picks the same winner whatever order they arrive in.
    """
    return (candidate[RECEIVED_MS], candidate[DIGEST]) > (current[RECEIVED_MS], current[DIGEST])


@dataclass(slots=True)
class ReportBatch:
    """Normalized reports of one shard of one input batch, ready for the writers.

    `read_ms` is when the reader cut the batch: the start of the end-to-end latency that the
    writers measure. `receptions` are other receivers' copies of reports stored already
    (`breakwater.fusion`): records for the stores that keep them, not reports.
    """

    source: str
    read_ms: int
    positions: list[PositionRow] = field(default_factory=list)
    statics: list[StaticRow] = field(default_factory=list)
    others: list[OtherRow] = field(default_factory=list)
    receptions: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions) + len(self.statics) + len(self.others) + len(self.receptions)

    def rows(self, kind: str) -> list[tuple[Any, ...]]:
        if kind == KIND_POSITION:
            return self.positions
        if kind == KIND_STATIC:
            return self.statics
        if kind == KIND_OTHER:
            return self.others
        if kind == KIND_RECEPTION:
            return self.receptions
        raise ValueError(f"no such kind of record: {kind!r}")

    def counts(self) -> dict[str, int]:
        return {kind: len(self.rows(kind)) for kind in KINDS}


def newest_per_vessel(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Keep each MMSI's newest row: what a latest-state store needs from a batch."""
    newest: dict[int, tuple[Any, ...]] = {}
    for row in rows:
        current = newest.get(row[MMSI])
        if current is None or is_newer(row, current):
            newest[row[MMSI]] = row
    return list(newest.values())
