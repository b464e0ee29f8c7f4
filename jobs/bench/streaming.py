"""The streaming scenario: receive-to-visible latency on live TCP and UDP feeds, both stores on.

For each rate asked (`--rates`, messages/s, default 2000 and 10000) a fresh job runs on two live
feeds served by the bench: a TCP feed and a UDP feed, each half the rate, replaying the corpus.
Each feed stamps every line's tag block with the time it sends it (`c:` in milliseconds, the
checksum made afresh), as a receiver stamps what it hears: a report's receive time is when it
left its receiver. While the feeds run (`--minutes`, default 1), a probe reads a sample of the
vessels' latest state every `PROBE_INTERVAL_S`, from Redis (the vessel hash's `pos_ms`) and
from SQL (`latest_positions.received_at`); each new latest position it sees counts once, with
the time from its receive time to the probe seeing it. That is an upper bound (the probe's
interval adds up to 50 ms), and it covers the positions that became latest, which are what a
map shows. Then the job is stopped with SIGTERM once it has counted every line sent (or after
a minute more: UDP may drop, and says so in `udp_dropped`).

Fusion is off (`fusion_window_s=0`): the corpus replays the captures over and over, and with
every line stamped with its send time, one replay on the TCP feed and another on the UDP feed
send the same payloads within seconds, which fusion would take for one transmission heard
twice and store as receptions (about half the messages at 10,000 msg/s): less work than real
distinct reports. With it off, every report is written as a report. The speed limit is one no
replay reaches (`scenarios.REPLAY_SETTINGS`): the checks run, but the jumps back to each
replay's start are not flagged.

Reported per rate: the latency percentiles per store, the sent and sustained rates (lines and
messages the job decoded per second over the second half of the feeding), the backlog, UDP
datagrams the kernel dropped, the job's exit, and whether p99 stayed under the seed's alert
threshold (500 ms) in both stores.
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import statistics
import threading
import time
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from jobs.bench import log
from jobs.bench.corpus import checksum
from jobs.bench.feed_server import FeedServer, FeedThread, PacedLines, split_corpus
from jobs.bench.live_job import LiveJob
from jobs.bench.runners import free_port
from jobs.bench.scenarios import REPLAY_SETTINGS, Context, make_corpus
from jobs.bench.soak import rate_between

PROBE_INTERVAL_S = 0.05
PROBE_VESSELS = 200
PROBE_CHOOSE_S = 10.0  # the sample: the first PROBE_VESSELS vessels seen, or those seen by then
TARGET_P99_MS = 500.0
DEFAULT_RATES = (2000, 10000)
UDP_DATAGRAM_BYTES = 1400
_C_FIELD = re.compile(rb"c:\d+")


def stamp(line: bytes, ms: int) -> bytes:
    """The line with its tag block's receive time set to `ms` and its checksum made afresh;
    a line without a tag block as it is."""
    if not line.startswith(b"\\"):
        return line
    end = line.find(b"\\", 1)
    tag = line[1:end]
    star = tag.rfind(b"*")
    body = _C_FIELD.sub(b"c:%d" % ms, tag[:star] if star >= 0 else tag, count=1)
    return b"\\%s*%s\\%s" % (body, checksum(body), line[end + 1 :])


def messages_per_line(path: Path) -> float:
    """AIS messages per line of a corpus file: the lines that start a VDM/VDO message over all."""
    lines = starts = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            sentence = line.rsplit(b"\\", 1)[-1]
            if sentence[3:6] in (b"VDM", b"VDO") and sentence.split(b",", 3)[2:3] == [b"1"]:
                starts += 1
    return starts / lines if lines else 0.0


class StampingFeed(FeedServer):
    """A paced TCP feed whose lines carry the time they are sent."""

    def encode(self, chunk: list[bytes]) -> bytes:
        ms = int(time.time() * 1000)
        return b"".join(stamp(line, ms) for line in chunk)


class UdpFeed(FeedThread):
    """A paced UDP feed: whole stamped lines in datagrams of up to UDP_DATAGRAM_BYTES, sent to
    the job's listener once `go` is called. `sent` counts lines handed to the kernel."""

    def __init__(self, path: Path, port: int, rate_per_s: float) -> None:
        super().__init__("udp-feed")
        self.port = port
        self.paced = PacedLines(path, rate_per_s, time.monotonic)
        self.sent = 0
        self.error: str | None = None

    @property
    def ran_out(self) -> bool:
        return self.paced.ran_out

    def run(self) -> None:
        self._go.wait()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                for chunk in self.paced.chunks(self._deadline, self._closing):
                    ms = int(time.time() * 1000)
                    datagram = b""
                    for line in chunk:
                        stamped = stamp(line, ms)
                        if datagram and len(datagram) + len(stamped) > UDP_DATAGRAM_BYTES:
                            out.sendto(datagram, ("127.0.0.1", self.port))
                            datagram = b""
                        datagram += stamped
                    if datagram:
                        out.sendto(datagram, ("127.0.0.1", self.port))
                    self.sent += len(chunk)
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"


