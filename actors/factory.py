"""Every actor option in one place: names, namespace, lifetime, restarts, CPUs, placement.

Named singletons (one per cluster, detached, found by name from any job, the client and the
CLI):

    breaker-<sink>     one per sink                      restarted; state from the journal
    dead-letters       on the head node (local journal)  restarted; queue from the journal
    metrics            on the head node (its endpoint)   restarted; totals from the journal
    retry-scheduler    drains the queue every interval   restarted

Writers belong to the ingest job that made them (`writer-<job>-<shard>`) and die with it.
They are spread over the cluster's nodes (`scheduling_strategy="SPREAD"`), and a writer whose
node is lost is restarted on another.
Every actor reserves `num_cpus=0`: they wait on I/O, and on a 2-CPU machine an actor that
held a CPU would starve the decode tasks. Actors that Ray restarts re-run their calls
(`max_task_retries=-1`), which is safe because every write is idempotent.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.breaker import BreakerActor
from actors.dead_letters import DeadLetterActor
from actors.metrics import MetricsActor
from actors.scheduler import RetrySchedulerActor
from actors.writer import WriterActor
from breakwater.config import Settings
from breakwater.deployment import Deployment

HEAD_NODE = {"node:__internal_head__": 0.001}
# Ray places an actor that requests no resource at all on a random node and ignores SPREAD
# for it (ray-project/ray#27577); a token memory reservation, far below a writer's working
# set and never a limit, puts writers under the spread policy.
WRITER_MEMORY_BYTES = 16 * 2**20
DEAD_LETTERS = "dead-letters"
METRICS = "metrics"
SCHEDULER = "retry-scheduler"


def breaker_name(sink: str) -> str:
    return f"breaker-{sink}"


def writer_name(job_id: str, shard: int) -> str:
    return f"writer-{job_id}-{shard}"


def _singleton(cls: type, name: str, settings: Settings, **options: Any) -> Any:
    return ray.remote(cls).options(
        name=name,
        namespace=settings.namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_task_retries=-1,
        **options,
    )


def metrics_actor(settings: Settings) -> Any:
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    return _singleton(MetricsActor, METRICS, settings, resources=HEAD_NODE).remote(
        settings.metrics_host, settings.metrics_port, token, settings.dlq.path
    )


def dead_letter_actor(settings: Settings, metrics: Any) -> Any:
    return _singleton(DeadLetterActor, DEAD_LETTERS, settings, resources=HEAD_NODE).remote(
        settings.dlq, settings.retry, metrics, settings.metrics_push_interval_s, Deployment.of(settings)
    )


def breaker_actor(settings: Settings, sink: str, metrics: Any) -> Any:
    return _singleton(BreakerActor, breaker_name(sink), settings, resources=HEAD_NODE).remote(
        sink, settings.breaker, settings.dlq.path, metrics
    )


def scheduler_actor(settings: Settings, breakers: dict[str, Any], dead_letters: Any, metrics: Any) -> Any:
    return _singleton(RetrySchedulerActor, SCHEDULER, settings, max_concurrency=4).remote(
        settings, breakers, dead_letters, metrics
    )


def writer_actor(
    settings: Settings, job_id: str, shard: int, breakers: dict[str, Any], dead_letters: Any, metrics: Any
) -> Any:
    return (
        ray.remote(WriterActor)
        .options(
            name=writer_name(job_id, shard),
            namespace=settings.namespace,
            num_cpus=0,
            memory=WRITER_MEMORY_BYTES,
            scheduling_strategy="SPREAD",
            max_concurrency=WriterActor.CONCURRENCY,
            max_restarts=-1,
            max_task_retries=-1,
        )
        .remote(settings, breakers, dead_letters, metrics)
    )


def find(name: str, namespace: str) -> Any | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
