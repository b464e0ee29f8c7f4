"""The `redis` sink: every vessel's latest state and a GEO index, for maps and live queries.

Key layout (prefix `prod:` as an example; `{bwN}` is a Redis Cluster hash tag):

    prod:{bw7}:vessel:257123000   hash: latest position and static data of one vessel
    prod:{bw7}:geo                GEO set: current positions of the vessels of bucket 7
    prod:{bw7}:off_geo            set: vessels of bucket 7 whose latest position is beyond the
                                  latitudes GEO accepts (|lat| > 85.05112878): in their hash,
                                  not in the GEO index (`write_model`, rule 4)
    prod:vessels:deleted          set: soft-deleted MMSIs, hidden from queries
    prod:updates                  stream of applied updates (only when stream_maxlen > 0)

A vessel's bucket is `reports.shard_of(mmsi, buckets)`. The newer-wins script (latest_state.lua) touches one
bucket's keys per call, all with the same hash tag, so it runs unchanged on Redis Cluster,
where buckets spread over the shards. A batch is written with one pipeline: one EVALSHA per
bucket that has updates, never a round trip per message. Only each vessel's newest position
of a batch that has a valid position is sent; the others count as duplicates, since they
could not change anything (`breakwater.write_model` has the rules the script follows).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from breakwater.errors import ConfigError
from breakwater.models import VesselState, ms_to_datetime
from breakwater.reports import (
    KIND_POSITION,
    KIND_STATIC,
    POSITION_FIELDS,
    STATIC_FIELDS,
    ReportBatch,
    newest_per_vessel,
    shard_of,
)
from breakwater.stores.base import SINK_REDIS, WriteResult, mask_url, redact
from breakwater.stores.faults import classify_redis_error
from breakwater.write_model import GEO_MAX_LAT, STATIC_VALUE_FIELDS, geo_covers, plausible, positioned

REDIS_SETTING = "BREAKWATER_REDIS_URL (--redis-url)"
_SCRIPT = files("breakwater.stores").joinpath("latest_state.lua").read_text()
# Position and static values stored in the hash (the identity columns are stored by the script).
_POSITION_VALUES = [f for f in POSITION_FIELDS if f not in ("mmsi", "received_ms", "digest", "flag")]
_STATIC_VALUES = list(STATIC_VALUE_FIELDS)


def connect(url: str, *, timeout_s: float = 5.0) -> Any:
    """A client for `url`; `?cluster=true` on the URL means Redis Cluster."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": True,
    }
    if "cluster=true" in url:
        base, _, query = url.partition("?")
        rest = "&".join(p for p in query.split("&") if p != "cluster=true")
        return RedisCluster.from_url(base + (f"?{rest}" if rest else ""), **options)
    return redis.Redis.from_url(url, health_check_interval=30, **options)


def check_redis(url: str, *, timeout_s: float) -> None:
    try:
        client = connect(url, timeout_s=timeout_s)
        client.ping()
        client.close()
    except (redis.RedisError, OSError, ValueError) as e:
        raise cannot_use(url, e) from e


def cannot_use(url: str, error: Exception) -> ConfigError:
    """The one line that names the setting and the client's own reason, password masked."""
    cause = redact(str(error), url) or type(error).__name__
    return ConfigError(REDIS_SETTING, f"cannot use {mask_url(url)}: {cause}")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class RedisKeys:
    """Every key name Breakwater uses in Redis, for one prefix."""

    def __init__(self, prefix: str = "", buckets: int = 16) -> None:
        self.prefix = prefix
        self.buckets = buckets

    def bucket(self, mmsi: int) -> int:
        return shard_of(mmsi, self.buckets)

    def vessel(self, mmsi: int) -> str:
        return f"{self.prefix}{{bw{self.bucket(mmsi)}}}:vessel:{mmsi}"

    def geo(self, bucket: int) -> str:
        return f"{self.prefix}{{bw{bucket}}}:geo"

    def off_geo(self, bucket: int) -> str:
        """The bucket's vessels whose latest position the GEO index cannot hold."""
        return f"{self.prefix}{{bw{bucket}}}:off_geo"

    @property
    def deleted(self) -> str:
        return f"{self.prefix}vessels:deleted"

    @property
    def updates(self) -> str:
        return f"{self.prefix}updates"

    def pattern(self) -> str:
        """SCAN pattern of this deployment's vessel hashes."""
        return f"{self.prefix}{{bw*}}:vessel:*"


