"""All of Breakwater's Ray calls are made here.

The plain classes talk to "links" (a breaker, the dead-letter queue, the metrics totals);
the handles below are those links over Ray actors, with the same method names as the plain
objects, so the plain code cannot tell them apart and tests can pass the plain objects.
`RayCluster` is the ingest loop's `Cluster`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import ray

from actors import factory
from actors.tasks import decode_batch, warm_up
from breakwater import accounting as acc
from breakwater.breaker import BreakerView, CallOutcome
from breakwater.config import Settings
from breakwater.dead_letters import DeadLetter, EnqueueResult, Failure
from breakwater.errors import BreakwaterError, ConfigError, NotRunningError
from breakwater.framing import LineBatch
from breakwater.metrics import MetricDelta
from breakwater.pipeline import BatchOutcome
from breakwater.stores import sink_names

log = logging.getLogger("breakwater.handles")


def init_ray(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), or start a local one.

    Token authentication stays on: RAY_AUTH_MODE defaults to "token" here, and a cluster
    started by this call writes its token where later clients find it."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver, "configure_logging": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=None, **kwargs)


def call(ref: Any) -> Any:
    """ray.get, with Breakwater's own errors raised as themselves (an admin token refused,
    a bad argument) instead of wrapped in Ray's task error."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, BreakwaterError | ValueError):
            raise e.cause from None
        raise


class BreakerHandle:
    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def view(self) -> BreakerView:
        return ray.get(self.actor.view.remote())  # type: ignore[no-any-return]

    def acquire_trial(self) -> tuple[bool, BreakerView]:
        return ray.get(self.actor.acquire_trial.remote())  # type: ignore[no-any-return]

    def record(self, outcomes: list[CallOutcome]) -> BreakerView:
        return ray.get(self.actor.record.remote(outcomes))  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return ray.get(self.actor.status.remote())  # type: ignore[no-any-return]


class DeadLetterHandle:
    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def enqueue(self, sink: str, rows_by_kind: dict[str, list[Any]], **kw: Any) -> EnqueueResult:
        return ray.get(self.actor.enqueue.remote(sink, rows_by_kind, **kw))  # type: ignore[no-any-return]

    def is_full(self) -> bool:
        return ray.get(self.actor.is_full.remote())  # type: ignore[no-any-return]

    def sinks_waiting(self) -> list[str]:
        return ray.get(self.actor.sinks_waiting.remote())  # type: ignore[no-any-return]

    def due(self, sink: str, limit: int, *, force: bool = False) -> list[DeadLetter]:
        return ray.get(self.actor.due.remote(sink, limit, force))  # type: ignore[no-any-return]

    def resolve(self, letters: list[DeadLetter], *, written: int, duplicates: int) -> None:
        ray.get(self.actor.resolve.remote(letters, written, duplicates))

    def fail(self, letters: list[DeadLetter], failure: Failure) -> tuple[int, int]:
        return ray.get(self.actor.fail.remote(letters, failure))  # type: ignore[no-any-return]

    def park(self, letters: list[DeadLetter], until: float) -> None:
        ray.get(self.actor.park.remote(letters, until))

    def job_tally(self, job_id: str) -> dict[str, acc.DeadLetterTally]:
        return ray.get(self.actor.job_tally.remote(job_id))  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return ray.get(self.actor.stats.remote())  # type: ignore[no-any-return]

    def peek(self, n: int, sink: str | None = None, status: str = "waiting") -> list[dict[str, Any]]:
        return ray.get(self.actor.peek.remote(n, sink, status))  # type: ignore[no-any-return]

    def retry_now(self, sink: str | None = None) -> int:
        return ray.get(self.actor.retry_now.remote(sink))  # type: ignore[no-any-return]

    def admin(self, operation: str, token: str | None, requested_by: str, sink: str | None) -> int:
        return call(self.actor.admin.remote(operation, token, requested_by, sink))  # type: ignore[no-any-return]

    def path(self) -> str:
        return ray.get(self.actor.path.remote())  # type: ignore[no-any-return]