class Probe(threading.Thread):
    """Reads the sampled vessels' latest receive times from Redis and SQL every interval and
    records, for each change it sees, its latency: the probe's clock less the receive time."""

    def __init__(self, database_url: str, redis_url: str, prefix: str) -> None:
        super().__init__(name="latency-probe", daemon=True)
        self.database_url, self.redis_url, self.prefix = database_url, redis_url, prefix
        self.latency_ms: dict[str, list[float]] = {"redis": [], "sql": []}
        self.polls = 0
        self.error: str | None = None
        self.stop = threading.Event()
        self.vessels: list[int] = []

    def run(self) -> None:
        import psycopg
        import redis

        from breakwater.stores.redis import RedisKeys

        try:
            with psycopg.connect(self.database_url, autocommit=True) as sql:
                live = redis.Redis.from_url(self.redis_url)
                keys = RedisKeys(self.prefix)
                give_up_waiting = time.monotonic() + PROBE_CHOOSE_S
                while not self.vessels and not self.stop.wait(PROBE_INTERVAL_S):
                    rows = sql.execute(
                        "SELECT mmsi FROM latest_positions ORDER BY mmsi LIMIT %s", (PROBE_VESSELS,)
                    ).fetchall()
                    if len(rows) >= PROBE_VESSELS or (rows and time.monotonic() > give_up_waiting):
                        self.vessels = [r[0] for r in rows]
                seen: dict[str, dict[int, int]] = {"redis": {}, "sql": {}}
                while not self.stop.wait(PROBE_INTERVAL_S):
                    pipe = live.pipeline(transaction=False)
                    for mmsi in self.vessels:
                        pipe.hget(keys.vessel(mmsi), "pos_ms")
                    redis_ms = {m: int(v) for m, v in zip(self.vessels, pipe.execute(), strict=True) if v}
                    now_ms = time.time() * 1000
                    self._record("redis", redis_ms, seen["redis"], now_ms)
                    rows = sql.execute(
                        "SELECT mmsi, (extract(epoch FROM received_at) * 1000)::bigint FROM latest_positions "
                        "WHERE mmsi = ANY(%s)",
                        (self.vessels,),
                    ).fetchall()
                    now_ms = time.time() * 1000
                    self._record("sql", dict(rows), seen["sql"], now_ms)
                    self.polls += 1
                live.close()
        except Exception as e:  # the probe's failure is reported, never the bench's crash
            self.error = f"{type(e).__name__}: {e}"

    def _record(self, store: str, now: dict[int, int], before: dict[int, int], now_ms: float) -> None:
        for mmsi, ms in now.items():
            if before.get(mmsi) != ms:
                if mmsi in before:  # the first sighting may be old: only changes are timed
                    self.latency_ms[store].append(now_ms - ms)
                before[mmsi] = ms


def percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"n": len(values), "p50": None, "p95": None, "p99": None, "max": None}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "n": len(values),
        "p50": round(q[49], 1),
        "p95": round(q[94], 1),
        "p99": round(q[98], 1),
        "max": round(max(values), 1),
    }


