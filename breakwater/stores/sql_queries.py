"""Reading the SQL store, and the vessel operations that change it (soft delete, purge).

Soft-deleted vessels drop out of every query; their rows stay until an operator purges them.
Every statement is built with SQLAlchemy Core, so every value is a bound parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from breakwater.errors import NotFoundError
from breakwater.models import FieldOrigin, StoreCounts, TrackPoint, Vessel, VesselState, as_utc
from breakwater.reports import KIND_POSITION
from breakwater.stores import schema
from breakwater.stores.engine import cannot_use, check_store, make_engine
from breakwater.write_model import STATIC_VALUE_FIELDS

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _not_deleted(mmsi_column: Any) -> Any:
    """No soft-deleted vessel row for this MMSI (an alias: the outer query may join vessels)."""
    v = schema.vessels.alias("deleted_vessel")
    return ~exists().where(and_(v.c.mmsi == mmsi_column, v.c.deleted_at.is_not(None)))


class SqlQueries:
    """Reads an existing store and never creates one: the first use checks that the database
    answers and holds Breakwater's schema, and says which setting to fix when it does not."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, engine: Engine | None = None) -> None:
        self.url = url
        self._engine = engine or make_engine(url, timeout_s=timeout_s, create=False)
        self._checked = False

    @property
    def engine(self) -> Engine:
        """The engine, once the store has been found (ConfigError naming the setting if not)."""
        if not self._checked:
            check_store(self._engine, self.url)
            self._checked = True
        return self._engine

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for one query; losing the database is a ConfigError, as at the start."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except (OperationalError, InterfaceError) as e:
            raise cannot_use(self.url, e) from e

    def close(self) -> None:
        self._engine.dispose()

    def latest(self, mmsi: int) -> VesselState | None:
        states = self._states(schema.latest_positions.c.mmsi == mmsi, limit=1)
        return states[0] if states else None

    def _states(self, where: Any, limit: int) -> list[VesselState]:
        lp, v = schema.latest_positions, schema.vessels
        query = (
            select(lp, v.c.name, v.c.callsign, v.c.ship_type)
            .select_from(lp.outerjoin(v, v.c.mmsi == lp.c.mmsi))
            .where(where, _not_deleted(lp.c.mmsi))
            .order_by(lp.c.mmsi)
            .limit(limit)
        )
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            VesselState(
                **{k: row[k] for k in VesselState.model_fields if k in row and k != "distance_km"},
            )
            for row in rows
        ]

    def track(
        self, mmsi: int, start: datetime | None = None, end: datetime | None = None, limit: int | None = None
    ) -> list[TrackPoint]:
        p, r = schema.positions, schema.receptions
        query = select(
            p.c.received_at,
            p.c.digest,
            p.c.lat,
            p.c.lon,
            p.c.sog_kn,
            p.c.cog_deg,
            p.c.heading_deg,
            p.c.nav_status,
            p.c.msg_type,
            p.c.flag,
            func.coalesce(p.c.station, p.c.source).label("receiver"),
        ).where(p.c.mmsi == mmsi, _not_deleted(p.c.mmsi))
        heard = select(r.c.received_at, r.c.digest, r.c.receiver).where(r.c.mmsi == mmsi, r.c.kind == KIND_POSITION)
        if start is not None:
            query, heard = query.where(p.c.received_at >= start), heard.where(r.c.received_at >= start)
        if end is not None:
            query, heard = query.where(p.c.received_at <= end), heard.where(r.c.received_at <= end)
        query = query.order_by(p.c.received_at, p.c.digest)
        if limit is not None:
            query = query.limit(limit)
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
            others: dict[tuple[datetime, int], list[str]] = {}
            for at, digest, receiver in conn.execute(heard.order_by(r.c.heard_at, r.c.receiver)) if rows else ():
                others.setdefault((as_utc(at), digest), []).append(receiver)
        return [
            TrackPoint(
                **{k: v for k, v in row.items() if k not in ("digest", "receiver")},
                receivers=[row["receiver"], *others.get((as_utc(row["received_at"]), row["digest"]), [])],
            )
            for row in rows
        ]

    def vessel(self, mmsi: int, *, include_deleted: bool = False) -> Vessel | None:
        """The vessel's merged static data, and for each field with a value the static report
        it came from (`Vessel.origins`)."""
        v = schema.vessels
        query = select(v).where(v.c.mmsi == mmsi)
        if not include_deleted:
            query = query.where(v.c.deleted_at.is_(None))
        with self._reading() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            wanted = [f for f in STATIC_VALUE_FIELDS if row[f] is not None]
            origins = self._origins(conn, mmsi, wanted)
        return Vessel(**row, origins=origins)

    @staticmethod
    def _origins(conn: Connection, mmsi: int, wanted: list[str]) -> dict[str, FieldOrigin]:
        """For each of `wanted`, the newest static report that carries it (write_model rule 3:
        the report whose value the merge kept), read newest first down the primary key."""
        s = schema.static_reports
        query = (
            select(s.c.received_at, s.c.source, s.c.station, *(s.c[f] for f in wanted))
            .where(s.c.mmsi == mmsi, s.c.flag.is_(None))
            .order_by(s.c.received_at.desc(), s.c.digest.desc())
        )
        origins: dict[str, FieldOrigin] = {}
        for report in conn.execute(query).mappings() if wanted else ():
            for f in wanted:
                if f not in origins and report[f] is not None:
                    origins[f] = FieldOrigin(
                        received_at=report["received_at"], source=report["source"], station=report["station"]
                    )
            if len(origins) == len(wanted):
                break
        return origins

    def nearby(self, lat: float, lon: float, radius_km: float, limit: int = 100) -> list[VesselState]:
        """Vessels whose latest position is within `radius_km`: a bounding box on the
        (lat, lon) index, then exact great-circle distances."""
        dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
        dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
        candidates = self.in_box(lat - dlat, lon - dlon, lat + dlat, lon + dlon, limit=1_000_000)
        found = []
        for state in candidates:
            assert state.lat is not None and state.lon is not None
            distance = haversine_km(lat, lon, state.lat, state.lon)
            if distance <= radius_km:
                found.append(state.model_copy(update={"distance_km": round(distance, 3)}))
        found.sort(key=lambda s: s.distance_km or 0.0)
        return found[:limit]

    def in_box(self, south: float, west: float, north: float, east: float, limit: int = 1000) -> list[VesselState]:
        lp = schema.latest_positions
        lon_ok = lp.c.lon.between(west, east) if west <= east else (lp.c.lon >= west) | (lp.c.lon <= east)
        return self._states(and_(lp.c.lat.between(south, north), lon_ok), limit)

    def counts(self) -> StoreCounts:
        p, s, o, lp, v = (
            schema.positions,
            schema.static_reports,
            schema.other_messages,
            schema.latest_positions,
            schema.vessels,
        )
        with self._reading() as conn:

            def scalar(q: Any) -> Any:
                return conn.execute(q).scalar()

            return StoreCounts(
                positions=scalar(select(func.count()).select_from(p)),
                static_reports=scalar(select(func.count()).select_from(s)),
                other_messages=scalar(select(func.count()).select_from(o)),
                vessels_with_position=scalar(select(func.count()).select_from(lp)),
                vessels_with_static_data=scalar(
                    select(func.count()).select_from(v).where(v.c.static_received_at.is_not(None))
                ),
                deleted_vessels=scalar(select(func.count()).select_from(v).where(v.c.deleted_at.is_not(None))),
                first_received_at=conn.execute(select(p.c.received_at).order_by(p.c.received_at).limit(1)).scalar(),
                last_received_at=conn.execute(
                    select(p.c.received_at).order_by(p.c.received_at.desc()).limit(1)
                ).scalar(),
            )

    # -- soft delete ---------------------------------------------------------------------------

    def delete_vessel(self, mmsi: int) -> bool:
        """Hide a vessel from every query; its rows stay. False if it was deleted already,
        NotFoundError if the store holds nothing of it."""
        v = schema.vessels
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            row = conn.execute(select(v.c.deleted_at).where(v.c.mmsi == mmsi)).first()
            if row is None:
                self._require_known(conn, mmsi)
                conn.execute(schema.vessels.insert().values(mmsi=mmsi, deleted_at=now))
                return True
            if row[0] is not None:
                return False
            conn.execute(update(v).where(v.c.mmsi == mmsi).values(deleted_at=now))
            return True

    def restore_vessel(self, mmsi: int) -> bool:
        """Undo a soft delete; False if it was not deleted, NotFoundError if never seen."""
        v = schema.vessels
        with self.engine.begin() as conn:
            self._require_known(conn, mmsi)
            result = conn.execute(
                update(v).where(v.c.mmsi == mmsi, v.c.deleted_at.is_not(None)).values(deleted_at=None)
            )
        return bool(result.rowcount)

    @staticmethod
    def _require_known(conn: Connection, mmsi: int) -> None:
        for table in (schema.vessels, schema.latest_positions, schema.static_reports, schema.other_messages):
            if conn.execute(select(table.c.mmsi).where(table.c.mmsi == mmsi).limit(1)).first() is not None:
                return
        raise NotFoundError(f"vessel {mmsi}: the store holds nothing of it")

    def deleted_vessels(self) -> list[int]:
        v = schema.vessels
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(v.c.mmsi).where(v.c.deleted_at.is_not(None)))]

    def purge_deleted(self) -> dict[str, int]:
        """Remove every row of the soft-deleted vessels for good; returns rows removed per table."""
        v = schema.vessels
        deleted = select(v.c.mmsi).where(v.c.deleted_at.is_not(None))
        removed = {}
        with self.engine.begin() as conn:
            for table in (schema.positions, schema.static_reports, schema.other_messages, schema.latest_positions):
                removed[table.name] = conn.execute(delete(table).where(table.c.mmsi.in_(deleted))).rowcount
            removed["vessels"] = conn.execute(delete(v).where(v.c.deleted_at.is_not(None))).rowcount
        return removed
