"""Honest exits: a job is ok only when every source was read to its end (or stopped on
request) and the numbers add up; anything else is named in the summary's errors, with every
line that was read still accounted for."""

from __future__ import annotations

import gzip
import socket
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue
from breakwater.gate import SinkGate
from breakwater.pipeline import Ingest, ReaderOptions
from breakwater.sources import FileSource, Source, open_source
from breakwater.summary import READ_TO_END, IngestSummary, SourceEnd, example_text
from breakwater.writer import ShardWriter
from tests.unit.fakes import InProcessCluster, ListSource, MemorySink
from tests.unit.test_sources_and_package import complete_lines

GZIP_CUT = "Compressed file ended before the end-of-stream marker was reached"
INCOMPLETE = (
    "Breakwater ingest job: INCOMPLETE: every line read is accounted for, but input is missing or could not be read"
)


def run(sources: list[Source], tmp_path: Path) -> IngestSummary:
    """One ingest job in this process, with a journal of its own."""
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / f"dlq-{uuid.uuid4().hex[:6]}.sqlite3"))
    db = MemorySink("db")
    gates = {"db": SinkGate(CircuitBreaker("db", BreakerConfig()))}
    writers = [ShardWriter([db], gates, queue, job_id="job") for _ in range(2)]
    loop = Ingest(InProcessCluster(writers, queue, "job"), job_id="job", reader=ReaderOptions(max_lines=300))
    return loop.run(sources)


def numbers(summary: IngestSummary) -> dict[str, Any]:
    """What a job counted, without what says how it went or how long it took."""
    d = summary.as_dict()
    when = ("started_at", "finished_at", "elapsed_s")
    return {k: v for k, v in d.items() if k not in ("job_id", "ok", "errors", "sources", *when)}


def test_a_truncated_gzip_file_is_an_error_and_every_line_read_is_counted(
    tmp_path: Path, kystverket_path: Path
) -> None:
    packed = gzip.compress(kystverket_path.read_bytes(), mtime=0)
    cut = tmp_path / "cut.nmea.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    whole_lines = complete_lines(cut.read_bytes())
    head = tmp_path / "head.nmea"  # the same lines, plain and complete: the oracle
    head.write_bytes(b"".join(whole_lines))

    summary = run([FileSource(cut)], tmp_path)
    expected_error = f"{cut}: not read to its end: {GZIP_CUT}"
    assert summary.errors == [f"source {expected_error} (after {len(whole_lines):,} lines)"]
    assert not summary.ok
    assert summary.as_dict()["sources"] == [
        {"name": str(cut), "lines_read": len(whole_lines), "ended": "failed", "error": expected_error}
    ]
    assert summary.conservation_errors == []
    assert numbers(summary) == numbers(run([FileSource(head)], tmp_path))
    assert summary.as_dict()["lines"]["read"] == len(whole_lines) > 0
    text = summary.render().splitlines()
    assert text[0] == INCOMPLETE
    assert text[-1] == f"  ERROR source {expected_error} (after {len(whole_lines):,} lines)"


def test_a_source_that_fails_does_not_keep_the_next_one_from_being_read(tmp_path: Path, kystverket_path: Path) -> None:
    failing = ListSource("tape", [b"!AIVDM,1,1,,A,3", b"", b"$GPGGA,1*00"], fail="[Errno 5] Input/output error")
    summary = run([failing, FileSource(kystverket_path)], tmp_path)
    assert summary.errors == ["source tape: not read to its end: [Errno 5] Input/output error (after 3 lines)"]
    d = summary.as_dict()
    assert [(s["name"], s["lines_read"], s["ended"]) for s in d["sources"]] == [
        ("tape", 3, "failed"),
        (str(kystverket_path), 1_000, "end"),
    ]
    assert d["lines"] == {"read": 1_003, "decoded": 998, "rejected": 5, "pending": 0}
    assert d["rejected"] == {"empty": 1, "malformed": 1, "not_ais": 1, "invalid_mmsi": 2}


def test_an_empty_file_says_it_held_no_lines(tmp_path: Path, kystverket_path: Path) -> None:
    empty = tmp_path / "empty.nmea"
    empty.write_bytes(b"")
    alone = run([FileSource(empty)], tmp_path)
    assert alone.errors == [f"source {empty}: no lines in it"]
    assert alone.render().splitlines()[0] == INCOMPLETE
    assert alone.as_dict()["lines"] == {"read": 0, "decoded": 0, "rejected": 0, "pending": 0}
    beside_another = run([FileSource(kystverket_path), FileSource(empty)], tmp_path)
    assert beside_another.errors == [f"source {empty}: no lines in it"]
    assert beside_another.as_dict()["lines"]["read"] == 1_000


