"""The ingest loop: read sources, keep a bounded number of batches in flight, add up the counts.

The loop is plain Python. It reaches the cluster only through a `Cluster` (the Ray one is
`actors.handles.RayCluster`; tests use an in-process one), which decodes a batch, routes its
reports to the shard writers and reports back the counts. Backpressure comes from two
bounds: at most `max_in_flight` batches are submitted and not yet written, and while the
dead-letter queue is over its limits no new batch is submitted at all.

A source that fails part way (SourceError from its `lines`) ends with the lines it gave
counted like any others; the summary names it, and the job is not ok.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from breakwater import accounting as acc
from breakwater.errors import SourceError
from breakwater.framing import LineBatch, Reader
from breakwater.metrics import MetricDelta, MetricsBuffer
from breakwater.reports import FLAGS
from breakwater.sources import FeedStats, Source
from breakwater.summary import FAILED, NOT_STARTED, READ_TO_END, STOPPED, IngestSummary, SourceEnd, example_text

log = logging.getLogger("breakwater.pipeline")


@dataclass
class BatchOutcome:
    """Counts of one batch, decode and write together, once every shard is written."""

    counts: Counter[str]
    dlq_full: bool = False
    rejected_examples: dict[str, bytes] = field(default_factory=dict)


class Cluster(Protocol):
    sinks: list[str]

    def submit(self, batch: LineBatch) -> Any:
        """Start decoding and writing `batch`; returns a ticket for `wait`."""

    def wait(self, tickets: list[Any], timeout_s: float) -> list[tuple[Any, BatchOutcome]]:
        """The tickets among `tickets` that finished within the timeout, with their outcomes."""

    def dlq_full(self) -> bool: ...

    def push_metrics(self, delta: MetricDelta) -> None: ...

    def dead_letter_tally(self, job_id: str) -> dict[str, acc.DeadLetterTally]: ...


@dataclass
class ReaderOptions:
    max_lines: int = 5000
    flush_interval_s: float = 0.1
    fragment_timeout_lines: int = 1000
    fragment_timeout_s: float = 60.0
    clock: Callable[[], float] = time.time  # the readers' clock: batch ages and read times


_DRIVER_METRICS: dict[str, tuple[str, dict[str, str]]] = {
    acc.LINES_READ: ("ais_lines_read", {}),
    acc.MESSAGES_DECODED: ("ais_messages_processed", {}),
    **{acc.rejected(r): ("ais_lines_rejected", {"reason": r}) for r in acc.REJECT_REASONS},
    **{acc.flagged(f): ("ais_flagged_reports", {"reason": f}) for f in FLAGS},
    **{acc.reports(k): ("ais_reports", {"kind": k}) for k in ("position", "static", "other")},
}


class _SourceThread(threading.Thread):
    """Reads sources in order, frames them, and puts batches on a bounded queue (a full queue
    stops the reading: backpressure reaches the file or the socket)."""

    def __init__(
        self, sources: list[Source], out: queue.Queue[Any], options: ReaderOptions, stop: threading.Event
    ) -> None:
        super().__init__(name=f"read-{sources[0].name}", daemon=True)
        self.sources = sources
        self.out = out
        self.options = options
        self.stop = stop
        self.readers: list[Reader] = []
        self.ends: list[SourceEnd] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for source in self.sources:
                if self.stop.is_set():
                    self.ends.append(SourceEnd(source.name, 0, NOT_STARTED))
                else:
                    self.ends.append(self._read(source))
        except BaseException as e:  # a bug, not a source that failed: the loop raises it
            self.error = e
        finally:
            self.out.put(None)

    def _read(self, source: Source) -> SourceEnd:
        o = self.options
        reader = Reader(
            source.name,
            max_lines=o.max_lines,
            flush_interval_s=o.flush_interval_s,
            fragment_timeout_lines=o.fragment_timeout_lines,
            fragment_timeout_s=o.fragment_timeout_s,
            stamp=source.stamp,
            clock=o.clock,
        )
        self.readers.append(reader)
        failure: SourceError | None = None
        try:
            for line in source.lines(self.stop):
                if line is None:
                    batch = reader.tick()
                else:
                    batch = reader.feed(line)
                    if batch is None and source.live:
                        # A steady feed is never idle long enough to yield None: its batch is
                        # cut by time here as well, or it would wait for max_lines lines.
                        batch = reader.tick()
                if batch is not None:
                    self.out.put(batch)
                if self.stop.is_set():
                    break
        except SourceError as e:
            log.error("%s", e)
            failure = e
        last = reader.close()  # also after a failure: what was read is decoded and counted
        if last is not None:
            self.out.put(last)
        lines_read = reader.counts[acc.LINES_READ]
        if failure is not None:
            return SourceEnd(source.name, lines_read, FAILED, str(failure))
        return SourceEnd(source.name, lines_read, STOPPED if self.stop.is_set() else READ_TO_END)


class Ingest:
    def __init__(
        self,
        cluster: Cluster,
        *,
        job_id: str,
        max_in_flight: int = 4,
        reader: ReaderOptions | None = None,
        on_progress: Callable[[Counter[str], int], None] | None = None,
        metrics_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.job_id = job_id
        self.max_in_flight = max(1, max_in_flight)
        self.reader_options = reader or ReaderOptions()
        self.on_progress = on_progress
        self.metrics_interval_s = metrics_interval_s
        self.clock = clock
        self.wall_clock = wall_clock
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self._examples: dict[str, bytes] = {}
        self._in_flight: list[Any] = []
        self._held = False
        self._metrics = MetricsBuffer()
        self._pushed: Counter[str] = Counter()
        self._last_push = 0.0
        self._started_at: datetime | None = None
        self._threads: list[_SourceThread] = []
        self._batch_source: dict[int, str] = {}  # id(ticket) -> the source its batch came from
        self._by_source: dict[str, Counter[str]] = {}  # a source's decode counts, from outcomes
        self._pushed_by_source: Counter[tuple[str, str]] = Counter()

    def run(self, sources: Iterable[Source]) -> IngestSummary:
        started = self.clock()
        self._started_at = datetime.fromtimestamp(self.wall_clock(), UTC)
        threads = self._threads = self._start_readers(list(sources))
        batches: queue.Queue[Any] = threads[0].out if threads else queue.Queue()
        open_threads = len(threads)
        while open_threads:
            try:
                item = batches.get(timeout=0.2)
            except queue.Empty:
                self._collect(timeout_s=0)
                self._maybe_push_metrics(threads)
                continue
            if item is None:
                open_threads -= 1
                continue
            self._submit(item)
            self._maybe_push_metrics(threads)
        while self._in_flight:
            self._collect(timeout_s=1.0)
            self._maybe_push_metrics(threads)
        for thread in threads:
            thread.join()
            for reader in thread.readers:
                self.counts.update(reader.counts)
                for reason, line in reader.rejected_examples.items():
                    self._examples.setdefault(reason, line)
                self.counts[acc.LINES_PENDING] += reader.pending_lines
            if thread.error is not None:
                raise thread.error
        self._push_metrics(threads, final=True)
        return self._summary(self.clock() - started, [end for t in threads for end in t.ends])

    def _start_readers(self, sources: list[Source]) -> list[_SourceThread]:
        out: queue.Queue[Any] = queue.Queue(maxsize=self.max_in_flight)
        finite = [s for s in sources if not s.live]
        groups = ([finite] if finite else []) + [[s] for s in sources if s.live]
        threads = [_SourceThread(g, out, self.reader_options, self.stop) for g in groups]
        for t in threads:
            t.start()
        return threads

    def _submit(self, batch: LineBatch) -> None:
        while len(self._in_flight) >= self.max_in_flight or self._held:
            self._collect(timeout_s=1.0)
            self._maybe_push_metrics(self._threads)  # held back for long: operators still see it
            if self._held and not self.cluster.dlq_full():
                log.warning("dead-letter queue below its limits again: reading resumes")
                self._held = False
                self._metrics.set("ais_dlq_full", 0)
        ticket = self.cluster.submit(batch)
        self._in_flight.append(ticket)
        self._batch_source[id(ticket)] = batch.source
        self._metrics.set("ais_batches_in_flight", len(self._in_flight))

    def _collect(self, timeout_s: float) -> None:
        if not self._in_flight:
            if timeout_s:
                time.sleep(min(timeout_s, 0.05))
            return
        for ticket, outcome in self.cluster.wait(self._in_flight, timeout_s):
            self._in_flight.remove(ticket)
            self.counts.update(outcome.counts)
            source = self._batch_source.pop(id(ticket), None)
            if source is not None:
                self._by_source.setdefault(source, Counter()).update(outcome.counts)
            for reason, line in outcome.rejected_examples.items():
                self._examples.setdefault(reason, line)
            if outcome.dlq_full and not self._held:
                log.warning("dead-letter queue over its limits: reading held back until it drains")
                self._held = True
                self._metrics.set("ais_dlq_full", 1)
        self._metrics.set("ais_batches_in_flight", len(self._in_flight))
        if self.on_progress is not None:
            self.on_progress(self.counts, len(self._in_flight))

    def _maybe_push_metrics(self, threads: list[_SourceThread]) -> None:
        if self.clock() - self._last_push >= self.metrics_interval_s:
            self._push_metrics(threads)

    def _push_metrics(self, threads: list[_SourceThread], *, final: bool = False) -> None:
        """Ship what changed since the last push: the readers' counts live in the reader
        threads until the end, so they are read here without waiting for the threads."""
        current = Counter(self.counts)
        if not final:
            for thread in threads:
                for reader in list(thread.readers):
                    current.update(dict(reader.counts))  # dict() copies atomically
        for key, (name, labels) in _DRIVER_METRICS.items():
            delta = current.get(key, 0) - self._pushed.get(key, 0)
            if delta > 0:
                self._metrics.inc(name, delta, **labels)
                self._pushed[key] = current.get(key, 0)
        self._metrics.set(
            "ais_active_connections", sum(1 for t in threads for s in t.sources if s.live and s.connected)
        )
        self._count_feeds(threads)
        shipment = self._metrics.drain()
        if shipment:
            self.cluster.push_metrics(shipment)
        self._last_push = self.clock()

    def _count_feeds(self, threads: list[_SourceThread]) -> None:
        """Each live feed's own metrics, labelled with its name: up, age of its last line,
        and its running totals (lines, messages, rejected lines, reconnects, silences, kernel
        drops), shipped as deltas like every counter."""
        now = time.monotonic()
        for thread in threads:
            for source, reader in zip(thread.sources, list(thread.readers), strict=False):
                stats: FeedStats | None = getattr(source, "stats", None)
                if stats is None:
                    continue
                name = source.name
                self._metrics.set("ais_source_up", int(source.connected), source=name)
                if stats.last_line_at is not None:
                    age = round(now - stats.last_line_at, 3)
                    self._metrics.set("ais_source_last_line_age_seconds", age, source=name)
                decoded = self._by_source.get(name, Counter())
                dropped = getattr(source, "dropped", None)
                totals = {
                    "ais_source_lines": stats.lines,
                    "ais_source_messages": decoded[acc.MESSAGES_DECODED],
                    "ais_source_rejected_lines": acc.rejected_total(dict(reader.counts)) + acc.rejected_total(decoded),
                    "ais_source_reconnects": stats.reconnects,
                    "ais_source_silences": stats.silences,
                    "ais_source_dropped": dropped() if dropped is not None else 0,
                }
                for metric, total in totals.items():
                    delta = total - self._pushed_by_source[(metric, name)]
                    if delta > 0:
                        self._metrics.inc(metric, delta, source=name)
                        self._pushed_by_source[(metric, name)] = total

    def _summary(self, elapsed_s: float, sources: list[SourceEnd]) -> IngestSummary:
        tally = self.cluster.dead_letter_tally(self.job_id)
        examples = {k: example_text(v) for k, v in self._examples.items()}
        finished_at = datetime.fromtimestamp(self.wall_clock(), UTC)
        return IngestSummary(
            self.job_id, self.counts, self.cluster.sinks, tally, examples, elapsed_s, sources,
            self._started_at, finished_at,
        )  # fmt: skip