class RedisSink:
    name = SINK_REDIS
    kinds = frozenset({KIND_POSITION, KIND_STATIC})

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        buckets: int = 16,
        stream_maxlen: int = 0,
        timeout_s: float = 5.0,
        client: Any = None,
    ) -> None:
        self.keys = RedisKeys(prefix, buckets)
        self.stream_maxlen = stream_maxlen
        self.client = client or connect(url, timeout_s=timeout_s)
        self.script = self.client.register_script(_SCRIPT)
        # Positions written to a vessel hash but kept out of the GEO index (polar latitudes).
        self.off_geo_positions = 0

    def close(self) -> None:
        self.client.close()

    def prepare(self, batch: ReportBatch) -> tuple[ReportBatch, int]:
        """Only each vessel's newest plausible position with a valid position can change its
        latest state. Plausible static reports all stay: each may carry fields the others leave
        empty. Flagged reports change nothing here (write_model rule 4)."""
        positions = newest_per_vessel(positioned(batch.positions))
        statics = plausible(batch.statics)
        prepared = ReportBatch(batch.source, batch.read_ms, positions, statics, [])
        return prepared, len(batch.positions) - len(positions) + len(batch.statics) - len(statics)

    def write(self, batch: ReportBatch) -> WriteResult:
        prepared, superseded = self.prepare(batch)
        positions = prepared.positions
        updates: dict[int, list[tuple[str, list[Any]]]] = {}
        for row in positions:
            values = dict(zip(POSITION_FIELDS, row, strict=True))
            flat = [x for f in _POSITION_VALUES for x in (f, _text(values[f]))]
            flat += ["source", batch.source]
            update = ["p", row[0], str(row[1]), str(row[2]), _text(values["lon"]), _text(values["lat"]), flat]
            updates.setdefault(self.keys.bucket(row[0]), []).append((self.keys.vessel(row[0]), update))
        for row in sorted(prepared.statics, key=lambda r: (r[1], r[2])):
            values = dict(zip(STATIC_FIELDS, row, strict=True))
            flat = [x for f in _STATIC_VALUES if values[f] is not None for x in (f, str(values[f]))]
            update = ["s", row[0], str(row[1]), str(row[2]), "", "", flat]
            updates.setdefault(self.keys.bucket(row[0]), []).append((self.keys.vessel(row[0]), update))
        if not updates:
            return WriteResult(0, superseded)
        try:
            try:
                applied = self._run(updates)
            except NoScriptError:
                # The script cache was flushed (SCRIPT FLUSH, a restart, a failover) between
                # redis-py's SCRIPT EXISTS and the EVALSHA: load it again and try once more.
                # Each update is newer-wins, so one that did land is a duplicate the second time.
                self.script.sha = self.client.script_load(self.script.script)
                applied = self._run(updates)
        except (redis.RedisError, OSError) as e:
            raise classify_redis_error(SINK_REDIS, e) from e
        sent = sum(len(u) for u in updates.values())
        return WriteResult(len(applied), sent - len(applied) + superseded)

    def _run(self, updates: dict[int, list[tuple[str, list[Any]]]]) -> list[Any]:
        calls = [
            (
                [self.keys.geo(bucket), self.keys.off_geo(bucket), *(key for key, _ in items)],
                [json.dumps([u for _, u in items])],
            )
            for bucket, items in updates.items()
        ]
        if isinstance(self.client, RedisCluster):
            # redis-py refuses EVALSHA in a cluster pipeline: one call per bucket, each routed
            # to the shard that owns the bucket's hash slot.
            results = [self.script(keys=keys, args=args) for keys, args in calls]
        else:
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                self.script(keys=keys, args=args, client=pipe)
            results = pipe.execute()
        applied = [mmsi for changed, _ in results for mmsi in changed]
        self.off_geo_positions += sum(int(off_geo) for _, off_geo in results)
        if applied and self.stream_maxlen:
            pipe = self.client.pipeline(transaction=False)
            for mmsi in applied:
                pipe.xadd(self.keys.updates, {"mmsi": mmsi}, maxlen=self.stream_maxlen, approximate=True)
            pipe.execute()
        return applied


def _state_from_hash(data: dict[str, str], distance_km: float | None = None) -> VesselState:
    """A vessel hash as a VesselState ("" in a field means not available)."""
    values: dict[str, Any] = {k: (v if v != "" else None) for k, v in data.items()}
    ms = values.get("pos_ms")
    return VesselState(
        mmsi=int(data["mmsi"]),
        received_at=None if ms is None else ms_to_datetime(int(ms)),
        lat=values.get("lat"),
        lon=values.get("lon"),
        sog_kn=values.get("sog_kn"),
        cog_deg=values.get("cog_deg"),
        heading_deg=values.get("heading_deg"),
        nav_status=values.get("nav_status"),
        msg_type=values.get("msg_type"),
        name=values.get("name"),
        callsign=values.get("callsign"),
        ship_type=values.get("ship_type"),
        source=values.get("source"),
        station=values.get("station"),
        distance_km=distance_km,
    )


_BEYOND_GEO = (
    f"Redis's GEO index holds no latitude beyond ±{GEO_MAX_LAT}°: "
    "ask the SQL store for this area (Client.nearby and Client.in_box do)"
)