def test_a_refused_feed_without_reconnect_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound, never listening: a connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        summary = run([open_source(f"tcp://127.0.0.1:{port}?reconnect=0")], tmp_path)
    assert summary.errors == [
        f"source tcp://127.0.0.1:{port}: not read to its end: cannot connect: [Errno 111] Connection refused"
        " (after 0 lines)"
    ]
    assert not summary.ok


def test_a_stop_on_request_is_not_an_error_and_says_what_was_not_read(tmp_path: Path, kystverket_path: Path) -> None:
    feed = ListSource("feed", [b"$GPGGA,1*00"] * 5, stop_after=2)
    summary = run([feed, FileSource(kystverket_path)], tmp_path)
    assert summary.ok and summary.errors == []
    assert summary.as_dict()["sources"] == [
        {"name": "feed", "lines_read": 2, "ended": "stopped", "error": None},
        {"name": str(kystverket_path), "lines_read": 0, "ended": "not started", "error": None},
    ]
    text = summary.render().splitlines()
    assert text[0] == "Breakwater ingest job: ok: every line and every report is accounted for"
    assert text[-1] == f"  stopped on request: feed after 2 lines, {kystverket_path} not started"


def test_the_printed_summary_shows_one_example_per_rejection_reason(tmp_path: Path, amsa_path: Path) -> None:
    text = run([FileSource(amsa_path)], tmp_path).render().splitlines()
    at = text.index(
        "    rejected: malformed 12, not_ais 10,658, bad_checksum 4, orphan_fragment 4, undecodable 1, invalid_mmsi 791"
    )
    assert text[at + 1 : at + 7] == [
        "      malformed:       !BSVDM,1,1,,A,3",
        "      not_ais:         $BSALR,,006,V,V,general failure*62",
        "      bad_checksum:    !=IVDM,1,1,,B,37P8OL2<01Ch,0*32",
        "      orphan_fragment: !=IVDM,2,1,7,B,58I;Q442A0aCUKOK72104<THT>210D4<t<f2221J1`e684IB,0*5F",
        "      undecodable:     !BSVDM,1,1,,B,wa?NCnmBsOug?G?Vgm?4?w0,2*1D",
        "      invalid_mmsi:    !AIVDO,1,1,,,B000000002EgKjv=lCL03wQ5wP06,0*0F",
    ]
    assert text[at + 7].startswith("  messages decoded")


def test_a_long_example_is_cut_and_control_bytes_are_escaped(tmp_path: Path, kystverket_path: Path) -> None:
    raw = b"\x00\x1b[31m!AIVDM," + b"A" * 150 + b"\xff"
    counts = Counter({acc.LINES_READ: 2, acc.rejected("empty"): 1, acc.rejected("malformed"): 1})
    examples = {"malformed": example_text(raw), "empty": example_text(b"")}
    summary = IngestSummary("job", counts, [], {}, examples, 1.0, [SourceEnd("feed", 2, READ_TO_END)])
    text = summary.render().splitlines()
    malformed = "      malformed:       \\x00\\x1b[31m!AIVDM," + "A" * 55 + "..."
    assert len(malformed) == 100
    assert text[2:5] == ["    rejected: empty 1, malformed 1", "      empty:           (a blank line)", malformed]
    assert summary.as_dict()["rejected_examples"]["malformed"] == "\x00\x1b[31m!AIVDM," + "A" * 150 + "\\xff"

    kystverket = run([FileSource(kystverket_path)], tmp_path)
    assert (
        "      invalid_mmsi:    \\g:1-2-9999,c:1565218801*5C\\!BSVDM,2,1,6,A,5=>75SD000000000001HT8DdF0<5@Q8..."
        in kystverket.render().splitlines()
    )


def test_the_summary_gives_its_times_in_iso_8601_utc(tmp_path: Path, kystverket_path: Path) -> None:
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    gates = {"db": SinkGate(CircuitBreaker("db", BreakerConfig()))}
    writers = [ShardWriter([MemorySink("db")], gates, queue, job_id="job")]
    ticks = iter([1_565_218_800.0, 1_565_218_805.4])  # 2019-08-07T23:00:00Z, then 5.4 s later
    loop = Ingest(InProcessCluster(writers, queue, "job"), job_id="job", wall_clock=lambda: next(ticks))
    summary = loop.run([FileSource(kystverket_path)])
    d = summary.as_dict()
    assert (d["started_at"], d["finished_at"]) == ("2019-08-07T23:00:00Z", "2019-08-07T23:00:05Z")
    elapsed = next(line for line in summary.render().splitlines() if line.strip().startswith("elapsed"))
    assert elapsed.endswith(", 2019-08-07T23:00:00Z to 2019-08-07T23:00:05Z")
