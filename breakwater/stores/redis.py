"""The `redis` sink: every vessel's latest state and a GEO index, for maps and live queries.

Key layout (prefix `prod:` as an example; `{bwN}` is a Redis Cluster hash tag):

    prod:{bw7}:vessel:257123000   hash: latest position and static data of one vessel
    prod:{bw7}:geo                GEO set: current positions of the vessels of bucket 7
    prod:vessels:deleted          set: soft-deleted MMSIs, hidden from queries
    prod:updates                  stream of applied updates (only when stream_maxlen > 0)

A vessel's bucket is `mmsi % buckets`. The newer-wins script (latest_state.lua) touches one
bucket's keys per call, all with the same hash tag, so it runs unchanged on Redis Cluster,
where buckets spread over the shards. A batch is written with one pipeline: one EVALSHA per
bucket that has updates, never a round trip per message. Only each vessel's newest position
of a batch is sent; the older ones count as duplicates, since they could not change anything.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import redis
from redis.cluster import RedisCluster

from breakwater.errors import ConfigError, PoisonRecord, StoreError, StoreUnavailable
from breakwater.reports import (
    KIND_POSITION,
    KIND_STATIC,
    POSITION_FIELDS,
    STATIC_FIELDS,
    ReportBatch,
    newest_per_vessel,
)
from breakwater.stores.base import SINK_REDIS, WriteResult, mask_url, redact

REDIS_SETTING = "BREAKWATER_REDIS_URL (--redis-url)"
_SCRIPT = files("breakwater.stores").joinpath("latest_state.lua").read_text()
# Position and static values stored in the hash (the identity columns are stored by the script).
_POSITION_VALUES = [f for f in POSITION_FIELDS if f not in ("mmsi", "received_ms", "digest")]
_STATIC_VALUES = [f for f in STATIC_FIELDS[4:15]]
# Server replies that mean "try again later", not "this data is wrong".
_TRANSIENT_REPLIES = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOSCRIPT")


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
        raise ConfigError(REDIS_SETTING, f"cannot use {mask_url(url)}: {redact(str(e), url)}") from e


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class RedisKeys:
    """Every key name Breakwater uses in Redis, for one prefix."""

    def __init__(self, prefix: str = "", buckets: int = 16) -> None:
        self.prefix = prefix
        self.buckets = buckets

    def bucket(self, mmsi: int) -> int:
        return mmsi % self.buckets

    def vessel(self, mmsi: int) -> str:
        return f"{self.prefix}{{bw{self.bucket(mmsi)}}}:vessel:{mmsi}"

    def geo(self, bucket: int) -> str:
        return f"{self.prefix}{{bw{bucket}}}:geo"

    @property
    def deleted(self) -> str:
        return f"{self.prefix}vessels:deleted"

    @property
    def updates(self) -> str:
        return f"{self.prefix}updates"

    def pattern(self) -> str:
        """SCAN pattern of this deployment's vessel hashes."""
        return f"{self.prefix}{{bw*}}:vessel:*"


def classify_redis_error(error: BaseException) -> StoreError:
    message = str(error)[:300] or type(error).__name__
    if isinstance(error, redis.ResponseError) and not message.startswith(_TRANSIENT_REPLIES):
        return PoisonRecord(SINK_REDIS, message)
    return StoreUnavailable(SINK_REDIS, f"{type(error).__name__}: {message}")


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

    def close(self) -> None:
        self.client.close()

    def write(self, batch: ReportBatch) -> WriteResult:
        positions = newest_per_vessel(batch.positions)
        superseded = len(batch.positions) - len(positions)
        updates: dict[int, list[tuple[str, list[Any]]]] = {}
        for row in positions:
            values = dict(zip(POSITION_FIELDS, row, strict=True))
            flat = [x for f in _POSITION_VALUES for x in (f, _text(values[f]))]
            flat += ["source", batch.source]
            update = ["p", row[0], str(row[1]), str(row[2]), _text(values["lon"]), _text(values["lat"]), flat]
            updates.setdefault(self.keys.bucket(row[0]), []).append((self.keys.vessel(row[0]), update))
        for row in sorted(batch.statics, key=lambda r: (r[1], r[2])):
            values = dict(zip(STATIC_FIELDS, row, strict=True))
            flat = [x for f in _STATIC_VALUES if values[f] is not None for x in (f, str(values[f]))]
            update = ["s", row[0], str(row[1]), str(row[2]), "", "", flat]
            updates.setdefault(self.keys.bucket(row[0]), []).append((self.keys.vessel(row[0]), update))
        if not updates:
            return WriteResult(0, superseded)
        try:
            applied = self._run(updates)
        except (redis.RedisError, OSError) as e:
            raise classify_redis_error(e) from e
        sent = sum(len(u) for u in updates.values())
        return WriteResult(len(applied), sent - len(applied) + superseded)

    def _run(self, updates: dict[int, list[tuple[str, list[Any]]]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for bucket, items in updates.items():
            keys = [self.keys.geo(bucket)] + [key for key, _ in items]
            self.script(keys=keys, args=[json.dumps([u for _, u in items])], client=pipe)
        applied = [mmsi for result in pipe.execute() for mmsi in result]
        if applied and self.stream_maxlen:
            pipe = self.client.pipeline(transaction=False)
            for mmsi in applied:
                pipe.xadd(self.keys.updates, {"mmsi": mmsi}, maxlen=self.stream_maxlen, approximate=True)
            pipe.execute()
        return applied
