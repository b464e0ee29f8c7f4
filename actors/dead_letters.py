"""The dead-letter queue actor: one per cluster, on the head node, journaled to local disk."""

from __future__ import annotations

import threading
import time
from typing import Any

from actors.periodic import Every
from breakwater.accounting import DeadLetterTally
from breakwater.admin import journal_guard
from breakwater.dead_letters import DeadLetter, DeadLetterConfig, DeadLetterQueue, EnqueueResult, Failure
from breakwater.deployment import Deployment
from breakwater.journal import Snapshots
from breakwater.metrics import MetricsBuffer
from breakwater.retry import RetryPolicy


class DeadLetterActor:
    """Every method holds one lock: writers' enqueues, the drain and the stats publisher
    share one SQLite connection."""

    def __init__(
        self,
        config: DeadLetterConfig,
        policy: RetryPolicy,
        metrics: Any,
        publish_interval_s: float,
        deployment: Deployment,
    ) -> None:
        self.deployment = deployment
        self.queue = DeadLetterQueue(config, policy, destination=deployment.fingerprint)
        self.snapshots = Snapshots(config.path)
        self.metrics = metrics
        self.lock = threading.Lock()
        self.publisher = Every(publish_interval_s, self.publish, "dlq-stats")
        self.publisher.start()

    def path(self) -> str:
        return str(self.queue.config.path)

    def serves(self) -> Deployment:
        """The deployment whose records this queue holds: a job, the CLI or the retry job with
        other stores must not use it (actors.handles.Services checks)."""
        return self.deployment

    def configure(self, config: DeadLetterConfig, policy: RetryPolicy) -> None:
        """Limits, retention and retry policy of a newer job; the journal stays where it is."""
        with self.lock:
            self.queue.config = config.model_copy(update={"path": self.queue.config.path})
            self.queue.policy = policy

    def publish(self) -> None:
        if self.metrics is None:
            return
        with self.lock:
            stats = self.queue.stats()
            self.queue.purge_expired()
        buffer = MetricsBuffer()
        stats.publish(buffer, time.time())
        self.metrics.push(buffer.drain())

    # -- writers and drains --------------------------------------------------------------------

    def enqueue(self, sink: str, rows_by_kind: dict[str, list[Any]], **kw: Any) -> EnqueueResult:
        with self.lock:
            return self.queue.enqueue(sink, rows_by_kind, **kw)

    def is_full(self) -> bool:
        with self.lock:
            return self.queue.is_full()

    def sinks_waiting(self) -> list[str]:
        with self.lock:
            return self.queue.sinks_waiting()

    def due(
        self, sink: str, limit: int, force: bool = False, owner: str | None = None, lease_s: float = 300.0
    ) -> list[DeadLetter]:
        with self.lock:
            return self.queue.due(sink, limit, force=force, owner=owner, lease_s=lease_s)

    def resolve(self, letters: list[DeadLetter], written: int, duplicates: int, owner: str | None = None) -> int:
        with self.lock:
            return self.queue.resolve(letters, written=written, duplicates=duplicates, owner=owner)

    def fail(self, letters: list[DeadLetter], failure: Failure, owner: str | None = None) -> tuple[int, int]:
        with self.lock:
            return self.queue.fail(letters, failure, owner=owner)

    def park(self, letters: list[DeadLetter], until: float, owner: str | None = None) -> int:
        with self.lock:
            return self.queue.park(letters, until, owner=owner)

    def release(self, owner: str) -> int:
        with self.lock:
            return self.queue.release(owner)

    def job_tally(self, job_id: str) -> dict[str, DeadLetterTally]:
        with self.lock:
            return self.queue.job_tally(job_id)

    # -- operators -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return self.queue.stats().as_dict()

    def peek(self, n: int, sink: str | None, status: str) -> list[dict[str, Any]]:
        with self.lock:
            return [x.as_dict() for x in self.queue.peek(n, sink=sink, status=status)]

    def retry_now(self, sink: str | None) -> int:
        with self.lock:
            return self.queue.retry_now(sink)

    def admin(self, operation: str, token: str | None, requested_by: str, sink: str | None) -> int:
        """clear, clear_dead or redrive, after the admin token is checked."""
        if operation not in ("clear", "clear_dead", "redrive"):
            raise ValueError(f"unknown dead-letter operation {operation!r}")
        guard = journal_guard(self.snapshots)
        guard.check(token, f"dead-letter {operation}" + (f" of {sink}" if sink else ""), requested_by)
        with self.lock:
            return int(getattr(self.queue, operation)(sink))
