"""Live feeds: named TCP and UDP sources, silence detection, jittered backoff, kernel drops
counted, and the per-source metrics the ingest loop ships. Real sockets on 127.0.0.1."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from breakwater.breaker import BreakerConfig, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue
from breakwater.errors import SourceError
from breakwater.gate import SinkGate
from breakwater.metrics import MetricsAggregator
from breakwater.pipeline import Ingest, ReaderOptions
from breakwater.sources import TcpFeed, UdpListener, backoff_delays, open_source
from breakwater.writer import ShardWriter
from tests.conftest import read_lines
from tests.unit.fakes import InProcessCluster, MemorySink

DATA = Path(__file__).resolve().parents[2] / "data"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Drain(threading.Thread):
    """Iterates a source's lines on a thread, keeping every line (ticks dropped)."""

    def __init__(self, lines: Iterator[bytes | None]) -> None:
        super().__init__(daemon=True)
        self.lines = lines
        self.got: list[bytes] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.got.extend(line for line in self.lines if line is not None)
        except BaseException as e:
            self.error = e


def test_specs_name_their_feeds() -> None:
    named = open_source("tcp://127.0.0.1:4001?name=north&reconnect=0")
    assert isinstance(named, TcpFeed) and (named.name, named.reconnect) == ("north", False)
    assert open_source("tcp://127.0.0.1:4001").name == "tcp://127.0.0.1:4001"
    udp = open_source("udp://0.0.0.0:10110?name=south")
    assert isinstance(udp, UdpListener) and udp.live and (udp.name, udp.host, udp.port) == ("south", "0.0.0.0", 10110)
    assert open_source("udp://0.0.0.0:10110").name == "udp://0.0.0.0:10110"
    for bad in ("udp://0.0.0.0", "udp://:10110", "tcp://host:notaport"):
        with pytest.raises(SourceError, match="a feed needs"):
            open_source(bad)


def test_backoff_doubles_with_jitter_up_to_its_limit() -> None:
    delays = backoff_delays(1.0, 8.0, random.Random(7))
    got = [next(delays) for _ in range(6)]
    for delay, ceiling in zip(got, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in got[3:]}) == 3  # jitter: equal ceilings, different waits


def test_a_udp_feed_gives_every_line_of_every_datagram() -> None:
    port = free_udp_port()
    feed = UdpListener("127.0.0.1", port, name="udp-test", idle_s=0.05)
    stop = threading.Event()
    drain = Drain(feed.lines(stop))
    drain.start()
    wait_for(lambda: feed.connected)
    lines = read_lines(DATA / "kystverket-2019-tagblock.nmea")[:300]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(0, len(lines), 3):  # three lines per datagram, as forwarders batch them
            sender.sendto(b"".join(line + b"\r\n" for line in lines[i : i + 3]), ("127.0.0.1", port))
    wait_for(lambda: feed.stats.lines == len(lines))
    stop.set()
    drain.join(5)
    assert [line.rstrip(b"\r") for line in drain.got] == lines
    assert feed.dropped() == 0 and not feed.connected


def test_datagrams_the_kernel_drops_are_counted_never_silently_lost() -> None:
    """A small receive buffer and a reader that does not read: the kernel drops datagrams;
    what the feed gives plus what it counts as dropped is everything sent."""
    port = free_udp_port()
    feed = UdpListener("127.0.0.1", port, idle_s=0.05, buffer_bytes=4096)
    lines = feed.lines(threading.Event())
    assert next(lines) is None  # bound, nothing sent yet
    sent = 400
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(sent):
            sender.sendto(b"!AIVDM,1,1,,A,13u?etPv2;0n:dDPwUM1U1Cb069D,0*%02d\n" % (i % 100), ("127.0.0.1", port))
    wait_for(lambda: feed.dropped() > 0)
    got = 0
    for line in lines:
        if line is None:
            break
        got += 1
    assert got > 0 and got + feed.dropped() == sent
    lines.close()


def test_a_silent_tcp_feed_is_reconnected() -> None:
    """A peer that accepts and then sends nothing (a hung forwarder) is dropped after
    silence_s and connected to again; the second connection's lines arrive."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connections: list[socket.socket] = []

    def serve() -> None:
        connections.append(server.accept()[0])  # silent
        second, _ = server.accept()
        connections.append(second)
        second.sendall(b"!AIVDM,1,1,,A,13u?etPv2;0n:dDPwUM1U1Cb069D,0*24\n")

    threading.Thread(target=serve, daemon=True).start()
    feed = TcpFeed("127.0.0.1", port, idle_s=0.05, silence_s=0.3, backoff_s=0.05)
    stop = threading.Event()
    drain = Drain(feed.lines(stop))
    drain.start()
    wait_for(lambda: len(drain.got) == 1)
    stop.set()
    drain.join(5)
    server.close()
    for conn in connections:
        conn.close()
    assert (feed.stats.silences, feed.stats.reconnects, feed.stats.lines) == (1, 1, 1)
    assert drain.error is None


def test_the_ingest_loop_ships_each_feeds_own_metrics(tmp_path: Path) -> None:
    """Two named TCP feeds of one capture in one job: each gets its lines, messages and
    rejected lines counted under its own name, and up/age gauges."""
    lines = read_lines(DATA / "kystverket-2019-tagblock.nmea")
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]

    def serve(server: socket.socket) -> None:
        conn, _ = server.accept()
        conn.sendall(b"".join(line + b"\n" for line in lines))
        conn.close()

    for server in servers:
        threading.Thread(target=serve, args=(server,), daemon=True).start()
    sink = MemorySink("db")
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    writer = ShardWriter([sink], {"db": SinkGate(CircuitBreaker("db", BreakerConfig()))}, queue, job_id="job")
    cluster = InProcessCluster([writer], queue, "job")
    loop = Ingest(cluster, job_id="job", reader=ReaderOptions(max_lines=200, flush_interval_s=0.05))
    names = ["north", "south"]
    specs = [f"tcp://127.0.0.1:{s.getsockname()[1]}?reconnect=0&name={n}" for s, n in zip(servers, names, strict=True)]
    summary = loop.run([open_source(spec) for spec in specs])
    for server in servers:
        server.close()
    assert summary.ok
    totals = MetricsAggregator()
    for delta in cluster.metrics:
        totals.apply(delta)
    for name in names:
        assert totals.counter("ais_source_lines", source=name) == 1_000
        assert totals.counter("ais_source_messages", source=name) == 876
        assert totals.counter("ais_source_rejected_lines", source=name) == 2  # invalid_mmsi
        assert totals.counter("ais_source_reconnects", source=name) == 0
        assert totals.gauges[("ais_source_up", (("source", name),))] == 0  # ended
        assert totals.gauges[("ais_source_last_line_age_seconds", (("source", name),))] >= 0
    assert totals.counter("ais_messages_processed") == 2 * 876