class RedisQueries:
    """The live picture: latest state by MMSI, and geo queries over every bucket's index.

    A Redis that cannot be reached or used is a ConfigError naming the setting, whether at
    the first call (which pings it) or later: a query has no queue to wait in."""

    def __init__(
        self, url: str, *, prefix: str = "", buckets: int = 16, timeout_s: float = 5.0, client: Any = None
    ) -> None:
        self.url = url
        self.keys = RedisKeys(prefix, buckets)
        self._pinged = False
        try:
            self.client = client or connect(url, timeout_s=timeout_s)
        except (redis.RedisError, ValueError) as e:
            raise cannot_use(self.url, e) from e

    @contextmanager
    def _answering(self) -> Iterator[None]:
        try:
            if not self._pinged:
                self.client.ping()
                self._pinged = True
            yield
        except (redis.RedisError, OSError) as e:
            raise cannot_use(self.url, e) from e

    def close(self) -> None:
        self.client.close()

    def latest(self, mmsi: int) -> VesselState | None:
        with self._answering():
            if self.client.sismember(self.keys.deleted, mmsi):
                return None
            data = self.client.hgetall(self.keys.vessel(mmsi))
        return _state_from_hash(data) if data and "pos_ms" in data else None

    def _search_buckets(self, **query: Any) -> list[Any]:
        """One GEOSEARCH per bucket, in one pipeline: the results of every bucket."""
        with self._answering():
            pipe = self.client.pipeline(transaction=False)
            for bucket in range(self.keys.buckets):
                pipe.geosearch(self.keys.geo(bucket), unit="km", **query)
            results = pipe.execute()
        return [hit for result in results for hit in result]

    def nearby(self, lat: float, lon: float, radius_km: float, limit: int = 100) -> list[VesselState]:
        """GEOSEARCH every bucket, merge by distance, then fetch the hashes in one pipeline.

        Only where the circle stays within GEO's latitudes; `Client.nearby` asks SQL beyond."""
        from breakwater.stores.sql_queries import EARTH_RADIUS_KM

        reach = math.degrees(radius_km / EARTH_RADIUS_KM)
        if not geo_covers(lat - reach, lat + reach):
            raise ValueError(_BEYOND_GEO)
        found = self._search_buckets(
            longitude=lon, latitude=lat, radius=radius_km, withdist=True, sort="ASC", count=limit
        )
        hits: list[tuple[float | None, int]] = sorted(
            ((float(dist), int(member)) for member, dist in found), key=lambda hit: (hit[0], hit[1])
        )
        return self._states(hits, limit)

    def in_box(self, south: float, west: float, north: float, east: float, limit: int = 1000) -> list[VesselState]:
        """GEOSEARCH BYBOX around the box's centre, then the exact bounds (a box in km is
        not a box in degrees)."""
        from breakwater.stores.sql_queries import haversine_km

        if not geo_covers(south, north):
            raise ValueError(_BEYOND_GEO)
        centre_lat, centre_lon = (south + north) / 2, (west + east) / 2
        height_km = haversine_km(south, centre_lon, north, centre_lon)
        width_km = max(haversine_km(lat, west, lat, east) for lat in (south, centre_lat, north))
        found = self._search_buckets(
            longitude=centre_lon, latitude=centre_lat, width=width_km * 1.01, height=height_km * 1.01, withcoord=True
        )
        inside = sorted(int(member) for member, (lon, lat) in found if south <= lat <= north and west <= lon <= east)
        return self._states([(None, m) for m in inside], limit)

    def _states(self, hits: list[tuple[float | None, int]], limit: int) -> list[VesselState]:
        with self._answering():
            deleted = {int(m) for m in self.client.smembers(self.keys.deleted)}
            hits = [h for h in hits if h[1] not in deleted][:limit]
            pipe = self.client.pipeline(transaction=False)
            for _, mmsi in hits:
                pipe.hgetall(self.keys.vessel(mmsi))
            hashes = pipe.execute()
        return [
            _state_from_hash(data, None if dist is None else round(dist, 3))
            for (dist, _), data in zip(hits, hashes, strict=True)
            if data
        ]

    def vessel_count(self) -> int:
        with self._answering():
            return sum(self.client.zcard(self.keys.geo(b)) for b in range(self.keys.buckets))

    def set_deleted(self, mmsi: int, deleted: bool) -> None:
        with self._answering():
            if deleted:
                self.client.sadd(self.keys.deleted, mmsi)
            else:
                self.client.srem(self.keys.deleted, mmsi)

    def purge(self, mmsis: list[int]) -> int:
        """Remove the vessels' hashes and index entries for good."""
        with self._answering():
            pipe = self.client.pipeline(transaction=False)
            for mmsi in mmsis:
                pipe.delete(self.keys.vessel(mmsi))
                pipe.zrem(self.keys.geo(self.keys.bucket(mmsi)), mmsi)
                pipe.srem(self.keys.deleted, mmsi)
            results = pipe.execute()
        return sum(int(r) for r in results[::3])
