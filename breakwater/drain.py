"""One drain of the dead-letter queue: write what is due, through the breakers, paced.

The retry job (`jobs/retry_dlq.py`) and the scheduler actor both run `drain`. For each sink
with waiting records it takes due records in chunks, writes them as batches through the
sink's gate, and tells the queue what happened:

- written (or found already there): the records leave the queue, credited to their job;
- the breaker is open: the rest of the sink's records are parked until the breaker hands out
  trial permits, without using up attempts;
- a transient failure: while the breaker still lets calls through, the chunk is halved to
  find the records that keep failing, so one bad record cannot hold back the others; the
  failing ones use up an attempt and, after `max_attempts`, move to the dead-letter store;
- a poison record: straight to the dead-letter store with its reason.

Chunks are grouped by job and source, so each job's conservation numbers stay exact. Every
drain takes its records on a lease (`owner`): two drains at once (the scheduler and a cron run)
never take the same record, and outcomes count only rows the drain still held, so a replayed
call changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from itertools import groupby
from typing import Protocol

from breakwater.breaker import BreakerState, counts_as_failure
from breakwater.dead_letters import DeadLetter, Failure
from breakwater.errors import PoisonRecord, StoreError
from breakwater.gate import SinkGate, Verdict
from breakwater.metrics import MetricsBuffer
from breakwater.reports import ReportBatch
from breakwater.retry import Pacer, RetryPolicy
from breakwater.stores.base import Sink

log = logging.getLogger("breakwater.drain")


class DrainQueue(Protocol):
    """What a drain needs of the dead-letter queue (the queue itself, or its actor)."""

    def sinks_waiting(self) -> list[str]: ...

    def due(
        self, sink: str, limit: int, *, force: bool = False, owner: str | None = None, lease_s: float = 300.0
    ) -> list[DeadLetter]: ...

    def resolve(self, letters: list[DeadLetter], *, written: int, duplicates: int, owner: str | None = None) -> int: ...

    def fail(self, letters: list[DeadLetter], failure: Failure, *, owner: str | None = None) -> tuple[int, int]: ...

    def park(self, letters: list[DeadLetter], until: float, *, owner: str | None = None) -> int: ...

    def release(self, owner: str) -> int: ...


def batch_of(letters: list[DeadLetter]) -> ReportBatch:
    """The letters' rows as one batch (all letters of one source)."""
    batch = ReportBatch(letters[0].source, min(x.read_ms for x in letters))
    for letter in letters:
        batch.rows(letter.kind).append(letter.row)
    return batch