def _scrape_source_up(base: str, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/metrics/prometheus", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return False
    return f'ais_source_up{{source="{name}"}} 1.0' in text


def _udp_dropped(text: bytes | None) -> float | None:
    if not text:
        return None
    found = re.search(rb'ais_source_dropped_total\{source="udp-feed"\} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def run_rate(ctx: Context, msgs_per_s: int, seconds: float, corpus: Path, per_line: float) -> dict[str, Any]:
    lines_per_s = msgs_per_s / per_line
    parts = split_corpus(corpus, 2, ctx.tmp)
    label = f"stream{msgs_per_s}"
    db, prefix = ctx.scratch.database(label), ctx.scratch.prefix(label)
    udp_port = free_port(socket.SOCK_DGRAM)
    tcp = StampingFeed(parts[0], rate_per_s=lines_per_s / 2)
    udp = UdpFeed(parts[1], udp_port, lines_per_s / 2)
    with ExitStack() as stack:
        tcp.start()
        stack.callback(tcp.close)
        udp.start()
        stack.callback(udp.stop_sending)
        specs = [tcp.spec + "&name=tcp-feed", f"udp://127.0.0.1:{udp_port}?name=udp-feed"]
        log(f"streaming at {msgs_per_s:,} msg/s ({lines_per_s:,.0f} lines/s) over TCP and UDP for {seconds:g} s")
        job = LiveJob.start(
            ctx.tmp, label, specs, database_url=db, redis_url=ctx.scratch.redis_url, prefix=prefix,
            extra=[*REPLAY_SETTINGS, *ctx.ingest_args],
        )  # fmt: skip
        probe = Probe(db, ctx.scratch.redis_url, prefix)
        try:
            deadline = time.monotonic() + 300
            while not (tcp.connected.is_set() and _scrape_source_up(job.poller.base, "udp-feed")):
                if time.monotonic() > deadline or not job.alive():
                    raise RuntimeError("the job never connected to its feeds")
                time.sleep(0.2)
            began = job.elapsed
            end = time.monotonic() + seconds
            tcp.go(end)
            udp.go(end)
            probe.start()
            while time.monotonic() < end and job.alive():
                time.sleep(0.2)
            fed_s = job.elapsed - began
            probe.stop.set()
            probe.join(timeout=10)
            sent = tcp.sent + udp.sent
            stop = job.stop_when_counted(sent, timeout_s=60.0)
            last_text = job.poller.last_text
        finally:
            run = job.finish()
    timeline = job.poller.timeline
    half = began + fed_s / 2
    out: dict[str, Any] = {
        "rate_asked_msgs_per_s": msgs_per_s,
        "rate_asked_lines_per_s": round(lines_per_s, 1),
        "feeding_s": round(fed_s, 2),
        "lines_sent": {"tcp": tcp.sent, "udp": udp.sent},
        "sent_lines_per_s": round((tcp.sent + udp.sent) / fed_s, 1) if fed_s else None,
        "lines_read": run.get("lines_read"),
        "lost": (tcp.sent + udp.sent) - (run.get("lines_read") or 0),
        "udp_dropped": _udp_dropped(last_text),
        "job_lines_per_s_second_half": rate_between(timeline, "lines", half, began + fed_s),
        "job_msgs_per_s_second_half": rate_between(timeline, "messages", half, began + fed_s),
        "latency_ms": {store: percentiles(v) for store, v in probe.latency_ms.items()},
        "probe": {
            "vessels": len(probe.vessels),
            "polls": probe.polls,
            "interval_s": PROBE_INTERVAL_S,
            "error": probe.error,
        },
        "feed_errors": [e for e in (tcp.error, udp.error) if e],
        "feeds_ran_out": tcp.ran_out or udp.ran_out,
        **stop,
        "job_exit_code": run.get("exit_code"),
        "job_verdict": "ok" if (run.get("summary") or {}).get("ok") else "not ok",
        "job_summary_fused_copies": (run.get("summary") or {}).get("fused_copies"),
        "timeline": [{k: p[k] for k in ("t", "lines", "messages", "db_written", "redis_written")} for p in timeline],
        "run": run,
    }
    p99s = [out["latency_ms"][s]["p99"] for s in ("redis", "sql")]
    out["meets_target_p99_500ms"] = all(p is not None and p < TARGET_P99_MS for p in p99s)
    for p in parts:
        p.unlink(missing_ok=True)
    return out


def scenario_streaming(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    minutes = args.minutes if args.minutes is not None else 1.0
    seconds = minutes * 60
    rates = args.rates or list(DEFAULT_RATES)
    corpus, info = make_corpus(math.ceil(max(rates) * seconds * 1.6) + 1000, ctx.tmp)
    per_line = messages_per_line(corpus)
    results = [run_rate(ctx, rate, seconds, corpus, per_line) for rate in rates]
    with suppress(OSError):
        corpus.unlink()
    return {"minutes": minutes, "corpus": info, "messages_per_line": round(per_line, 4), "rates": results}


def console_lines(results: dict[str, Any]) -> list[str]:
    r = results.get("streaming")
    if not r:
        return []
    out = []
    for x in r["rates"]:
        lat = x["latency_ms"]
        out.append(
            f"streaming {x['rate_asked_msgs_per_s']:,} msg/s ({x['rate_asked_lines_per_s']:,.0f} lines/s asked, "
            f"{x['sent_lines_per_s']} sent, job {x['job_msgs_per_s_second_half']} msg/s): receive to visible "
            f"Redis p50/p95/p99 {lat['redis']['p50']}/{lat['redis']['p95']}/{lat['redis']['p99']} ms "
            f"(n {lat['redis']['n']}), SQL {lat['sql']['p50']}/{lat['sql']['p95']}/{lat['sql']['p99']} ms "
            f"(n {lat['sql']['n']}); lost {x['lost']} (UDP dropped {x['udp_dropped']}); job {x['job_verdict']}; "
            f"p99 < 500 ms in both: {x['meets_target_p99_500ms']}"
        )
    return out


def streaming_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [x["run"] for x in (results.get("streaming") or {}).get("rates", [])]
