"""Fusion of receivers (breakwater.fusion): copies of one transmission become one report and
its receptions, and the writer counts them so every sink still balances."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue
from breakwater.fusion import FusionWindow, receiver_of
from breakwater.gate import SinkGate
from breakwater.reports import KIND_POSITION, KIND_STATIC, KINDS, ReportBatch
from breakwater.writer import ShardWriter
from tests.unit.fakes import MemorySink

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def position(mmsi: int, ms: int, digest: int, station: str | None, time_source: str = "tag_block") -> tuple[Any, ...]:
    return (mmsi, ms, digest, 1, 60.0, 5.0, 10.0, 90.0, 90, 0, 0.0, station, time_source, None)


def static(mmsi: int, ms: int, digest: int, station: str | None) -> tuple[Any, ...]:
    return (mmsi, ms, digest, 19, None, None, "NAME", 37, 5, 5, 2, 2, None, None, None, station, "tag_block", None)


def batch(source: str, *positions: tuple[Any, ...], statics: tuple[tuple[Any, ...], ...] = ()) -> ReportBatch:
    return ReportBatch(source, T0, list(positions), list(statics))


def test_a_second_receivers_copy_within_the_window_is_a_reception_of_the_first() -> None:
    window = FusionWindow(5.0)
    first = window.admit(batch("feed-a", position(257000001, T0, 77, "r1")))
    second = window.admit(batch("feed-b", position(257000001, T0 + 1200, 77, "r2")))
    assert first.batch.positions == [position(257000001, T0, 77, "r1")] and not first.batch.receptions
    assert second.batch.positions == []
    assert second.batch.receptions == [(257000001, T0, 77, KIND_POSITION, "r2", T0 + 1200)]
    assert second.copies == Counter({KIND_POSITION: 1})


def test_a_receiver_without_a_station_is_named_by_its_source() -> None:
    window = FusionWindow(5.0)
    window.admit(batch("tcp://a", position(257000001, T0, 77, None)))
    second = window.admit(batch("tcp://b", position(257000001, T0, 77, None)))
    assert [r[4] for r in second.batch.receptions] == ["tcp://b"]
    assert receiver_of(position(1, 1, 1, "r9"), "tcp://x") == "r9"


def test_the_same_receivers_repeat_is_its_own_report_as_without_fusion() -> None:
    window = FusionWindow(5.0)
    window.admit(batch("a", position(257000001, T0, 77, "r1")))
    repeat = window.admit(batch("a", position(257000001, T0 + 2000, 77, "r1")))
    assert repeat.batch.positions == [position(257000001, T0 + 2000, 77, "r1")] and not repeat.batch.receptions


def test_the_same_payload_outside_the_window_is_a_new_report() -> None:
    window = FusionWindow(5.0)
    window.admit(batch("a", position(257000001, T0, 77, "r1")))
    later = window.admit(batch("b", position(257000001, T0 + 5001, 77, "r2")))
    assert len(later.batch.positions) == 1 and not later.batch.receptions
    # and the window now follows the newer transmission
    again = window.admit(batch("c", position(257000001, T0 + 6000, 77, "r3")))
    assert again.batch.receptions == [(257000001, T0 + 5001, 77, KIND_POSITION, "r3", T0 + 6000)]


def test_redelivery_gives_the_same_rows_so_the_stores_keys_make_it_a_duplicate() -> None:
    window = FusionWindow(5.0)
    a = batch("a", position(257000001, T0, 77, "r1"))
    b = batch("b", position(257000001, T0 + 10, 77, "r2"))
    first_a, first_b = window.admit(a), window.admit(b)
    again_a, again_b = window.admit(a), window.admit(b)
    assert again_a.batch.positions == first_a.batch.positions == a.positions
    assert again_b.batch.receptions == first_b.batch.receptions != []


def test_reports_placed_by_their_file_or_read_time_are_never_fused() -> None:
    window = FusionWindow(5.0)
    for time_source in ("file", "ingest"):
        for source in ("a", "b"):
            out = window.admit(batch(source, position(257000001, T0, 77, None, time_source)))
            assert len(out.batch.positions) == 1 and not out.batch.receptions


def test_a_type_19_copy_becomes_a_reception_of_its_position_and_of_its_static_report() -> None:
    window = FusionWindow(5.0)
    window.admit(batch("a", position(257000001, T0, 77, "r1"), statics=(static(257000001, T0, 77, "r1"),)))
    copy = window.admit(batch("b", position(257000001, T0, 77, "r2"), statics=(static(257000001, T0, 77, "r2"),)))
    assert sorted(r[3] for r in copy.batch.receptions) == [KIND_POSITION, KIND_STATIC]
    assert copy.copies == Counter({KIND_POSITION: 1, KIND_STATIC: 1})


def test_window_zero_stores_every_copy() -> None:
    window = FusionWindow(0)
    for source in ("a", "b"):
        assert len(window.admit(batch(source, position(257000001, T0, 77, "r-" + source))).batch.positions) == 1


def test_entries_are_forgotten_after_retain_s_and_beyond_max_entries() -> None:
    clock = Clock()
    window = FusionWindow(5.0, retain_s=30.0, max_entries=3, clock=clock)
    window.admit(batch("a", *[position(257000000 + i, T0, 77, "r1") for i in range(3)]))
    assert len(window) == 3
    window.admit(batch("a", position(257000009, T0, 77, "r1")))
    assert window.forgotten == 1 and len(window) == 3
    clock.now += 31
    late = window.admit(batch("b", position(257000009, T0, 77, "r2")))
    assert len(late.batch.positions) == 1, "forgotten: stored as a report, never lost"


copies = st.lists(
    st.tuples(
        st.integers(0, 3),  # which transmission
        st.sampled_from(["r1", "r2", "r3"]),  # which receiver
        st.integers(0, 2000),  # its clock's offset in ms, within the window
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(copies, st.integers(1, 6))
def test_every_copy_ends_as_the_report_or_one_of_its_receptions(
    heard: list[tuple[int, str, int]], per_batch: int
) -> None:
    """Whatever the order and batching: a transmission's report is its first copy, every other
    receiver's copy a reception of it, and its receivers are every receiver that heard it."""
    window = FusionWindow(5.0)
    rows = [position(257000001 + t, T0 + 60_000 * t + offset, 1000 + t, r) for t, r, offset in heard]
    reports: list[tuple[Any, ...]] = []
    receptions: list[tuple[Any, ...]] = []
    for i in range(0, len(rows), per_batch):
        out = window.admit(batch("merged-feed", *rows[i : i + per_batch]))
        reports += out.batch.positions
        receptions += out.batch.receptions
    assert len(reports) + len(receptions) == len(rows), "nothing lost, nothing made up"
    first: dict[tuple[int, int], tuple[Any, ...]] = {}
    heard_by: dict[tuple[int, int], set[str]] = {}
    for row in rows:
        first.setdefault((row[0], row[2]), row)
        heard_by.setdefault((row[0], row[2]), set()).add(row[11])
    # Each transmission's first copy is its report; every copy from that copy's receiver is a
    # report too (the same again, or that receiver's own repeat), every other one a reception.
    for key, row in first.items():
        own = [r for r in rows if (r[0], r[2]) == key and r[11] == row[11]]
        assert [r for r in reports if (r[0], r[2]) == key] == own
    for r in receptions:
        assert (r[1], r[4] != first[(r[0], r[2])][11]) == (first[(r[0], r[2])][1], True), "names the first copy"
    for key, receivers in heard_by.items():
        assert {first[key][11]} | {r[4] for r in receptions if (r[0], r[2]) == key} == receivers


