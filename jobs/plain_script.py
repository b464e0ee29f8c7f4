"""The plain script: what a user might write instead of Breakwater, for comparison.

One process, no Ray and no resilience: read a file, decode with pyais, and for each batch of
messages send one Redis pipeline (HSET of the vessel's latest state and GEOADD of its
position, per message) and copy every position into PostgreSQL. Positions go through a
temporary table and `INSERT ... ON CONFLICT DO NOTHING`, since a plain COPY into a table with
a unique key fails on the first duplicate, and real feeds repeat messages. A failed write
stops the script: that is the difference from Breakwater that the benchmark measures.

    python -m jobs.plain_script corpus.nmea --database-url postgresql://postgres@127.0.0.1/ais \\
        --redis-url redis://127.0.0.1:6379/0 --redis-prefix plain:

It prints one JSON line: lines, messages, positions, elapsed seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from pyais.exceptions import AISBaseException
from pyais.messages import NMEAMessage

POSITION_TYPES = frozenset({1, 2, 3, 18, 19, 27})
STATIC_TYPES = frozenset({5, 19, 24})
STATIC_FIELDS = ("shipname", "callsign", "imo", "ship_type", "destination", "draught")

TABLE_SQL = """
CREATE TABLE IF NOT EXISTS plain_positions (
    mmsi bigint NOT NULL,
    received_at timestamptz NOT NULL,
    digest bigint NOT NULL,
    msg_type smallint NOT NULL,
    lat double precision,
    lon double precision,
    sog_kn real,
    cog_deg real,
    heading_deg smallint,
    PRIMARY KEY (mmsi, received_at, digest)
)"""
COLUMNS = "mmsi, received_at, digest, msg_type, lat, lon, sog_kn, cog_deg, heading_deg"


def open_lines(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")  # type: ignore[return-value]


def split_line(line: bytes) -> tuple[int | None, bytes]:
    """(receive time in ms from the tag block's `c:` or an AMSA trailer, bare sentence)."""
    line = line.strip()
    received: int | None = None
    if line[:1] == b"\\":
        end = line.find(b"\\", 1)
        for field in line[1 : line.rfind(b"*", 0, end)].split(b","):
            if field[:2] == b"c:" and field[2:].isdigit():
                received = int(field[2:]) * 1000
        line = line[end + 1 :]
    star = line.rfind(b"*")
    if star >= 0 and line[star + 3 : star + 4] == b",":
        if received is None and line[star + 4 :].isdigit():
            received = int(line[star + 4 :]) * 1000
        line = line[: star + 3]
    return received, line


def messages(lines: Iterable[bytes]) -> Iterator[tuple[int | None, NMEAMessage]]:
    """Complete AIS messages with their receive time; multi-sentence ones joined. Lines that
    are not AIS, fail their checksum or lose a fragment are skipped."""
    groups: dict[tuple[Any, ...], tuple[int | None, list[NMEAMessage]]] = {}
    for line in lines:
        received, sentence = split_line(line)
        if sentence[:1] != b"!" or sentence[3:6] not in (b"VDM", b"VDO"):
            continue
        try:
            msg = NMEAMessage(sentence)
        except (AISBaseException, ValueError):
            continue
        if not msg.is_valid:
            continue
        if msg.frag_cnt == 1:
            yield received, msg
            continue
        key = (msg.seq_id, msg.channel, msg.talker_id, msg.frag_cnt)
        if msg.frag_num == 1:
            groups[key] = (received, [msg])
            continue
        group = groups.get(key)
        if group is None or len(group[1]) != msg.frag_num - 1:
            continue
        group[1].append(msg)
        if msg.frag_num == msg.frag_cnt:
            del groups[key]
            yield group[0], NMEAMessage.assemble_from_iterable(group[1])


def _valid_position(lat: Any, lon: Any) -> bool:
    return lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180


class PlainWriter:
    """Batches rows and writes them: one Redis pipeline and one COPY per batch."""

    def __init__(self, database_url: str, redis_url: str, prefix: str, batch: int) -> None:
        import psycopg
        import redis

        self.pg = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"))
        self.pg.execute(TABLE_SQL)
        self.pg.execute(f"CREATE TEMP TABLE staging AS SELECT {COLUMNS} FROM plain_positions WITH NO DATA")
        self.pg.commit()
        self.redis = redis.Redis.from_url(redis_url)
        self.prefix = prefix
        self.batch = batch
        self.states: list[tuple[int, dict[str, Any], tuple[float, float] | None]] = []
        self.positions: list[tuple[Any, ...]] = []
        self.written = 0
        self.positions_total = 0

    def add(self, received_ms: int, digest: int, m: Any) -> None:
        state: dict[str, Any] = {"received_ms": received_ms, "msg_type": m.msg_type}
        where = None
        if m.msg_type in POSITION_TYPES:
            lat, lon = m.lat, m.lon
            sog, cog, heading = m.speed, m.course, getattr(m, "heading", None)
            state.update(lat=lat, lon=lon, sog=sog, cog=cog, heading=heading)
            if _valid_position(lat, lon):
                where = (lon, lat)
            when = datetime.fromtimestamp(received_ms / 1000, UTC)
            self.positions.append((m.mmsi, when, digest, m.msg_type, lat, lon, sog, cog, heading))
            self.positions_total += 1
        if m.msg_type in STATIC_TYPES:
            state.update((f, getattr(m, f, None)) for f in STATIC_FIELDS)
        state = {k: (int(v) if isinstance(v, bool) else v) for k, v in state.items() if v is not None}
        self.states.append((m.mmsi, state, where))
        if len(self.states) >= self.batch:
            self.flush()

    def flush(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        geo = f"{self.prefix}geo"
        for mmsi, state, where in self.states:
            pipe.hset(f"{self.prefix}vessel:{mmsi}", mapping=state)  # type: ignore[arg-type]
            if where is not None:
                pipe.geoadd(geo, (where[0], where[1], mmsi))
        pipe.execute()
        with self.pg.cursor() as cur:
            with cur.copy(f"COPY staging ({COLUMNS}) FROM STDIN") as copy:
                for row in self.positions:
                    copy.write_row(row)
            cur.execute("INSERT INTO plain_positions SELECT * FROM staging ON CONFLICT DO NOTHING")
            self.written += cur.rowcount
            cur.execute("TRUNCATE staging")
        self.pg.commit()
        self.states.clear()
        self.positions.clear()

    def close(self) -> None:
        self.flush()
        self.pg.close()
        self.redis.close()


def run(path: Path, writer: PlainWriter | None) -> dict[str, Any]:
    """Decode every message of `path`; with a writer, store them. Returns the counts."""
    started = time.perf_counter()
    counts: dict[str, Any] = {"lines": 0, "messages": 0, "positions": 0, "undecodable": 0}

    def counted(f: BinaryIO) -> Iterator[bytes]:
        for line in f:
            counts["lines"] += 1
            yield line

    with open_lines(path) as f:
        for received, msg in messages(counted(f)):
            try:
                m = msg.decode()
            except (AISBaseException, ValueError, IndexError, TypeError):
                counts["undecodable"] += 1
                continue
            counts["messages"] += 1
            if writer is not None:
                now_ms = int(time.time() * 1000)
                writer.add(received or now_ms, zlib.crc32(msg.payload), m)
    if writer is not None:
        writer.close()
        counts["positions"] = writer.positions_total
        counts["positions_written"] = writer.written
    counts["elapsed_s"] = round(time.perf_counter() - started, 3)
    return counts


def peak_rss_bytes() -> int:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over
    exec, so a script started from a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.plain_script", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="NMEA file, plain or gzip")
    parser.add_argument("--database-url", help="postgresql://... (with --redis-url; neither: decode only)")
    parser.add_argument("--redis-url", help="redis://host:port/db")
    parser.add_argument("--redis-prefix", default="plain:", help="key prefix, default plain:")
    parser.add_argument("--batch", type=int, default=5000, help="messages per write, default 5000")
    args = parser.parse_args(argv)
    if bool(args.database_url) != bool(args.redis_url):
        parser.error("give both --database-url and --redis-url, or neither")
    writer = (
        PlainWriter(args.database_url, args.redis_url, args.redis_prefix, args.batch) if args.database_url else None
    )
    print_counts(run(args.path, writer))
    return 0


def print_counts(counts: dict[str, Any]) -> None:
    """The one JSON line a script prints: its counts, its rate and its peak RSS."""
    counts["msgs_per_s"] = round(counts["messages"] / counts["elapsed_s"], 1) if counts["elapsed_s"] else 0.0
    counts["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())