class MetricsHandle:
    """Metric deltas go out without waiting: losing a second of counts to a crash is better
    than making every writer wait for the metrics actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def push(self, delta: MetricDelta) -> None:
        self.actor.apply.remote(delta)

    def summary(self) -> dict[str, Any]:
        return ray.get(self.actor.summary.remote())  # type: ignore[no-any-return]

    def endpoint(self) -> dict[str, Any]:
        return ray.get(self.actor.endpoint.remote())  # type: ignore[no-any-return]


@dataclass
class Services:
    """The cluster's named singletons, created on first use and found by name afterwards."""

    settings: Settings
    metrics: MetricsHandle
    dead_letters: DeadLetterHandle
    breakers: dict[str, BreakerHandle]
    scheduler: Any | None = None

    @classmethod
    def start(cls, settings: Settings, *, scheduler: bool | None = None) -> Services:
        """Create (or find) every singleton at once, then check the two that a setting of
        this job could contradict: the endpoint's port and the journal's path."""
        metrics = MetricsHandle(factory.metrics_actor(settings))
        dead_letters = DeadLetterHandle(factory.dead_letter_actor(settings, metrics))
        breakers = {s: BreakerHandle(factory.breaker_actor(settings, s, metrics)) for s in sink_names(settings)}
        services = cls(settings, metrics, dead_letters, breakers)
        if settings.scheduler if scheduler is None else scheduler:
            services.scheduler = factory.scheduler_actor(settings, breakers, dead_letters, metrics)
        endpoint, journal = ray.get([metrics.actor.endpoint.remote(), dead_letters.actor.path.remote()])
        if settings.metrics_port is not None and endpoint.get("error"):
            raise ConfigError("BREAKWATER_METRICS_PORT (--metrics-port)", endpoint["error"])
        if journal != str(settings.dlq.path):
            raise ConfigError(
                "BREAKWATER_DLQ__PATH (--dlq-path)",
                f"this cluster's dead-letter queue journals to {journal}, not {settings.dlq.path}",
            )
        ray.get(
            [dead_letters.actor.configure.remote(settings.dlq, settings.retry)]
            + [handle.actor.configure.remote(settings.breaker) for handle in breakers.values()]
        )
        return services

    @classmethod
    def find(cls, settings: Settings) -> Services:
        """The singletons of a running cluster; NotRunningError if there are none."""
        ns = settings.namespace
        dlq = factory.find(factory.DEAD_LETTERS, ns)
        metrics = factory.find(factory.METRICS, ns)
        if dlq is None or metrics is None:
            raise NotRunningError(f"no Breakwater actors in namespace {ns!r} on this Ray cluster")
        breakers = {}
        for sink in ("db", "redis"):
            actor = factory.find(factory.breaker_name(sink), ns)
            if actor is not None:
                breakers[sink] = BreakerHandle(actor)
        return cls(
            settings, MetricsHandle(metrics), DeadLetterHandle(dlq), breakers, factory.find(factory.SCHEDULER, ns)
        )

    def drain_now(self, *, force: bool = False, sink: str | None = None) -> dict[str, int]:
        if self.scheduler is None:
            raise NotRunningError("no retry scheduler runs on this cluster: use python -m jobs.retry_dlq")
        return ray.get(self.scheduler.drain_now.remote(force, sink))  # type: ignore[no-any-return]


@dataclass
class _Ticket:
    counts: Any
    writes: list[Any]

    @property
    def refs(self) -> list[Any]:
        return [self.counts, *self.writes]


class RayCluster:
    """Decode tasks fan out over the cluster; each shard's reports go straight from the
    task's object to its writer, never through the driver, which only receives counts."""

    def __init__(self, services: Services, job_id: str) -> None:
        self.services = services
        self.settings = services.settings
        self.job_id = job_id
        self.sinks = sink_names(self.settings)
        self.writers = [
            factory.writer_actor(self.settings, job_id, i, services.breakers, services.dead_letters, services.metrics)
            for i in range(self.settings.writers)
        ]

    def warm_up(self) -> None:
        """Start what the first batch would otherwise wait for: every writer (its store
        connections) and a decode worker per CPU with its modules imported. The job's clock
        starts after this, so the summary's rate is the pipeline's, not Ray's start-up."""
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1) // self.settings.decode_num_cpus))  # type: ignore[no-untyped-call]
        ray.get([w.__ray_ready__.remote() for w in self.writers] + [warm_up.remote() for _ in range(cpus)])

    def submit(self, batch: LineBatch) -> _Ticket:
        n = len(self.writers)
        refs: Any = decode_batch.options(num_returns=n + 1, num_cpus=self.settings.decode_num_cpus).remote(
            batch, n, self.settings.strict_tag_blocks
        )
        batch_id = f"{self.job_id}:{batch.source}:{batch.seq}"
        writes = [w.write.remote(refs[i + 1], batch_id, self.job_id) for i, w in enumerate(self.writers)]
        return _Ticket(refs[0], writes)

    def wait(self, tickets: list[_Ticket], timeout_s: float) -> list[tuple[_Ticket, BatchOutcome]]:
        if not tickets:
            return []
        oldest = tickets[0].refs
        ray.wait(oldest, num_returns=len(oldest), timeout=timeout_s, fetch_local=False)
        finished = []
        for ticket in tickets:
            ready, _ = ray.wait(ticket.refs, num_returns=len(ticket.refs), timeout=0, fetch_local=False)
            if len(ready) == len(ticket.refs):
                finished.append((ticket, self._outcome(ticket)))
        return finished

    def _outcome(self, ticket: _Ticket) -> BatchOutcome:
        (counts, examples), *reports = ray.get(ticket.refs)
        total: Counter[str] = Counter(counts)
        full = False
        for report in reports:
            total.update(report.counts)
            full = full or report.dlq_full
        return BatchOutcome(total, full, examples)

    def dlq_full(self) -> bool:
        return self.services.dead_letters.is_full()

    def push_metrics(self, delta: MetricDelta) -> None:
        self.services.metrics.push(delta)

    def dead_letter_tally(self, job_id: str) -> dict[str, acc.DeadLetterTally]:
        return self.services.dead_letters.job_tally(job_id)

    def close(self) -> None:
        """Flush the writers' last breaker reports and metrics, then let them go."""
        ray.get([w.flush.remote() for w in self.writers])
        for w in self.writers:
            ray.kill(w, no_restart=True)
