"""The fastpath scenario: what a batch costs when its sink's breaker is open.

With the breaker open, a batch must go to the dead-letter queue without touching the sink and
without an exception per record, and that must stay well under a millisecond a batch. Measured
here in one process, with no Ray and no server, on real report batches: the corpus framed and
decoded as the ingest job does it (5,000-line batches, two MMSI shards, empty shards left out).

    decision  `SinkGate.decide()` over a breaker forced OPEN: the cached view says DIVERT
    divert    `ShardWriter.write` of a whole batch through that gate to a sink that must never
              be called and a dead-letter link that only counts rows: Breakwater's decision and
              routing up to the dead-letter call, not SQLite's work
    journal   the same into the real `DeadLetterQueue` (SQLite, WAL, synchronous=NORMAL), per
              batch and per record; each batch once, since a batch journaled again takes the
              already-there path (a conflict and a lookup per row), not the one measured

Each figure is one `time.perf_counter_ns` pair around one call (an empty pair measures about
70 ns on a 2-core EPYC VM). The garbage collector stays on, as in the writer actor, so p99
includes its pauses. In the job the gate's link is the breaker's actor, and refreshing a view
older than `view_ttl_s` costs a Ray call once a second per writer; here the breaker is
in-process, so that refresh is nearly free.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breakwater import accounting as acc
from breakwater.breaker import BreakerState, CircuitBreaker
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue, EnqueueResult, Failure
from breakwater.decode import BatchDecoder
from breakwater.framing import Reader
from breakwater.gate import SinkGate, Verdict
from breakwater.reports import KINDS, ReportBatch
from breakwater.stores.base import SINK_DB, WriteResult
from breakwater.writer import DeadLetterLink, ShardWriter
from jobs.bench import log
from jobs.bench.corpus import corpus_lines
from jobs.bench.scenarios import CAPTURES, DATA

BATCH_LINES = 5000  # the ingest job's default batch_lines
SHARDS = 2  # its default number of writers
MAX_LINES = 100_000  # the decisions cycle over the batches: more distinct ones only cost memory
JOURNAL_BATCHES = 100  # at most, each journaled once (a few tens of milliseconds each)
WARMUP = 50  # untimed calls first, so the figures leave out first-call costs
TARGET_US = 1000.0  # "well under a millisecond per batch"


class UntouchableSink:
    """The SQL sink's shape (every report kind, nothing superseded) counting its writes: on
    the open path there must be none."""

    name = SINK_DB
    kinds = frozenset(KINDS)

    def __init__(self) -> None:
        self.writes = 0

    def prepare(self, batch: ReportBatch) -> tuple[ReportBatch, int]:
        return batch, 0

    def write(self, batch: ReportBatch) -> WriteResult:
        self.writes += 1
        return WriteResult(0, 0)

    def close(self) -> None:
        pass


class CountingDeadLetters:
    """A dead-letter link that only counts rows, so the divert figure leaves SQLite out."""

    def __init__(self) -> None:
        self.rows = 0

    def enqueue(
        self,
        sink: str,
        rows_by_kind: dict[str, list[tuple[Any, ...]]],
        *,
        source: str,
        job_id: str,
        batch_id: str,
        read_ms: int,
        failure: Failure,
        next_retry_at: float | None = None,
    ) -> EnqueueResult:
        n = sum(len(rows) for rows in rows_by_kind.values())
        self.rows += n
        return EnqueueResult(accepted=n, duplicates=0, full=False)


def report_batches(lines: int) -> list[ReportBatch]:
    """The corpus framed and decoded as the ingest job does it, one `ReportBatch` per shard."""
    reader = Reader("fastpath", max_lines=BATCH_LINES)
    decoder = BatchDecoder(n_shards=SHARDS)
    cut = [reader.feed(line) for line in corpus_lines([DATA / c for c in CAPTURES], lines)]
    cut.append(reader.close())
    return [shard for batch in cut if batch is not None for shard in decoder.decode(batch).shards if len(shard)]


def open_gate() -> SinkGate:
    """A gate over a breaker an operator forced OPEN: every decision diverts, none asks it."""
    breaker = CircuitBreaker(SINK_DB)
    breaker.force(BreakerState.OPEN, "bench")
    return SinkGate(breaker)


def time_decisions(n: int) -> list[int]:
    """Nanoseconds of each of `n` open-breaker decisions, the DIVERT check included."""
    gate = open_gate()
    timings = []
    for _ in range(WARMUP + n):
        started = time.perf_counter_ns()
        diverted = gate.decide().verdict == Verdict.DIVERT
        timings.append(time.perf_counter_ns() - started)
        if not diverted:
            raise AssertionError("a gate over a breaker forced OPEN did not divert")
    return timings[WARMUP:]


@dataclass
class TimedWrites:
    """Nanoseconds of each timed write, and what must be zero with the breaker open: calls to
    the sink, and reports that did not reach the dead-letter link."""

    timings_ns: list[int]
    sink_calls: int
    unrouted: int


def time_writes(batches: list[ReportBatch], n: int, dead_letters: DeadLetterLink, *, warmup: int = 0) -> TimedWrites:
    """`n` writes with the breaker open, cycling over `batches`, after `warmup` untimed ones."""
    sink = UntouchableSink()
    writer = ShardWriter([sink], {SINK_DB: open_gate()}, dead_letters, job_id="bench-fastpath")
    batch_ids = [f"fastpath-{i}" for i in range(warmup + n)]
    timings, unrouted = [], 0
    for i, batch_id in enumerate(batch_ids):
        batch = batches[i % len(batches)]
        started = time.perf_counter_ns()
        report = writer.write(batch, batch_id)
        timings.append(time.perf_counter_ns() - started)
        routed = report.counts[acc.sink(SINK_DB, acc.OUTCOME_DLQ)]
        routed += report.counts[acc.sink(SINK_DB, acc.OUTCOME_DUPLICATE)]  # waiting already: not lost
        unrouted += len(batch) - routed
    return TimedWrites(timings[warmup:], sink.writes, unrouted)


def time_journal(batches: list[ReportBatch], tmp: Path) -> TimedWrites:
    """Writes into the real journal, a fresh file, each batch once."""
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp / "fastpath-dlq.sqlite3"))
    try:
        return time_writes(batches, len(batches), queue)
    finally:
        queue.close()


def _check(runs: list[TimedWrites]) -> None:
    """The point of the open path, asserted on every run: no sink call, no report lost."""
    sink_calls = sum(r.sink_calls for r in runs)
    unrouted = sum(r.unrouted for r in runs)
    if sink_calls or unrouted:
        raise AssertionError(
            f"with the breaker open the sink was called {sink_calls} times "
            f"and {unrouted} reports did not reach the dead-letter queue"
        )


def _percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile: a value that was measured, not an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _journal_figures(run: TimedWrites, batches: list[ReportBatch]) -> dict[str, float]:
    """Per batch, and per record as the median of each batch's time over its reports."""
    timings = run.timings_ns
    per_record_ns = [t / len(b) for t, b in zip(timings, batches, strict=True)]
    return {
        "fastpath_journal_batches": len(batches),
        "fastpath_journal_ms_per_batch_p50": round(_percentile(timings, 0.5) / 1e6, 2),
        "fastpath_journal_ms_per_batch_p99": round(_percentile(timings, 0.99) / 1e6, 2),
        "fastpath_journal_us_per_record": round(statistics.median(per_record_ns) / 1e3, 2),
    }


