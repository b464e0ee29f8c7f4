"""The Python client: query what Breakwater stored, and operate a running deployment.

    from breakwater import Client

    client = Client(database_url="postgresql://postgres@127.0.0.1/ais", redis_url="redis://127.0.0.1:6379/0")
    client.latest(257123000)                        # VesselState, from Redis when configured
    client.track(257123000, start=..., end=...)     # [TrackPoint], from the SQL history
    client.vessel(257123000)                        # Vessel: name, call sign, size, voyage
    client.nearby(59.9, 10.7, radius_km=5)          # [VesselState] with distance_km
    client.counts()                                 # StoreCounts
    client.dlq_stats(); client.breakers()           # operations (see breakwater.operations)

Queries need only the stores. Operations use the actors of the cluster named by `ray_address`,
RAY_ADDRESS or the `ray_address` setting, and the journal file when none is named.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from breakwater.admin import AdminGuard, who_am_i
from breakwater.config import Settings, load_settings
from breakwater.errors import ConfigError
from breakwater.models import StoreCounts, TrackPoint, Vessel, VesselState
from breakwater.operations import LocalOperations, Operations
from breakwater.runtime import load_runtime, named_address
from breakwater.stores.deployment import load_admin_digest
from breakwater.stores.sql_queries import EARTH_RADIUS_KM, SqlQueries
from breakwater.write_model import geo_covers


class Client:
    def __init__(self, settings: Settings | None = None, *, ray_address: str | None = None, **overrides: Any) -> None:
        """`settings`, or settings loaded from the environment with `overrides` on top
        (`database_url=...`, `redis_url=...`, `redis_prefix=...`)."""
        self.settings = settings or load_settings(overrides)
        self.ray_address = ray_address
        self.sql = SqlQueries(self.settings.database_url, timeout_s=self.settings.store_timeout_s)
        self.redis = None
        if self.settings.redis_url:
            from breakwater.stores.redis import RedisQueries

            self.redis = RedisQueries(
                self.settings.redis_url,
                prefix=self.settings.redis_prefix,
                buckets=self.settings.redis_buckets,
                timeout_s=self.settings.redis_timeout_s,
            )
        self._ops: Operations | None = None

    def close(self) -> None:
        self.sql.close()
        if self.redis is not None:
            self.redis.close()
        if self._ops is not None:
            self._ops.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries -------------------------------------------------------------------------------

    def latest(self, mmsi: int) -> VesselState | None:
        """The vessel's latest position: from Redis when configured, else from SQL."""
        if self.redis is not None:
            return self.redis.latest(mmsi)
        return self.sql.latest(mmsi)

    def track(
        self, mmsi: int, start: datetime | None = None, end: datetime | None = None, limit: int | None = None
    ) -> list[TrackPoint]:
        """Every position of the vessel between `start` and `end` (inclusive), oldest first."""
        return self.sql.track(mmsi, start, end, limit)

    def vessel(self, mmsi: int) -> Vessel | None:
        return self.sql.vessel(mmsi)

    def nearby(self, lat: float, lon: float, radius_km: float, limit: int = 100) -> list[VesselState]:
        """Vessels whose latest position is within `radius_km`, nearest first.

        From Redis when configured, except where the circle reaches beyond the latitudes
        Redis's GEO index holds (±85.05°): SQL keeps every latest position and answers there."""
        reach = math.degrees(radius_km / EARTH_RADIUS_KM)
        if self.redis is not None and geo_covers(lat - reach, lat + reach):
            return self.redis.nearby(lat, lon, radius_km, limit)
        return self.sql.nearby(lat, lon, radius_km, limit)

    def in_box(self, south: float, west: float, north: float, east: float, limit: int = 1000) -> list[VesselState]:
        """Vessels whose latest position is inside the box (degrees), by MMSI; from SQL where
        the box reaches beyond Redis's GEO latitudes, as `nearby`."""
        if self.redis is not None and geo_covers(south, north):
            return self.redis.in_box(south, west, north, east, limit)
        return self.sql.in_box(south, west, north, east, limit)

    def counts(self) -> StoreCounts:
        return self.sql.counts()

    # -- vessels: soft delete, restore, purge -------------------------------------------------

    def delete_vessel(self, mmsi: int, *, admin_token: str | None, requested_by: str | None = None) -> bool:
        """Hide a vessel from every query; its rows stay until `purge_deleted`. False if it was
        hidden already; NotFoundError if the store has never heard of it."""
        self._guard(admin_token, f"delete vessel {mmsi}", requested_by)
        deleted = self.sql.delete_vessel(mmsi)
        if self.redis is not None:
            self.redis.set_deleted(mmsi, True)
        return deleted

    def restore_vessel(self, mmsi: int, *, admin_token: str | None, requested_by: str | None = None) -> bool:
        self._guard(admin_token, f"restore vessel {mmsi}", requested_by)
        restored = self.sql.restore_vessel(mmsi)
        if self.redis is not None:
            self.redis.set_deleted(mmsi, False)
        return restored

    def purge_deleted(
        self, *, confirm: bool, admin_token: str | None, requested_by: str | None = None
    ) -> dict[str, int]:
        """Remove every row of every soft-deleted vessel for good. Needs `confirm=True`."""
        if not confirm:
            raise ValueError("purging deletes rows for good: pass confirm=True (--yes on the CLI)")
        self._guard(admin_token, "purge deleted vessels", requested_by)
        mmsis = self.sql.deleted_vessels()
        removed = self.sql.purge_deleted()
        if self.redis is not None:
            removed["redis_vessels"] = self.redis.purge(mmsis)
        return removed

    def _guard(self, token: str | None, operation: str, requested_by: str | None) -> None:
        """Checked against the digest the SQL store holds (written by the deployment's ingest
        job), never against this process's own settings."""
        who = who_am_i() + (f" for {requested_by}" if requested_by else "")
        AdminGuard(load_admin_digest(self.sql.engine)).check(token, operation, who)

    # -- operations ----------------------------------------------------------------------------

    def operations(self) -> Operations:
        """The actors of the cluster named by `ray_address`, RAY_ADDRESS or the `ray_address`
        setting; with none named, the journal on this machine. A named cluster that cannot be
        reached is a ConfigError, one without Breakwater's actors a NotRunningError: never a
        reason to use another store."""
        if self._ops is None:
            address = named_address(self.ray_address, self.settings.ray_address)
            if address is None:
                journal = self.settings.dlq.path
                if not journal.is_file():  # looking never creates one
                    raise ConfigError(
                        "BREAKWATER_DLQ__PATH (--dlq-path)",
                        f"there is no dead-letter journal at {journal}: no job has run with it here; "
                        "name the cluster (--address) or the journal (--dlq-path)",
                    )
                self._ops = LocalOperations(self.settings)
            else:
                self._ops = load_runtime().cluster_operations(self.settings, address)
        return self._ops

    def dlq_stats(self) -> dict[str, Any]:
        return self.operations().dlq_stats()

    def dlq_peek(self, n: int = 10, *, sink: str | None = None, dead: bool = False) -> list[dict[str, Any]]:
        return self.operations().dlq_peek(n, sink, dead)

    def dlq_retry_now(self, *, sink: str | None = None) -> dict[str, int]:
        """Retry every waiting record now, whatever its schedule (through the breakers)."""
        return self.operations().drain(force=True, sink=sink)

    def dlq_clear(self, *, confirm: bool, admin_token: str | None, sink: str | None = None) -> int:
        """Delete waiting records. Needs `confirm=True` and the admin token."""
        if not confirm:
            raise ValueError("clearing deletes waiting records for good: pass confirm=True (--yes)")
        return self.operations().dlq_admin("clear", admin_token, who_am_i(), sink)

    def dlq_clear_dead(self, *, confirm: bool, admin_token: str | None, sink: str | None = None) -> int:
        if not confirm:
            raise ValueError("clearing deletes dead records for good: pass confirm=True (--yes)")
        return self.operations().dlq_admin("clear_dead", admin_token, who_am_i(), sink)

    def dlq_redrive(self, *, admin_token: str | None, sink: str | None = None) -> int:
        """Move dead records back into the queue with fresh attempts, due now."""
        return self.operations().dlq_admin("redrive", admin_token, who_am_i(), sink)

    def breakers(self) -> list[dict[str, Any]]:
        return self.operations().breakers()

    def force_breaker(self, sink: str, state: str, *, admin_token: str | None) -> dict[str, Any]:
        """Hold a sink's breaker "open" or "closed", or "release" it."""
        return self.operations().force_breaker(sink, state, admin_token, who_am_i())
