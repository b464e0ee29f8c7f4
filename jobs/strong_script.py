"""The strong script: the fastest plain single-process ingest a competent user would write.

The benchmark's second baseline (issue: "throughput against a strong baseline"). Beside the
plain script, which writes every position to Redis, this one does what any careful script
does in a few lines and nothing more:

- read the file in chunks of `--chunk` lines (5,000);
- pyais `IterMessages` over the chunk (it joins multi-sentence messages), `decode()`,
  `asdict()`, and the tag block's receive time (`c:`; the chunk's read time when there is none);
- positions (types 1, 2, 3, 18, 19, 27 with a valid latitude and longitude) and static reports
  (types 5, 24) `COPY`'d into two PostgreSQL tables without indexes or keys, one transaction
  per chunk;
- for Redis, only each vessel's newest position of the chunk: `HSET` of its hash and `GEOADD`,
  one pipeline per chunk.

No resilience, no idempotence (a second run doubles the tables), no accounting of what was
skipped: the work Breakwater does on top is what the benchmark prices.

    python -m jobs.strong_script corpus.nmea --database-url postgresql://postgres@127.0.0.1/ais \\
        --redis-url redis://127.0.0.1:6379/0 --redis-prefix strong:

It prints one JSON line: lines, messages, positions, statics, elapsed seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from pyais.exceptions import AISBaseException
from pyais.stream import IterMessages

from jobs.plain_script import open_lines, print_counts

GEO_MAX_LAT = 85.05112878
POSITION_TYPES = frozenset({1, 2, 3, 18, 19, 27})
STATIC_TYPES = frozenset({5, 24})
POSITION_COLUMNS = ("mmsi", "received_at", "msg_type", "lat", "lon", "sog_kn", "cog_deg", "heading_deg", "status")
STATIC_COLUMNS = ("mmsi", "received_at", "msg_type", "imo", "callsign", "shipname", "ship_type", "destination")
TABLES_SQL = (
    "CREATE TABLE IF NOT EXISTS strong_positions (mmsi bigint, received_at timestamptz, msg_type smallint, "
    "lat double precision, lon double precision, sog_kn real, cog_deg real, heading_deg smallint, status smallint)",
    "CREATE TABLE IF NOT EXISTS strong_statics (mmsi bigint, received_at timestamptz, msg_type smallint, "
    "imo bigint, callsign text, shipname text, ship_type smallint, destination text)",
)


def _receive_ms(message: Any, default_ms: int) -> int:
    tag = message.tag_block
    if tag is not None:
        tag.init()
        stamp = tag.receiver_timestamp
        if stamp and stamp.isdigit():
            value = int(stamp)
            return value if value > 4_102_444_800 else value * 1000
    return default_ms


def _number(value: Any) -> Any:
    """pyais hands enums (IntEnum) for some fields: their plain value for COPY."""
    return None if value is None else int(value)


class StrongWriter:
    def __init__(self, database_url: str, redis_url: str, prefix: str) -> None:
        import psycopg
        import redis

        self.pg = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"))
        for sql in TABLES_SQL:
            self.pg.execute(sql)
        self.pg.commit()
        self.redis = redis.Redis.from_url(redis_url)
        self.prefix = prefix

    def write(self, positions: list[tuple[Any, ...]], statics: list[tuple[Any, ...]]) -> None:
        with self.pg.cursor() as cur:
            for table, columns, rows in (
                ("strong_positions", POSITION_COLUMNS, positions),
                ("strong_statics", STATIC_COLUMNS, statics),
            ):
                if rows:
                    with cur.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
        self.pg.commit()
        newest: dict[int, tuple[Any, ...]] = {}
        for row in positions:
            current = newest.get(row[0])
            if current is None or row[1] >= current[1]:
                newest[row[0]] = row
        pipe = self.redis.pipeline(transaction=False)
        geo = f"{self.prefix}geo"
        for mmsi, (_, when, msg_type, lat, lon, sog, cog, heading, status) in newest.items():
            state = {"received_at": when.isoformat(), "msg_type": msg_type, "lat": lat, "lon": lon}
            optional = (("sog", sog), ("cog", cog), ("heading", heading), ("status", status))
            state.update({k: v for k, v in optional if v is not None})
            pipe.hset(f"{self.prefix}vessel:{mmsi}", mapping=state)
            if abs(lat) <= GEO_MAX_LAT:  # beyond it GEOADD fails: the Web Mercator limit
                pipe.geoadd(geo, (lon, lat, mmsi))
        pipe.execute()

    def close(self) -> None:
        self.pg.close()
        self.redis.close()


def run(path: Path, writer: StrongWriter | None, chunk: int) -> dict[str, Any]:
    started = time.perf_counter()
    counts = {"lines": 0, "messages": 0, "positions": 0, "statics": 0, "undecodable": 0}
    with open_lines(path) as f:
        while lines := list(islice(f, chunk)):
            counts["lines"] += len(lines)
            read_ms = int(time.time() * 1000)
            positions: list[tuple[Any, ...]] = []
            statics: list[tuple[Any, ...]] = []
            for message in IterMessages(lines):
                try:
                    m = message.decode().asdict()
                except (AISBaseException, ValueError, IndexError, TypeError):
                    counts["undecodable"] += 1
                    continue
                counts["messages"] += 1
                msg_type = m["msg_type"]
                if msg_type in POSITION_TYPES:
                    lat, lon = m.get("lat"), m.get("lon")
                    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
                        continue
                    when = datetime.fromtimestamp(_receive_ms(message, read_ms) / 1000, UTC)
                    positions.append(
                        (m["mmsi"], when, msg_type, lat, lon, m.get("speed"), m.get("course"),
                         m.get("heading"), _number(m.get("status")))
                    )  # fmt: skip
                elif msg_type in STATIC_TYPES:
                    when = datetime.fromtimestamp(_receive_ms(message, read_ms) / 1000, UTC)
                    statics.append(
                        (m["mmsi"], when, msg_type, m.get("imo"), m.get("callsign"), m.get("shipname"),
                         _number(m.get("ship_type")), m.get("destination"))
                    )  # fmt: skip
            counts["positions"] += len(positions)
            counts["statics"] += len(statics)
            if writer is not None:
                writer.write(positions, statics)
    if writer is not None:
        writer.close()
    counts["elapsed_s"] = round(time.perf_counter() - started, 3)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.strong_script", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="NMEA file, plain or gzip")
    parser.add_argument("--database-url", required=True, help="postgresql://...")
    parser.add_argument("--redis-url", required=True, help="redis://host:port/db")
    parser.add_argument("--redis-prefix", default="strong:", help="key prefix, default strong:")
    parser.add_argument("--chunk", type=int, default=5000, help="lines per chunk, default 5000")
    args = parser.parse_args(argv)
    writer = StrongWriter(args.database_url, args.redis_url, args.redis_prefix)
    print_counts(run(args.path, writer, args.chunk))
    return 0


if __name__ == "__main__":
    sys.exit(main())