def scenario_fastpath(tmp: Path, lines: int, decisions: int) -> dict[str, Any]:
    lines = min(lines, MAX_LINES)
    batches = report_batches(lines)
    if not batches:
        raise SystemExit(f"the fastpath scenario needs report batches; {lines} corpus lines gave none")
    log(f"fastpath: {len(batches)} report batches from {lines:,} lines, {decisions:,} decisions each way")
    decision_ns = time_decisions(decisions)
    divert = time_writes(batches, decisions, CountingDeadLetters(), warmup=WARMUP)
    journaled = time_journal(batches[:JOURNAL_BATCHES], tmp)
    _check([divert, journaled])
    journal = _journal_figures(journaled, batches[:JOURNAL_BATCHES])
    divert_ns = divert.timings_ns
    divert_p99_us = _percentile(divert_ns, 0.99) / 1e3
    log(f"  divert p99 {divert_p99_us:.1f} us, journal p50 {journal['fastpath_journal_ms_per_batch_p50']} ms a batch")
    return {
        "corpus": {"lines": lines, "batch_lines": BATCH_LINES, "shards": SHARDS},
        "fastpath_decisions": decisions,
        "fastpath_batches": len(batches),
        "fastpath_batch_reports": round(statistics.fmean(len(b) for b in batches), 1),
        "fastpath_decision_us_p50": round(_percentile(decision_ns, 0.5) / 1e3, 3),
        "fastpath_decision_us_p99": round(_percentile(decision_ns, 0.99) / 1e3, 3),
        "fastpath_divert_us_p50": round(_percentile(divert_ns, 0.5) / 1e3, 2),
        "fastpath_divert_us_p99": round(divert_p99_us, 2),
        **journal,
        "fastpath_sink_calls": divert.sink_calls + journaled.sink_calls,
        "fastpath_target_us": TARGET_US,
        "fastpath_within_target": divert_p99_us < TARGET_US,
    }
