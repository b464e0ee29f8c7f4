"""The ingest loop over the real captures, in one process: every line accounted for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue
from breakwater.gate import SinkGate
from breakwater.pipeline import Ingest, ReaderOptions
from breakwater.sources import FileSource
from breakwater.writer import ShardWriter
from tests.conftest import read_lines
from tests.unit.fakes import InProcessCluster, MemorySink

# pyais 3.3.1 counts 34,012 decodable messages in the AMSA capture and 877 in the Kystverket
# one (data/README.md). Breakwater decodes the same messages, less those it
# rejects for a bad checksum or an invalid MMSI, which pyais does not check.
PYAIS_DECODABLE = {"amsa": 34_012, "kystverket": 877}


def ingest(paths: list[Path], tmp_path: Path, sinks: list[MemorySink], batch_lines: int = 700):  # type: ignore[no-untyped-def]
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    breakers = {s.name: CircuitBreaker(s.name, BreakerConfig()) for s in sinks}
    writers = [ShardWriter(sinks, {n: SinkGate(b) for n, b in breakers.items()}, queue, job_id="job") for _ in range(3)]
    cluster = InProcessCluster(writers, queue, "job")
    loop = Ingest(cluster, job_id="job", max_in_flight=2, reader=ReaderOptions(max_lines=batch_lines))
    return loop.run([FileSource(p) for p in paths]), cluster


@pytest.mark.parametrize(
    ("name", "read", "decoded_messages", "rejected", "invalid_mmsi_messages", "bad_checksum"),
    [
        (
            "amsa",
            44_687,
            33_217,
            {
                "malformed": 12,
                "not_ais": 10_658,
                "bad_checksum": 4,
                "orphan_fragment": 4,
                "undecodable": 1,
                "invalid_mmsi": 791,
            },
            791,
            4,
        ),
        ("kystverket", 1_000, 876, {"invalid_mmsi": 2}, 1, 0),
    ],
)
def test_every_line_of_the_captures_is_accounted_for(
    name: str,
    read: int,
    decoded_messages: int,
    rejected: dict[str, int],
    invalid_mmsi_messages: int,
    bad_checksum: int,
    tmp_path: Path,
    amsa_path: Path,
    kystverket_path: Path,
) -> None:
    path = amsa_path if name == "amsa" else kystverket_path
    db = MemorySink("db")
    summary, _cluster = ingest([path], tmp_path, [db])
    d = summary.as_dict()
    assert summary.errors == []
    assert d["lines"]["read"] == read
    assert d["rejected"] == rejected
    assert d["messages_decoded"] == decoded_messages
    assert decoded_messages + invalid_mmsi_messages + bad_checksum == PYAIS_DECODABLE[name]
    reports = sum(d["reports"].values())
    sink = d["sinks"]["db"]
    assert sink["received"] == reports
    assert sink["written"] + sink["duplicates"] == reports
    assert sink["written"] == len(db.rows)


def test_both_captures_in_one_job_with_a_second_sink_down(
    tmp_path: Path, amsa_path: Path, kystverket_path: Path
) -> None:
    db = MemorySink("db")
    redis = MemorySink("redis", frozenset({"position", "static"}))
    redis.down = True
    summary, _ = ingest([kystverket_path, amsa_path], tmp_path, [db, redis])
    d = summary.as_dict()
    assert summary.errors == []
    assert d["lines"]["read"] == 45_687
    r = d["sinks"]["redis"]
    assert r["received"] == d["reports"]["position"] + d["reports"]["static"]
    assert r["written"] == 0
    assert r["dead_letter_queue"] + r["duplicates"] == r["received"]
    assert r["dlq_waiting"] == r["dead_letter_queue"]
    assert d["sinks"]["db"]["written"] == len(db.rows)


def test_conservation_catches_a_missing_count() -> None:
    counts = {acc.LINES_READ: 10, acc.LINES_DECODED: 8, acc.rejected("not_ais"): 1}
    assert acc.conservation_errors(counts, []) == ["lines: read 10 != decoded + rejected + pending 9"]


class HeldBackCluster(InProcessCluster):
    """A batch finishes only at the second look, and its writers find the queue full; the
    queue then stays full for a few polls of the held-back reader."""

    def __init__(self, *args: object, polls_full: int) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.polls_full = polls_full
        self.resumed = False
        self.seen: set[int] = set()
        self.pushed_before_resuming: list[dict[str, float]] = []

    def submit(self, batch: object) -> object:
        outcome = super().submit(batch)
        outcome.dlq_full = True  # type: ignore[attr-defined]
        return outcome

    def wait(self, tickets: list[object], timeout_s: float) -> list[tuple[object, object]]:
        ready = [t for t in tickets if id(t) in self.seen]
        self.seen.update(id(t) for t in tickets)
        return [(t, t) for t in ready]

    def dlq_full(self) -> bool:
        self.polls_full -= 1
        self.resumed = self.resumed or self.polls_full < 0
        return not self.resumed

    def push_metrics(self, delta: object) -> None:
        super().push_metrics(delta)
        if not self.resumed:
            self.pushed_before_resuming.append({name: v for (name, _), v in delta.gauges.items()})  # type: ignore[attr-defined]


def test_metrics_keep_flowing_while_a_full_queue_holds_the_reader_back(tmp_path: Path, kystverket_path: Path) -> None:
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    gates = {"db": SinkGate(CircuitBreaker("db", BreakerConfig()))}
    writers = [ShardWriter([MemorySink("db")], gates, queue, job_id="job")]
    cluster = HeldBackCluster(writers, queue, "job", polls_full=5)
    ticks = iter(range(100_000))  # every clock reading one second later: a push is always due
    loop = Ingest(
        cluster, job_id="job", max_in_flight=1, reader=ReaderOptions(max_lines=300), metrics_interval_s=1.0,
        clock=lambda: float(next(ticks)),
    )  # fmt: skip
    summary = loop.run([FileSource(kystverket_path)])
    assert summary.ok
    # Held back, the driver still ships its gauges: nothing in flight, the queue full. (It used
    # to ship nothing until reading resumed, so the last in-flight count stayed on the dashboards.)
    shipped = [
        {k: g[k] for k in ("ais_batches_in_flight", "ais_dlq_full") if k in g} for g in cluster.pushed_before_resuming
    ]
    assert {"ais_batches_in_flight": 0, "ais_dlq_full": 1} in shipped


class SteadyFeed:
    """A live feed that is never idle: a line every 0.1 s of the reader's clock, no None."""

    live = True
    connected = True
    stamp = None
    name = "tcp://steady"

    def __init__(self, lines: list[bytes], clock: list[float]) -> None:
        self._lines, self._clock = lines, clock

    def lines(self, stop: object) -> Iterator[bytes | None]:
        for line in self._lines:
            self._clock[0] += 0.1
            yield line


class RecordingCluster(InProcessCluster):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.batch_lines: list[int] = []

    def submit(self, batch: Any) -> Any:
        self.batch_lines.append(batch.line_count)
        return super().submit(batch)


def test_a_steady_live_feed_is_cut_into_batches_by_time_not_held_for_max_lines(
    tmp_path: Path, kystverket_path: Path
) -> None:
    """A feed sending a line every 0.1 s never yields None (it is never idle); its batches are
    still cut every flush interval (0.5 s: 5 lines), not when 5,000 lines are in."""
    now = [1_800_000_000.0]
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    gates = {"db": SinkGate(CircuitBreaker("db", BreakerConfig()))}
    cluster = RecordingCluster([ShardWriter([MemorySink("db")], gates, queue, job_id="job")], queue, "job")
    options = ReaderOptions(max_lines=5000, flush_interval_s=0.5, clock=lambda: now[0])
    lines = read_lines(kystverket_path)[:40]
    summary = Ingest(cluster, job_id="job", max_in_flight=1, reader=options).run([SteadyFeed(lines, now)])
    assert summary.ok
    assert sum(cluster.batch_lines) == 40
    assert len(cluster.batch_lines) >= 7 and max(cluster.batch_lines) <= 6, cluster.batch_lines