class Drain:
    def __init__(
        self,
        queue: DrainQueue,
        sinks: dict[str, Sink],
        gates: dict[str, SinkGate],
        policy: RetryPolicy,
        *,
        metrics: MetricsBuffer | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        owner: str | None = None,
        lease_s: float = 300.0,
    ) -> None:
        self.owner = owner or f"drain-{uuid.uuid4().hex[:12]}"
        self.lease_s = lease_s
        self.queue = queue
        self.sinks = sinks
        self.gates = gates
        self.policy = policy
        self.metrics = metrics or MetricsBuffer()
        self.clock = clock
        self.sleep = sleep

    def run(self, *, force: bool = False, only_sink: str | None = None) -> Counter[str]:
        """Drain what is due (everything with `force`); returns counts by `<sink>.<outcome>`."""
        report: Counter[str] = Counter()
        try:
            for name in self.queue.sinks_waiting():
                if only_sink and name != only_sink:
                    continue
                if name not in self.sinks:
                    log.warning("dead letters for sink %r wait, but this job has no such sink configured", name)
                    continue
                self._drain_sink(name, force, report)
        finally:
            self.queue.release(self.owner)  # what it took and did not finish is anyone's again
        for gate in self.gates.values():
            gate.flush()
        return +report  # without the zero counts

    def _drain_sink(self, name: str, force: bool, report: Counter[str]) -> None:
        pacer = Pacer(self.policy.rate_per_s, sleep=self.sleep)
        seen: set[int] = set()
        while True:
            taken = self.queue.due(name, self.policy.chunk_records, force=force, owner=self.owner, lease_s=self.lease_s)
            letters = [x for x in taken if x.id not in seen]
            if not letters:
                return
            seen.update(x.id for x in letters)
            letters.sort(key=lambda x: (x.job_id, x.source))
            groups = [list(g) for _, g in groupby(letters, key=lambda x: (x.job_id, x.source))]
            for i, group in enumerate(groups):
                # Pace by the rows that reach the store: for latest state, a vessel's older
                # records are superseded by its newest and cost the store nothing.
                reaching, _superseded = self.sinks[name].prepare(batch_of(group))
                pacer.take(len(reaching))
                if not self._retry(name, group, report):
                    # _retry parked its own group; the groups after it are still held.
                    rest = [x for g in groups[i + 1 :] for x in g]
                    parked = self.queue.park(rest, self.gates[name].view.retry_at, owner=self.owner)
                    report[f"{name}.parked"] += parked
                    self.metrics.inc("ais_retries", parked, sink=name, outcome="parked")
                    return

    def _retry(self, name: str, letters: list[DeadLetter], report: Counter[str]) -> bool:
        """Write `letters`; False when the breaker turned them away (the drain stops)."""
        pending = [letters]
        while pending:
            chunk = pending.pop()
            decision = self.gates[name].decide()
            if decision.verdict == Verdict.DIVERT:
                held = [x for c in [chunk, *pending] for x in c]
                parked = self.queue.park(held, decision.view.retry_at, owner=self.owner)
                report[f"{name}.parked"] += parked
                self.metrics.inc("ais_retries", parked, sink=name, outcome="parked")
                return False
            started = time.perf_counter()
            try:
                result = self.sinks[name].write(batch_of(chunk))
            except StoreError as error:
                self.gates[name].record(
                    decision,
                    ok=not counts_as_failure(error),
                    duration_s=time.perf_counter() - started,
                    error=f"{type(error).__name__}: {error}",
                )
                if len(chunk) > 1 and self._worth_halving(name, error):
                    middle = len(chunk) // 2
                    pending.extend([chunk[:middle], chunk[middle:]])
                    continue
                self._failed(name, chunk, error, decision.view.state, report)
                continue
            self.gates[name].record(decision, ok=True, duration_s=time.perf_counter() - started)
            removed = self.queue.resolve(chunk, written=result.written, duplicates=result.duplicates, owner=self.owner)
            written = min(result.written, removed)  # as the queue credits them: only what left it
            report[f"{name}.written"] += written
            report[f"{name}.duplicates"] += removed - written
            self.metrics.inc("ais_retries", written, sink=name, outcome="written")
            self.metrics.inc("ais_retries", removed - written, sink=name, outcome="duplicates")
        return True

    def _worth_halving(self, name: str, error: StoreError) -> bool:
        """Halve a failed chunk to find its bad records while the sink itself looks healthy."""
        return isinstance(error, PoisonRecord) or self.gates[name].view.state == BreakerState.CLOSED

    def _failed(
        self, name: str, chunk: list[DeadLetter], error: StoreError, state: BreakerState, report: Counter[str]
    ) -> None:
        failure = Failure(type(error).__name__, str(error), state.name, self.clock(), error.transient)
        waiting, dead = self.queue.fail(chunk, failure, owner=self.owner)
        report[f"{name}.failed"] += waiting
        report[f"{name}.dead"] += dead
        self.metrics.inc("ais_retries", waiting, sink=name, outcome="failed")
        self.metrics.inc("ais_retries", dead, sink=name, outcome="dead")
        self.metrics.inc("ais_dead_lettered", dead, sink=name)
        if dead:
            log.warning("%d %s records moved to the dead-letter store: %s", dead, name, error)