def make_writer(tmp_path: Path, sinks: list[MemorySink]) -> ShardWriter:
    clock = Clock()
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"), clock=clock)
    gates = {s.name: SinkGate(CircuitBreaker(s.name, BreakerConfig(), clock=clock), clock=clock) for s in sinks}
    return ShardWriter(sinks, gates, queue, job_id="job-1", clock=clock, fusion=FusionWindow(5.0))


def test_the_writer_stores_one_report_and_every_sink_balances(tmp_path: Path) -> None:
    db = MemorySink("db", frozenset({*KINDS, "reception"}))
    live = MemorySink("redis", frozenset({KIND_POSITION, KIND_STATIC}))
    writer = make_writer(tmp_path, [db, live])
    counts = Counter[str]()
    for source, station, offset in (("a", "r1", 0), ("b", "r2", 800), ("c", "r3", 400)):
        counts += writer.write(batch(source, position(257000001, T0 + offset, 77, station)), f"b-{source}").counts
    assert list(db.rows.values()) == [position(257000001, T0, 77, "r1")]
    assert {r[4] for r in db.receptions} == {"r2", "r3"}
    assert list(live.rows.values()) == [position(257000001, T0, 77, "r1")]
    for sink in ("db", "redis"):
        assert counts[acc.sink(sink, "received")] == 3, "every copy reached every sink's count"
        assert not acc.conservation_errors(counts, [sink])
    assert counts[acc.sink("db", "written")] == 3
    assert counts[acc.sink("redis", "written")] == 1 and counts[acc.sink("redis", "duplicates")] == 2


def test_receptions_a_down_database_could_not_take_wait_in_the_queue_and_a_drain_writes_them(
    tmp_path: Path,
) -> None:
    from breakwater.drain import Drain

    clock = Clock()
    db = MemorySink("db", frozenset({*KINDS, "reception"}))
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"), clock=clock)
    gate = SinkGate(CircuitBreaker("db", BreakerConfig(), clock=clock), clock=clock)
    writer = ShardWriter([db], {"db": gate}, queue, job_id="job-1", clock=clock, fusion=FusionWindow(5.0))
    writer.write(batch("a", position(257000001, T0, 77, "r1")), "b-a")
    db.down = True
    counts = Counter[str]()
    for source, station in (("b", "r2"), ("c", "r3")):
        counts += writer.write(batch(source, position(257000001, T0 + 500, 77, station)), f"b-{source}").counts
    assert counts[acc.sink("db", acc.OUTCOME_DLQ)] == 2 and not db.receptions
    assert sorted(letter.kind for letter in queue.peek(10)) == ["reception", "reception"]
    db.down = False
    clock.now += 3600
    report = Drain(queue, {"db": db}, {"db": gate}, queue.policy, clock=clock, sleep=lambda s: None).run(force=True)
    assert report == {"db.written": 2}
    assert {r[4] for r in db.receptions} == {"r2", "r3"} and queue.stats().waiting == 0
