"""The plain logic of the soak and stress benchmarks: pacing, the flapping schedule, cutting
the corpus between feeds, a feed over loopback, and the report's arithmetic. No Ray, no stores."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from jobs.bench.corpus import build_corpus
from jobs.bench.feed_server import FeedServer, Pacer, split_corpus
from jobs.bench.sampling import role_of
from jobs.bench.soak import _memory, _stress_limits, flap_is_down, rate_between

DATA = Path(__file__).resolve().parents[2] / "data"


def test_the_pacer_sends_what_is_due_and_forgives_a_long_stall() -> None:
    pacer = Pacer(1000, start=10.0, max_debt_s=0.5)
    assert pacer.due(10.0) == 0
    assert pacer.due(10.03125) == 31
    pacer.record(31)
    assert pacer.due(10.03125) == 0
    assert pacer.due(10.125) == 94
    pacer.record(94)
    # Three seconds without sending: half a second is made up, the rest forgiven.
    assert pacer.due(13.125) == 500
    assert pacer.forgiven == 2500
    pacer.record(500)
    assert pacer.due(13.125) == 0 and pacer.due(13.25) == 125


def test_a_pacer_needs_a_rate() -> None:
    with pytest.raises(ValueError, match="rate_per_s must be positive, got 0"):
        Pacer(0, start=0.0)


def test_the_flapping_store_is_down_at_the_end_of_every_period() -> None:
    down = [t for t in range(0, 130) if flap_is_down(t, 10, 60)]
    assert down == [*range(50, 60), *range(110, 120)]
    assert not any(flap_is_down(t, 0, 60) for t in range(0, 130))


def _starts(line: bytes) -> bool:
    sentence = line.rsplit(b"\\", 1)[-1]
    return not sentence.startswith(b"!") or sentence.split(b",")[2] == b"1"


def test_the_corpus_is_cut_between_feeds_only_where_a_message_starts(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.nmea"
    build_corpus([DATA / "kystverket-2019-tagblock.nmea", DATA / "amsa-mixed.nmea.gz"], 30_000, corpus)
    parts = split_corpus(corpus, 3, tmp_path)
    assert b"".join(p.read_bytes() for p in parts) == corpus.read_bytes()
    sizes = [p.stat().st_size for p in parts]
    assert max(sizes) - min(sizes) < 0.01 * sum(sizes)
    assert all(_starts(p.open("rb").readline()) for p in parts)


def test_a_cut_falling_on_a_second_fragment_moves_to_the_next_message(tmp_path: Path) -> None:
    lines = [b"!AIVDM,1,1,,A,13mb9U0P00PRk8fT5nw>4?wj2006,0*5D\n"]
    lines += [b"!AIVDM,2,1,3,B,55?MbV02;H;s<HtKR20EHE:0@T4@Dn2222222216L961O5Gf0NSQEp6ClRp8,0*1C\n"]
    lines += [b"!AIVDM,2,2,3,B,88888888880,2*25\n"] * 8  # the midpoint falls among these
    lines += [b"$GPZDA,000000.00,01,01,2020,00,00*6A\n"] * 2
    corpus = tmp_path / "c.nmea"
    corpus.write_bytes(b"".join(lines))
    first, second = split_corpus(corpus, 2, tmp_path)
    assert second.read_bytes() == b"".join(lines[-2:])
    assert first.read_bytes() == b"".join(lines[:-2])


def test_a_paced_feed_sends_whole_lines_and_counts_each_line_it_sent(tmp_path: Path) -> None:
    part = tmp_path / "part.nmea"
    part.write_bytes(b"".join(b"line %05d\n" % i for i in range(2000)))
    server = FeedServer(part, rate_per_s=4000)
    server.start()
    received = b""
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        assert server.connected.wait(5)
        server.go(server.clock() + 0.3)
        assert server.finished.wait(10)
        client.settimeout(1.0)
        while len(received) < server.sent_bytes:
            received += client.recv(65536)
    server.close()
    assert 0 < server.sent < 2000 and not server.ran_out and server.error is None
    assert received.endswith(b"\n") and received.count(b"\n") == server.sent
    assert received == part.read_bytes()[: server.sent_bytes]


def test_an_unpaced_feed_that_runs_out_says_so(tmp_path: Path) -> None:
    part = tmp_path / "part.nmea"
    part.write_bytes(b"x\n" * 1234)
    server = FeedServer(part, rate_per_s=None)
    server.start()
    with socket.create_connection(("127.0.0.1", server.port)):
        assert server.connected.wait(5)
        server.go(server.clock() + 60)
        assert server.finished.wait(10)
    server.close()
    assert (server.sent, server.sent_bytes, server.ran_out) == (1234, 2468, True)


def test_each_process_gets_its_role() -> None:
    assert role_of("python -m jobs.ingest tcp://x", is_driver=True) == "driver"
    assert role_of("/venv/ray/core/src/ray/gcs/gcs_server --a", is_driver=False) == "gcs_server"
    assert role_of("ray::WriterActor.write", is_driver=False) == "writers"
    assert role_of("ray::DeadLetterActor", is_driver=False) == "services"
    assert role_of("ray::decode_batch", is_driver=False) == "decode tasks"
    assert role_of("ray::IDLE", is_driver=False) == "decode tasks"
    assert role_of("python dashboard/agent.py", is_driver=False) == "other"


def test_rates_memory_and_the_ceiling_are_worked_out_from_the_samples() -> None:
    timeline = [
        {"t": float(t), "sent": 1000.0 * t + 500, "lines": 900.0 * t, "messages": 700.0 * t, "in_flight": 4.0}
        for t in range(11)
    ]
    assert rate_between(timeline, "sent", 0, 5) == 1000.0
    assert rate_between(timeline, "lines", 5, 10) == 900.0
    assert rate_between(timeline, "lines", 3, 3) is None
    snapshots = [
        {"t": 0.0, "rss_bytes": {"driver": 100, "writers": 300}},
        {"t": 60.0, "rss_bytes": {"driver": 110, "writers": 330}},
    ]
    memory = _memory(snapshots)
    assert [s["rss_bytes"] for s in memory["samples"]] == [400, 440]
    assert memory["first_last_ratio"] == 1.1
    cpu = [{"t": 0.0, "driver": 1.0, "writers": 2.0}, {"t": 10.0, "driver": 6.0, "writers": 14.0}]
    limits = _stress_limits({"timeline": timeline, "feeding_s": 10.0, "cpu_s_per_snapshot": cpu})
    assert limits["send_rate_second_half_per_s"] == 1000.0
    assert (limits["job_lines_per_s_second_half"], limits["job_msgs_per_s_second_half"]) == (900.0, 700.0)
    assert limits["backlog_max_lines"] == 1500.0
    assert limits["in_flight_mean_second_half"] == 4.0
    assert limits["cpu_cores_by_role"] == {"driver": 0.5, "writers": 1.2}
