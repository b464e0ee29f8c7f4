"""Pydantic models: one per kind of normalized report, and what the client API returns.

The report models mirror the hot-path rows of `breakwater.reports` field for field
(`PositionReport.from_row(row)`), with times as aware UTC datetimes and units in the names.
None always means "not available" (AIS's sentinel values are turned into None on decode).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from breakwater.reports import OTHER_FIELDS, POSITION_FIELDS, STATIC_FIELDS

TimeSource = Literal["tag_block", "trailer", "file", "ingest"]


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def as_utc(value: datetime) -> datetime:
    """The same instant with `datetime.UTC` as its zone. PostgreSQL hands back its session's
    zone (`ZoneInfo('Etc/UTC')`, or the server's local one) and pydantic parses "Z" as its own
    `TzInfo(0)`: the client's answers compare and print alike whatever the store. A naive
    time is taken to be UTC already, as the CLI takes --start and --end."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    mmsi: int = Field(description="Maritime Mobile Service Identity")
    received_at: datetime = Field(description="receive time (UTC)")
    digest: int = Field(
        description="with MMSI and time, the report's identity: the CRC-32 of the AIS payload, or for a"
        " report without a receive time its place in the source (breakwater.framing.PLACE_SPAN)"
    )
    msg_type: int = Field(ge=1, le=27)
    station: str | None = Field(None, description="receiving station (tag block s:)")
    time_source: TimeSource = "ingest"
    flag: str | None = Field(
        None, description="why the report may not move a latest state (clock_ahead, too_fast, demoted)"
    )
    source: str | None = Field(None, description="the input the report came from")

    FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_row(cls, row: tuple[Any, ...], source: str | None = None) -> Any:
        values = dict(zip(cls.FIELDS, row, strict=True))
        values["received_at"] = ms_to_datetime(values.pop("received_ms"))
        return cls(**values, source=source)


class PositionReport(_Report):
    """Types 1, 2, 3 (class A), 18, 19 (class B) and 27 (long range)."""

    FIELDS = POSITION_FIELDS

    lat: float | None = Field(None, ge=-90, le=90, description="degrees north")
    lon: float | None = Field(None, ge=-180, le=180, description="degrees east")
    sog_kn: float | None = Field(None, ge=0, description="speed over ground, knots")
    cog_deg: float | None = Field(None, ge=0, lt=360, description="course over ground, degrees")
    heading_deg: int | None = Field(None, ge=0, le=359, description="true heading, degrees")
    nav_status: int | None = Field(None, ge=0, le=14, description="navigational status code")
    rot_deg_min: float | None = Field(None, description="rate of turn, degrees per minute")


class StaticReport(_Report):
    """Types 5 (class A static and voyage), 24 (class B, part A or B) and the static part of 19."""

    FIELDS = STATIC_FIELDS

    imo: int | None = None
    callsign: str | None = None
    name: str | None = None
    ship_type: int | None = Field(None, ge=1, le=255)
    to_bow_m: int | None = None
    to_stern_m: int | None = None
    to_port_m: int | None = None
    to_starboard_m: int | None = None
    eta: str | None = Field(None, description="'MM-DD HH:MM' UTC; AIS sends no year")
    draught_m: float | None = None
    destination: str | None = None


class OtherMessage(_Report):
    """A message of a type not normalized yet (base stations, aids to navigation, binary
    messages ...), kept whole as its NMEA text so nothing is lost."""

    FIELDS = OTHER_FIELDS

    nmea: str


class VesselState(BaseModel):
    """A vessel's latest position and what is known of it, as the live picture holds it."""

    mmsi: int
    received_at: UtcDatetime | None = None
    lat: float | None = None
    lon: float | None = None
    sog_kn: float | None = None
    cog_deg: float | None = None
    heading_deg: int | None = None
    nav_status: int | None = None
    msg_type: int | None = None
    name: str | None = None
    callsign: str | None = None
    ship_type: int | None = None
    source: str | None = Field(None, description="the input the latest position came from")
    station: str | None = Field(None, description="the receiving station of the latest position (tag block s:)")
    distance_km: float | None = Field(None, description="set by nearby queries")


class FieldOrigin(BaseModel):
    """Where one merged static field came from: the static report that carried it."""

    received_at: UtcDatetime
    source: str | None = None
    station: str | None = None


class Vessel(BaseModel):
    """Static and voyage data of a vessel, merged from its static reports."""

    mmsi: int
    imo: int | None = None
    callsign: str | None = None
    name: str | None = None
    ship_type: int | None = None
    to_bow_m: int | None = None
    to_stern_m: int | None = None
    to_port_m: int | None = None
    to_starboard_m: int | None = None
    eta: str | None = None
    draught_m: float | None = None
    destination: str | None = None
    static_received_at: UtcDatetime | None = None
    deleted_at: UtcDatetime | None = None
    origins: dict[str, FieldOrigin] = Field(
        default_factory=dict,
        description="per static field that has a value: the report it came from (its time, source and station)",
    )

    @property
    def length_m(self) -> int | None:
        if self.to_bow_m is None or self.to_stern_m is None:
            return None
        return self.to_bow_m + self.to_stern_m


class TrackPoint(BaseModel):
    received_at: UtcDatetime
    lat: float | None
    lon: float | None
    sog_kn: float | None = None
    cog_deg: float | None = None
    heading_deg: int | None = None
    nav_status: int | None = None
    msg_type: int
    flag: str | None = Field(
        None,
        description="why this report moves no latest state (clock_ahead, too_fast, demoted); None when plausible",
    )
    receivers: list[str | None] = Field(
        default_factory=list,
        description="who heard it: the stored report's receiver (station, else source), then every other"
        " receiver whose copy was fused into it (breakwater.fusion), in the order they heard it",
    )


class StoreCounts(BaseModel):
    positions: int
    static_reports: int
    other_messages: int
    vessels_with_position: int
    vessels_with_static_data: int
    deleted_vessels: int
    first_received_at: UtcDatetime | None = None
    last_received_at: UtcDatetime | None = None
