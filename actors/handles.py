"""All of Breakwater's Ray calls are made here.

The plain classes talk to "links" (a breaker, the dead-letter queue, the metrics totals);
the handles below are those links over Ray actors, with the same method names as the plain
objects, so the plain code cannot tell them apart and tests can pass the plain objects.
`RayCluster` is the ingest loop's `Cluster`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import ray

from actors import factory
from actors.tasks import decode_batch, warm_up
from breakwater import accounting as acc
from breakwater.breaker import BreakerView, CallOutcome
from breakwater.config import Settings
from breakwater.dead_letters import DeadLetter, EnqueueResult, Failure
from breakwater.deployment import Deployment
from breakwater.errors import BreakwaterError, ClusterTimeout, ConfigError, NotRunningError, QueueUnavailable
from breakwater.framing import LineBatch
from breakwater.metrics import MetricDelta
from breakwater.pipeline import BatchOutcome
from breakwater.stores import sink_names

log = logging.getLogger("breakwater.handles")


DEFAULT_TIMEOUT_S = 60.0


def call(ref: Any, timeout_s: float = DEFAULT_TIMEOUT_S, what: str = "a Breakwater actor") -> Any:
    """ray.get with a timeout, and Breakwater's own errors raised as themselves (an admin
    token refused, a bad argument) instead of wrapped in Ray's task error."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as e:
        raise ClusterTimeout(f"{what} did not answer within {timeout_s:g} s (ray_timeout_s)") from e
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, BreakwaterError | ValueError):
            raise e.cause from None
        raise


def _slim(letters: list[DeadLetter]) -> list[DeadLetter]:
    return [replace(x, row=()) for x in letters]


