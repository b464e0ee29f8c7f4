"""The ingest loop over the real captures, in one process: every line accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue
from breakwater.gate import SinkGate
from breakwater.pipeline import Ingest, ReaderOptions
from breakwater.sources import FileSource
from breakwater.writer import ShardWriter
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
