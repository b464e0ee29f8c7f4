"""The persistence logic of one shard: every sink through its breaker, failures to the DLQ.

A `ShardWriter` is what a persistence actor runs (`actors/writer.py` gives it an address).
All reports of one MMSI come to the same writer, which keeps per-vessel order. For each
sink it asks the sink's gate what to do:

- call the sink; on a transient failure the whole batch goes to the dead-letter queue
  (the sink is probably down); on a poison record the batch is split in halves until the
  bad rows are found, the good rows are written and the bad ones go straight to the
  dead-letter store. Each half passes the gate too, so a store that dies meanwhile stops
  the search and the rest waits in the queue;
- or divert the batch to the dead-letter queue at once, without touching the sink and
  without an exception per record, when the breaker is open.

Each sink has its own lane (a bulkhead): the sinks' parts of a batch are written in
parallel, each lane's calls one at a time. A lane whose last call found its store
unavailable (a timeout, a refused connection) is suspect: while a call runs on a suspect
lane (a probe of the store), the parts that reach it go to the dead-letter queue at once
instead of queueing behind it. A frozen Redis therefore costs the database path one
timeout at most, and a slow database the Redis path likewise; a store that is merely slow
is waited for, never diverted. The breaker still decides when a failing store is tried.

`write` returns the counts the job summary needs, and only after the dead-letter queue
has journaled what it was given: nothing acknowledged is only in memory. When the queue
does not answer, the writer keeps trying for `queue_wait_s` and the batch stays
unacknowledged meanwhile, which holds the reader back; then it gives up with
`QueueUnavailable` and the job stops, having acknowledged nothing it did not journal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from breakwater import accounting as acc
from breakwater.breaker import counts_as_failure
from breakwater.dead_letters import BREAKER_OPEN_ERROR, EnqueueResult, Failure
from breakwater.errors import PoisonRecord, QueueUnavailable, StoreError, StoreUnavailable
from breakwater.fusion import FusionWindow
from breakwater.gate import SinkGate, Verdict
from breakwater.metrics import E2E_LATENCY, MetricDelta, MetricsBuffer
from breakwater.plausibility import Plausibility, Tally
from breakwater.reports import KIND_RECEPTION, RECORD_KINDS, ReportBatch
from breakwater.stores.base import SINK_DB, SINK_REDIS, Sink, WriteResult

log = logging.getLogger("breakwater.writer")

FAILED_METRIC = {SINK_DB: "ais_messages_failed_db", SINK_REDIS: "ais_messages_failed_redis"}
LANE_SUSPECT_ERROR = "LaneSuspect"


def suspect_lane_message(sink: str) -> str:
    return f"{sink} was unavailable on the last call and the next one has not returned"


class DeadLetterLink(Protocol):
    """How a writer reaches the dead-letter queue: the queue itself in-process, or its actor."""

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
    ) -> EnqueueResult: ...


@dataclass
class WriteReport:
    """What one `write` did: conservation counts (accounting keys) and backpressure."""

    counts: Counter[str] = field(default_factory=Counter)
    dlq_full: bool = False

    def add(self, other: WriteReport) -> None:
        self.counts.update(other.counts)
        self.dlq_full = self.dlq_full or other.dlq_full


class Lane:
    """One sink's lane in a writer: its calls go one at a time. `enter` waits while the lane
    is busy, unless it is suspect (its last call found the store unavailable): then it
    returns False at once, and the caller diverts instead of waiting on the probe."""

    def __init__(self, bulkhead: bool = True) -> None:
        self.bulkhead = bulkhead
        self.suspect = False
        self._lock = threading.Lock()

    def enter(self) -> bool:
        while not self._lock.acquire(timeout=0.05):
            if self.bulkhead and self.suspect:
                return False
        return True

    def leave(self) -> None:
        self._lock.release()


def restrict(batch: ReportBatch, kinds: frozenset[str]) -> ReportBatch:
    """The part of a batch a sink keeps."""
    return ReportBatch(
        batch.source,
        batch.read_ms,
        batch.positions if "position" in kinds else [],
        batch.statics if "static" in kinds else [],
        batch.others if "other" in kinds else [],
        batch.receptions if KIND_RECEPTION in kinds else [],
    )


def halves(batch: ReportBatch) -> tuple[ReportBatch, ReportBatch]:
    rows = [(k, r) for k in RECORD_KINDS for r in batch.rows(k)]
    middle = len(rows) // 2
    parts = []
    for chunk in (rows[:middle], rows[middle:]):
        part = ReportBatch(batch.source, batch.read_ms)
        for kind, row in chunk:
            part.rows(kind).append(row)
        parts.append(part)
    return parts[0], parts[1]


def rows_by_kind(batch: ReportBatch) -> dict[str, list[tuple[Any, ...]]]:
    return {kind: rows for kind in RECORD_KINDS if (rows := batch.rows(kind))}


class ShardWriter:
    def __init__(
        self,
        sinks: list[Sink],
        gates: dict[str, SinkGate],
        dead_letters: DeadLetterLink,
        *,
        job_id: str,
        clock: Callable[[], float] = time.time,
        bulkheads: bool = True,
        queue_wait_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
        on_queue_silent: Callable[[], None] | None = None,
        fusion: FusionWindow | None = None,
        plausibility: Plausibility | None = None,
    ) -> None:
        self.sinks = sinks
        self.fusion = fusion if fusion is not None else FusionWindow(0)
        self.plausibility = plausibility  # None: no checks (what the decoder flagged stays flagged)
        self.gates = gates
        self.dead_letters = dead_letters
        self.job_id = job_id
        self.clock = clock
        self.sleep = sleep
        self.queue_wait_s = queue_wait_s
        self.on_queue_silent = on_queue_silent  # ships the count at once: an operator should see it
        self.metrics = MetricsBuffer(clock)
        self._queue_lock = threading.Lock()  # the link may be the in-process queue: one connection
        self.lanes = {sink.name: Lane(bulkheads) for sink in sinks}
        # Room for every sink of every concurrent call (actors/writer.py: max_concurrency).
        self._pool = ThreadPoolExecutor(max_workers=8 * len(sinks), thread_name_prefix="lane")

    def close(self) -> None:
        self.flush_gates()
        self._pool.shutdown()
        for sink in self.sinks:
            sink.close()

    def flush_gates(self) -> None:
        """Report buffered breaker outcomes. A gate is touched only from inside its lane; a
        suspect lane's gate reports when its probe returns."""
        for name, gate in self.gates.items():
            lane = self.lanes.get(name)
            if lane is None:
                gate.flush()
            elif lane.enter():
                try:
                    gate.flush()
                finally:
                    lane.leave()

    def drain_metrics(self) -> MetricDelta:
        for name, gate in self.gates.items():
            self.metrics.set("circuit_breaker_state", int(gate.view.state), breaker=name)
        return self.metrics.drain()

    def write(self, batch: ReportBatch, batch_id: str) -> WriteReport:
        report = WriteReport()
        if self.plausibility is not None:
            checked = self.plausibility.check(batch)
            self._count_checks(checked, report, self.plausibility.failure_ratio)
            batch = checked.batch
        fused = self.fusion.admit(batch)
        batch = fused.batch
        if fused.drift and self.plausibility is not None:
            self._count_checks(self.plausibility.record_drift(fused.drift), report, self.plausibility.failure_ratio)
        if fused.copies:
            self._count_copies(fused.copies, batch.source, report)
        parts = [(sink, restrict(batch, sink.kinds)) for sink in self.sinks]
        parts = [(sink, part) for sink, part in parts if len(part)]
        if len(parts) > 1:
            for lane_report in self._pool.map(lambda p: self._write_lane(p[0], p[1], batch_id), parts):
                report.add(lane_report)
        else:
            for sink, part in parts:
                report.add(self._write_lane(sink, part, batch_id))
        if len(batch):
            latency = max(0.0, self.clock() - batch.read_ms / 1000)
            self.metrics.observe(E2E_LATENCY, latency, len(batch))
            self.metrics.set("ais_last_ingest_timestamp_seconds", self.clock())
        return report

    def _count_checks(self, checked: Tally, report: WriteReport, failure_ratio: float) -> None:
        """The plausibility checks' flags, every receiver's checks, and demotions (logged)."""
        for reason, n in checked.flags.items():
            report.counts[acc.flagged(reason)] += n
        for receiver, n in checked.checks.items():
            self.metrics.inc("ais_receiver_checks", n, receiver=receiver)
        for (receiver, check), n in checked.failures.items():
            self.metrics.inc("ais_receiver_failed_checks", n, receiver=receiver, check=check)
        for change in checked.changes:
            log.warning("%s", change.describe(failure_ratio))
            report.counts[acc.DEMOTIONS if change.demoted else acc.RESTORATIONS] += 1
            name = "ais_receiver_demotions" if change.demoted else "ais_receiver_restorations"
            self.metrics.inc(name, 1, receiver=change.receiver)

    def _count_copies(self, copies: Counter[str], source: str, report: WriteReport) -> None:
        """Other receivers' copies of stored reports: a sink that keeps receptions receives
        each as one; to a sink that does not, the copy of a kind it keeps is a report it
        holds already, so it counts as received and a duplicate, as a repeat would."""
        report.counts[acc.FUSED_COPIES] += sum(copies.values())
        self.metrics.inc("ais_fused_copies", sum(copies.values()), source=source)
        for sink in self.sinks:
            if KIND_RECEPTION in sink.kinds:
                continue
            held = sum(n for kind, n in copies.items() if kind in sink.kinds)
            report.counts[acc.sink(sink.name, "received")] += held
            report.counts[acc.sink(sink.name, acc.OUTCOME_DUPLICATE)] += held
            self.metrics.inc("ais_duplicates", held, sink=sink.name)

    def _write_lane(self, sink: Sink, part: ReportBatch, batch_id: str) -> WriteReport:
        """One sink's part of a batch, in that sink's lane."""
        report = WriteReport()
        report.counts[acc.sink(sink.name, "received")] += len(part)
        part, superseded = sink.prepare(part)
        report.counts[acc.sink(sink.name, acc.OUTCOME_DUPLICATE)] += superseded
        self.metrics.inc("ais_duplicates", superseded, sink=sink.name)
        if not len(part):
            return report
        lane = self.lanes[sink.name]
        if not lane.enter():
            state = self.gates[sink.name].view.state.name
            failure = Failure(LANE_SUSPECT_ERROR, suspect_lane_message(sink.name), state, self.clock())
            self.metrics.inc("ais_lane_diverted", len(part), sink=sink.name)
            self._to_dead_letters(sink.name, part, batch_id, failure, report)
            return report
        try:
            self._write_sink(sink, part, batch_id, report)
        finally:
            lane.leave()
        return report

    def _write_sink(self, sink: Sink, part: ReportBatch, batch_id: str, report: WriteReport) -> None:
        gate = self.gates[sink.name]
        decision = gate.decide()
        if decision.verdict == Verdict.DIVERT:
            failure = Failure(BREAKER_OPEN_ERROR, "breaker open", decision.view.state.name, self.clock())
            self._to_dead_letters(sink.name, part, batch_id, failure, report, decision.view.retry_at)
            return
        started = time.perf_counter()
        try:
            result = self._call(sink, part)
        except StoreError as error:
            duration = time.perf_counter() - started
            gate.record(decision, ok=not counts_as_failure(error), duration_s=duration, error=_describe(error))
            failure = Failure(type(error).__name__, str(error), decision.view.state.name, self.clock(), error.transient)
            self.lanes[sink.name].suspect = not isinstance(error, PoisonRecord)
            if isinstance(error, PoisonRecord):
                self._isolate_poison(sink, part, batch_id, report, failure)
            else:
                log.warning("%s write failed, %d records to the dead-letter queue: %s", sink.name, len(part), error)
                self._to_dead_letters(sink.name, part, batch_id, failure, report)
            return
        duration = time.perf_counter() - started
        self.lanes[sink.name].suspect = False
        gate.record(decision, ok=True, duration_s=duration)
        self.metrics.observe("ais_sink_write_seconds", duration, sink=sink.name)
        self._count(sink.name, result, report)

    @staticmethod
    def _call(sink: Sink, part: ReportBatch) -> WriteResult:
        """A sink's write; an error a store did not classify is taken as the store failing,
        so its records wait in the dead-letter queue instead of failing the whole job."""
        try:
            return sink.write(part)
        except StoreError:
            raise
        except Exception as error:
            log.exception("%s raised an unexpected error; treating the sink as failing", sink.name)
            raise StoreUnavailable(sink.name, f"{type(error).__name__}: {error}") from error

    def _isolate_poison(
        self, sink: Sink, part: ReportBatch, batch_id: str, report: WriteReport, failure: Failure
    ) -> None:
        """Halve the batch until every poison row is alone; write the rest.

        Every piece goes through the sink's gate like a batch of its own: a store that fails
        during the search (or a breaker another writer opened) ends it, and the pieces not yet
        written wait in the dead-letter queue as transient failures, instead of each costing
        a store timeout."""
        pending = list(halves(part)) if len(part) > 1 else []
        if not pending:
            self._to_dead_letters(sink.name, part, batch_id, failure, report)
            return
        gate = self.gates[sink.name]
        while pending:
            piece = pending.pop()
            if not len(piece):
                continue
            decision = gate.decide()
            if decision.verdict == Verdict.DIVERT:
                diverted = Failure(BREAKER_OPEN_ERROR, "breaker open", decision.view.state.name, self.clock())
                self._park_rest(sink.name, [piece, *pending], batch_id, diverted, report, decision.view.retry_at)
                return
            started = time.perf_counter()
            try:
                result = self._call(sink, piece)
            except PoisonRecord as error:
                gate.record(decision, ok=True, duration_s=time.perf_counter() - started)
                if len(piece) == 1:
                    bad = Failure("PoisonRecord", str(error), decision.view.state.name, self.clock(), False)
                    self._to_dead_letters(sink.name, piece, batch_id, bad, report)
                else:
                    pending.extend(halves(piece))
                continue
            except StoreError as error:
                duration = time.perf_counter() - started
                gate.record(decision, ok=not counts_as_failure(error), duration_s=duration, error=_describe(error))
                down = Failure(type(error).__name__, str(error), decision.view.state.name, self.clock(), True)
                self.lanes[sink.name].suspect = True
                log.warning("%s failed while isolating a poison record; the rest waits: %s", sink.name, error)
                self._park_rest(sink.name, [piece, *pending], batch_id, down, report)
                return
            gate.record(decision, ok=True, duration_s=time.perf_counter() - started)
            self._count(sink.name, result, report)

    def _park_rest(
        self,
        sink: str,
        pieces: list[ReportBatch],
        batch_id: str,
        failure: Failure,
        report: WriteReport,
        next_retry_at: float | None = None,
    ) -> None:
        """The pieces an isolation did not get to, to the dead-letter queue in one enqueue."""
        rest = ReportBatch(pieces[0].source, pieces[0].read_ms)
        for piece in pieces:
            for kind in RECORD_KINDS:
                rest.rows(kind).extend(piece.rows(kind))
        if len(rest):
            self._to_dead_letters(sink, rest, batch_id, failure, report, next_retry_at)

    def _to_dead_letters(
        self,
        sink: str,
        part: ReportBatch,
        batch_id: str,
        failure: Failure,
        report: WriteReport,
        next_retry_at: float | None = None,
    ) -> None:
        result = self._enqueue(sink, part, batch_id, failure, next_retry_at)
        report.counts[acc.sink(sink, acc.OUTCOME_DLQ)] += result.accepted
        report.counts[acc.sink(sink, acc.OUTCOME_DUPLICATE)] += result.duplicates
        self.metrics.inc("ais_duplicates", result.duplicates, sink=sink)
        report.dlq_full = report.dlq_full or result.full
        self.metrics.inc("ais_sink_records", result.accepted, sink=sink, outcome="dlq")
        self.metrics.inc(FAILED_METRIC.get(sink, "ais_messages_failed_db"), result.accepted)
        if not failure.transient:
            self.metrics.inc("ais_dead_lettered", result.accepted, sink=sink)

    def _enqueue(
        self, sink: str, part: ReportBatch, batch_id: str, failure: Failure, next_retry_at: float | None
    ) -> EnqueueResult:
        """Journal a part, trying again while the queue does not answer (each try has its
        own timeout; a repeated enqueue of the same records counts them as duplicates, never
        twice). Until it answers, this batch is unacknowledged and holds the reader back."""
        gave_up_at = self.clock() + self.queue_wait_s
        pause = 0.5
        while True:
            try:
                with self._queue_lock:
                    return self.dead_letters.enqueue(
                        sink,
                        rows_by_kind(part),
                        source=part.source,
                        job_id=self.job_id,
                        batch_id=batch_id,
                        read_ms=part.read_ms,
                        failure=failure,
                        next_retry_at=next_retry_at,
                    )
            except QueueUnavailable as error:
                self.metrics.inc("ais_dlq_unanswered", 1, sink=sink)
                if self.on_queue_silent is not None:
                    self.on_queue_silent()
                if self.clock() + pause > gave_up_at:
                    raise QueueUnavailable(
                        f"{error}; gave up after queue_wait_s={self.queue_wait_s:g} s with {len(part)} {sink} "
                        f"records of batch {batch_id} unacknowledged (rerun the job: writes are idempotent)"
                    ) from error
                log.warning("the dead-letter queue did not answer, trying again in %.1f s: %s", pause, error)
                self.sleep(pause)
                pause = min(pause * 2, 10.0)

    def _count(self, sink: str, result: WriteResult, report: WriteReport) -> None:
        report.counts[acc.sink(sink, acc.OUTCOME_WRITTEN)] += result.written
        report.counts[acc.sink(sink, acc.OUTCOME_DUPLICATE)] += result.duplicates
        self.metrics.inc("ais_sink_records", result.written, sink=sink, outcome="written")
        self.metrics.inc("ais_sink_records", result.duplicates, sink=sink, outcome="duplicates")
        self.metrics.inc("ais_duplicates", result.duplicates, sink=sink)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]
