"""Fakes for unit tests of plain logic: a sink that fails on demand, a link that counts calls,
a source that fails or is stopped part way."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from breakwater.breaker import BreakerView, CallOutcome, CircuitBreaker
from breakwater.errors import PoisonRecord, SourceError, StoreUnavailable
from breakwater.reports import ReportBatch, row_key
from breakwater.stores.base import WriteResult


class MemorySink:
    """An idempotent store in a dict. `down` makes every write fail as a dead server would;
    `poison` names MMSIs it refuses as bad data; `flaky` MMSIs fail transiently forever."""

    def __init__(self, name: str = "db", kinds: frozenset[str] = frozenset({"position", "static", "other"})) -> None:
        self.name = name
        self.kinds = kinds
        self.rows: dict[tuple[int, int, int], tuple[Any, ...]] = {}
        self.receptions: set[tuple[Any, ...]] = set()  # kept when "reception" is in kinds
        self.down = False
        self.poison: set[int] = set()
        self.flaky: set[int] = set()
        self.calls = 0

    def prepare(self, batch: ReportBatch) -> tuple[ReportBatch, int]:
        return batch, 0

    def write(self, batch: ReportBatch) -> WriteResult:
        self.calls += 1
        if self.down:
            raise StoreUnavailable(self.name, "connection refused")
        rows = [*batch.positions, *batch.statics, *batch.others]
        if any(r[0] in self.poison for r in rows):
            raise PoisonRecord(self.name, "value out of range")
        if any(r[0] in self.flaky for r in rows):
            raise StoreUnavailable(self.name, "statement timeout")
        written = 0
        for row in rows:
            if row_key(row) not in self.rows:
                self.rows[row_key(row)] = row
                written += 1
        for reception in batch.receptions:
            if reception[:5] not in {r[:5] for r in self.receptions}:
                self.receptions.add(reception)
                written += 1
        return WriteResult(written, len(rows) + len(batch.receptions) - written)

    def close(self) -> None:
        pass


class ListSource:
    """A finite source of the given lines. After them it raises SourceError with `fail`, as
    an I/O error would; or after `stop_after` lines it sets the job's stop event, as SIGTERM
    does, and ends, as a source watching that event does."""

    live = False
    connected = False
    stamp = None

    def __init__(
        self, name: str, lines: list[bytes], *, fail: str | None = None, stop_after: int | None = None
    ) -> None:
        self.name = name
        self._lines = lines
        self.fail = fail
        self.stop_after = stop_after
        self.yielded = 0

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        for line in self._lines:
            if self.yielded == self.stop_after:
                stop.set()
                return
            self.yielded += 1
            yield line
        if self.fail is not None:
            raise SourceError(f"{self.name}: not read to its end: {self.fail}")


class CountingLink:
    """A breaker reached in-process, counting the calls a remote link would make."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.calls: dict[str, int] = {"view": 0, "acquire_trial": 0, "record": 0}

    def view(self) -> BreakerView:
        self.calls["view"] += 1
        return self.breaker.view()

    def acquire_trial(self) -> tuple[bool, BreakerView]:
        self.calls["acquire_trial"] += 1
        return self.breaker.acquire_trial()

    def record(self, outcomes: list[CallOutcome]) -> BreakerView:
        self.calls["record"] += 1
        return self.breaker.record(outcomes)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def position(mmsi: int, received_ms: int, digest: int = 1, lat: float = 59.0, lon: float = 10.0) -> tuple[Any, ...]:
    return (mmsi, received_ms, digest, 1, lat, lon, 5.0, 90.0, 90, 0, 0.0, None, "tag_block", None)


def batch_of(rows: list[tuple[Any, ...]], source: str = "test", read_ms: int = 1_000_000_000) -> ReportBatch:
    return ReportBatch(source, read_ms, positions=list(rows))


NoSleep = Callable[[float], None]


class InProcessCluster:
    """The ingest loop's Cluster, in this process: the real decoder and shard writers, run
    synchronously. What Ray adds (fan-out, addresses) is proven by the integration tests."""

    def __init__(self, writers: list[Any], dead_letters: Any, job_id: str, n_shards: int | None = None) -> None:
        from breakwater.decode import BatchDecoder

        self.writers = writers
        self.dead_letters = dead_letters
        self.job_id = job_id
        self.decoder = BatchDecoder(n_shards or len(writers))
        self.sinks = sorted({s.name for w in writers for s in w.sinks})
        self.metrics: list[Any] = []

    def submit(self, batch: Any) -> Any:
        from collections import Counter

        from breakwater.pipeline import BatchOutcome

        decoded = self.decoder.decode(batch)
        counts: Counter[str] = Counter(decoded.counts)
        full = False
        for writer, shard in zip(self.writers, decoded.shards, strict=True):
            report = writer.write(shard, f"{self.job_id}:{batch.source}:{batch.seq}")
            counts.update(report.counts)
            full = full or report.dlq_full
        return BatchOutcome(counts, full, decoded.rejected_examples)

    def wait(self, tickets: list[Any], timeout_s: float) -> list[tuple[Any, Any]]:
        return [(t, t) for t in tickets]

    def dlq_full(self) -> bool:
        return bool(self.dead_letters.is_full())

    def push_metrics(self, delta: Any) -> None:
        self.metrics.append(delta)

    def dead_letter_tally(self, job_id: str) -> Any:
        return self.dead_letters.job_tally(job_id)