class _ActorHandle:
    """An actor and the longest any call to it may take."""

    label = "a Breakwater actor"

    def __init__(self, actor: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.actor = actor
        self.timeout_s = timeout_s

    def _get(self, ref: Any) -> Any:
        return call(ref, self.timeout_s, self.label)


class BreakerHandle(_ActorHandle):
    label = "a breaker actor"

    def view(self) -> BreakerView:
        return self._get(self.actor.view.remote())  # type: ignore[no-any-return]

    def acquire_trial(self) -> tuple[bool, BreakerView]:
        return self._get(self.actor.acquire_trial.remote())  # type: ignore[no-any-return]

    def record(self, outcomes: list[CallOutcome]) -> BreakerView:
        return self._get(self.actor.record.remote(outcomes))  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self._get(self.actor.status.remote())  # type: ignore[no-any-return]


class DeadLetterHandle(_ActorHandle):
    label = "the dead-letters actor"

    def enqueue(self, sink: str, rows_by_kind: dict[str, list[Any]], **kw: Any) -> EnqueueResult:
        """QueueUnavailable when the actor does not answer in time or is gone for good; the
        writer tries again (the journal's unique key makes a repeat a duplicate)."""
        try:
            return self._get(self.actor.enqueue.remote(sink, rows_by_kind, **kw))  # type: ignore[no-any-return]
        except ClusterTimeout as e:
            raise QueueUnavailable(str(e)) from e
        except ray.exceptions.RayActorError as e:
            raise QueueUnavailable(f"the dead-letters actor is gone: {type(e).__name__}") from e

    def is_full(self) -> bool:
        return self._get(self.actor.is_full.remote())  # type: ignore[no-any-return]

    def sinks_waiting(self) -> list[str]:
        return self._get(self.actor.sinks_waiting.remote())  # type: ignore[no-any-return]

    def due(
        self, sink: str, limit: int, *, force: bool = False, owner: str | None = None, lease_s: float = 300.0
    ) -> list[DeadLetter]:
        return self._get(self.actor.due.remote(sink, limit, force, owner, lease_s))  # type: ignore[no-any-return]

    # Outcomes travel back without the records' rows: the queue needs ids, attempts, history.

    def resolve(self, letters: list[DeadLetter], *, written: int, duplicates: int, owner: str | None = None) -> int:
        return self._get(self.actor.resolve.remote(_slim(letters), written, duplicates, owner))  # type: ignore[no-any-return]

    def fail(self, letters: list[DeadLetter], failure: Failure, *, owner: str | None = None) -> tuple[int, int]:
        return self._get(self.actor.fail.remote(_slim(letters), failure, owner))  # type: ignore[no-any-return]

    def park(self, letters: list[DeadLetter], until: float, *, owner: str | None = None) -> int:
        return self._get(self.actor.park.remote(_slim(letters), until, owner))  # type: ignore[no-any-return]

    def release(self, owner: str) -> int:
        return self._get(self.actor.release.remote(owner))  # type: ignore[no-any-return]

    def job_tally(self, job_id: str) -> dict[str, acc.DeadLetterTally]:
        return self._get(self.actor.job_tally.remote(job_id))  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self._get(self.actor.stats.remote())  # type: ignore[no-any-return]

    def peek(self, n: int, sink: str | None = None, status: str = "waiting") -> list[dict[str, Any]]:
        return self._get(self.actor.peek.remote(n, sink, status))  # type: ignore[no-any-return]

    def retry_now(self, sink: str | None = None) -> int:
        return self._get(self.actor.retry_now.remote(sink))  # type: ignore[no-any-return]

    def admin(self, operation: str, token: str | None, requested_by: str, sink: str | None) -> int:
        return self._get(self.actor.admin.remote(operation, token, requested_by, sink))  # type: ignore[no-any-return]

    def path(self) -> str:
        return self._get(self.actor.path.remote())  # type: ignore[no-any-return]


class MetricsHandle(_ActorHandle):
    """Metric deltas go out without waiting: losing a second of counts to a crash is better
    than making every writer wait for the metrics actor."""

    label = "the metrics actor"

    def push(self, delta: MetricDelta) -> None:
        self.actor.apply.remote(delta)

    def summary(self) -> dict[str, Any]:
        return self._get(self.actor.summary.remote())  # type: ignore[no-any-return]

    def endpoint(self) -> dict[str, Any]:
        return self._get(self.actor.endpoint.remote())  # type: ignore[no-any-return]


def check_same_deployment(settings: Settings, serves: Deployment) -> None:
    """Refuse, naming the difference, to use actors that serve other stores than `settings`:
    their queue would write this deployment's records there, or theirs here."""
    here = Deployment.of(settings)
    differences = here.differences(serves)
    if differences:
        raise ConfigError(
            "BREAKWATER_NAMESPACE (--namespace)",
            f"the Breakwater actors in namespace {settings.namespace!r} serve deployment {serves.name!r} "
            f"with other stores ({'; '.join(differences)}): use its settings, or another namespace",
        )


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
        t = settings.ray_timeout_s
        metrics = MetricsHandle(factory.metrics_actor(settings), t)
        dead_letters = DeadLetterHandle(factory.dead_letter_actor(settings, metrics), t)
        breakers = {s: BreakerHandle(factory.breaker_actor(settings, s, metrics), t) for s in sink_names(settings)}
        services = cls(settings, metrics, dead_letters, breakers)
        if settings.scheduler if scheduler is None else scheduler:
            services.scheduler = factory.scheduler_actor(settings, breakers, dead_letters, metrics)
        refs = [metrics.actor.endpoint.remote(), dead_letters.actor.path.remote(), dead_letters.actor.serves.remote()]
        endpoint, journal, serves = call(refs, t, "start-up")
        check_same_deployment(settings, serves)
        if settings.metrics_port is not None and endpoint.get("error"):
            raise ConfigError("BREAKWATER_METRICS_PORT (--metrics-port)", endpoint["error"])
        if journal != str(settings.dlq.path):
            raise ConfigError(
                "BREAKWATER_DLQ__PATH (--dlq-path)",
                f"this cluster's dead-letter queue journals to {journal}, not {settings.dlq.path}",
            )
        call(
            [dead_letters.actor.configure.remote(settings.dlq, settings.retry)]
            + [handle.actor.configure.remote(settings.breaker) for handle in breakers.values()],
            t,
            "start-up",
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
        t = settings.ray_timeout_s
        check_same_deployment(settings, call(dlq.serves.remote(), t, "the dead-letters actor"))
        breakers = {}
        for sink in ("db", "redis"):
            actor = factory.find(factory.breaker_name(sink), ns)
            if actor is not None:
                breakers[sink] = BreakerHandle(actor, t)
        return cls(
            settings,
            MetricsHandle(metrics, t),
            DeadLetterHandle(dlq, t),
            breakers,
            factory.find(factory.SCHEDULER, ns),
        )

    def drain_now(self, *, force: bool = False, sink: str | None = None) -> dict[str, int]:
        if self.scheduler is None:
            raise NotRunningError("no retry scheduler runs on this cluster: use python -m jobs.retry_dlq")
        ref = self.scheduler.drain_now.remote(force, sink)
        return call(ref, self.settings.drain_timeout_s, "the retry scheduler's drain")  # type: ignore[no-any-return]


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
        refs = [w.__ray_ready__.remote() for w in self.writers] + [warm_up.remote() for _ in range(cpus)]
        call(refs, self.settings.ray_timeout_s, "warming up writers and decode workers")

    def submit(self, batch: LineBatch) -> _Ticket:
        n = len(self.writers)
        refs: Any = decode_batch.options(num_returns=n + 1, num_cpus=self.settings.decode_num_cpus).remote(
            batch, n, self.settings.strict_tag_blocks, self.settings.max_clock_skew_s
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
        (counts, examples), *reports = call(ticket.refs, self.settings.ray_timeout_s, "a finished batch")
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
        call([w.flush.remote() for w in self.writers], self.settings.ray_timeout_s, "flushing the writers")
        for w in self.writers:
            ray.kill(w, no_restart=True)
