"""Metrics: counted locally, shipped as batched deltas, totalled in one aggregator.

Every part of the pipeline counts into a `MetricsBuffer` in its own process (a dict update,
well under a microsecond) and ships `drain()`ed deltas to the metrics actor about once a
second, never one Ray call per message. The actor's `MetricsAggregator` keeps the totals
and renders them for Prometheus (`collect`, through prometheus-client) and as JSON
(`summary`). `CATALOG` is the one list of what Breakwater exports; the Grafana dashboard and
the alert rules may only use names from it (a test checks).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[tuple[str, str], ...]

# Seconds: from about a millisecond to a minute, for end-to-end and per-sink write latency.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricDef:
    name: str  # as Prometheus sees it (counters without the _total suffix)
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


CATALOG: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef("ais_lines_read", "counter", "Input lines read, before any parsing."),
        MetricDef("ais_lines_rejected", "counter", "Input lines rejected, by reason.", ("reason",)),
        MetricDef("ais_messages_processed", "counter", "AIS messages decoded into reports."),
        MetricDef("ais_reports", "counter", "Normalized reports, by kind.", ("kind",)),
        MetricDef(
            "ais_sink_records",
            "counter",
            "Reports handed to a sink, by outcome (written, duplicates, dlq).",
            ("sink", "outcome"),
        ),
        MetricDef("ais_messages_failed_redis", "counter", "Reports Redis did not take (error or open breaker)."),
        MetricDef("ais_messages_failed_db", "counter", "Reports the database did not take (error or open breaker)."),
        MetricDef("ais_duplicates", "counter", "Reports that changed nothing: already stored.", ("sink",)),
        MetricDef(
            "ais_fused_copies",
            "counter",
            "Reports that were another receiver's copy of a stored report, stored as its receptions.",
            ("source",),
        ),
        MetricDef(
            "ais_flagged_reports",
            "counter",
            "Reports kept in history flagged implausible (moving no latest state), by reason.",
            ("reason",),
        ),
        MetricDef("ais_receiver_checks", "counter", "Plausibility checks of a receiver's reports.", ("receiver",)),
        MetricDef(
            "ais_receiver_failed_checks",
            "counter",
            "Plausibility checks a receiver's reports failed, by check.",
            ("receiver", "check"),
        ),
        MetricDef("ais_receiver_demotions", "counter", "Times a writer demoted a receiver.", ("receiver",)),
        MetricDef("ais_receiver_restorations", "counter", "Times a writer restored a receiver.", ("receiver",)),
        MetricDef("ais_dead_lettered", "counter", "Records moved to the dead-letter store.", ("sink",)),
        MetricDef(
            "ais_lane_diverted",
            "counter",
            "Records sent to the dead-letter queue because their sink's lane was stalled on a slow call.",
            ("sink",),
        ),
        MetricDef(
            "ais_dlq_unanswered",
            "counter",
            "Enqueues the dead-letter queue did not answer in time (the writer tried again).",
            ("sink",),
        ),
        MetricDef("ais_retries", "counter", "Dead-letter retries, by outcome.", ("sink", "outcome")),
        MetricDef("circuit_breaker_trips", "counter", "Times a breaker opened.", ("breaker",)),
        MetricDef("circuit_breaker_state", "gauge", "Breaker state: 0 closed, 1 half-open, 2 open.", ("breaker",)),
        MetricDef("ais_active_connections", "gauge", "Live feed connections currently open."),
        MetricDef("ais_source_up", "gauge", "A live feed: 1 while connected (TCP) or listening (UDP).", ("source",)),
        MetricDef("ais_source_last_line_age_seconds", "gauge", "Seconds since a live feed's last line.", ("source",)),
        MetricDef("ais_source_lines", "counter", "Lines a live feed delivered.", ("source",)),
        MetricDef("ais_source_messages", "counter", "AIS messages decoded from a live feed's lines.", ("source",)),
        MetricDef("ais_source_rejected_lines", "counter", "A live feed's lines rejected, all reasons.", ("source",)),
        MetricDef("ais_source_reconnects", "counter", "Connections a TCP feed opened after its first.", ("source",)),
        MetricDef(
            "ais_source_silences",
            "counter",
            "Connections dropped because the feed sent nothing for feed_silence_s.",
            ("source",),
        ),
        MetricDef(
            "ais_source_dropped", "counter", "Datagrams the kernel dropped for a UDP feed (buffer full).", ("source",)
        ),
        MetricDef("ais_batches_in_flight", "gauge", "Input batches submitted and not yet written."),
        MetricDef("ais_dlq_size", "gauge", "Records waiting in the dead-letter queue."),
        MetricDef("ais_dlq_bytes", "gauge", "Bytes of records waiting in the dead-letter queue."),
        MetricDef("ais_dlq_dead", "gauge", "Records in the dead-letter store, waiting for an operator."),
        MetricDef("ais_dlq_oldest_age_seconds", "gauge", "Age of the oldest record in the dead-letter queue."),
        MetricDef(
            "ais_dlq_full", "gauge", "1 while the dead-letter queue is over its limits and the reader is held back."
        ),
        MetricDef("ais_dlq_dead_expiring", "gauge", "Dead records the retention will purge within the warning window."),
        MetricDef("ais_latency_p50_ms", "gauge", "End-to-end latency, median over the last minute, ms."),
        MetricDef("ais_latency_p95_ms", "gauge", "End-to-end latency, 95th percentile over the last minute, ms."),
        MetricDef("ais_latency_p99_ms", "gauge", "End-to-end latency, 99th percentile over the last minute, ms."),
        MetricDef(
            "ais_end_to_end_latency_seconds",
            "histogram",
            "From read (or receive) time to written in every sink, per report.",
        ),
        MetricDef("ais_sink_write_seconds", "histogram", "Duration of one batch write, per sink.", ("sink",)),
        MetricDef("ais_last_ingest_timestamp_seconds", "gauge", "Unix time of the last batch written."),
    )
}

E2E_LATENCY = "ais_end_to_end_latency_seconds"
PERCENTILE_GAUGES = {"ais_latency_p50_ms": 0.50, "ais_latency_p95_ms": 0.95, "ais_latency_p99_ms": 0.99}
LATENCY_WINDOW_S = 60.0


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass
class HistogramState:
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(LATENCY_BUCKETS_S) + 1))
    total: float = 0.0
    count: float = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS_S, value)] += weight
        self.total += value * weight
        self.count += weight


Observation = tuple[str, Labels, float, float, float]  # (name, labels, at, seconds, weight)


@dataclass
class MetricDelta:
    """What one process counted since its last shipment. Observations stay raw (one per
    batch, weighted by its reports): the aggregator bins them, Ray's export observes them."""

    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    gauges: dict[tuple[str, Labels], float] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.counters or self.gauges or self.observations)


class MetricsBuffer:
    """Local counting; `drain()` hands over what was counted and starts afresh."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._delta = MetricDelta()
        self._lock = threading.Lock()  # a writer's sink lanes count from their own threads

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        if n:
            key = (name, _labels(labels))
            with self._lock:
                self._delta.counters[key] = self._delta.counters.get(key, 0) + n

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._delta.gauges[(name, _labels(labels))] = value

    def observe(self, name: str, seconds: float, weight: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._delta.observations.append((name, _labels(labels), self.clock(), seconds, weight))

    def drain(self) -> MetricDelta:
        with self._lock:
            delta, self._delta = self._delta, MetricDelta()
        return delta


class MetricsAggregator:
    """The totals of the whole cluster. Thread-safe: the HTTP endpoint reads while deltas
    arrive."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, Labels], float] = {}
        self.gauges: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], HistogramState] = {}
        self._latencies: deque[tuple[float, float, float]] = deque()

    def apply(self, delta: MetricDelta) -> None:
        with self._lock:
            for key, n in delta.counters.items():
                self.counters[key] = self.counters.get(key, 0) + n
            self.gauges.update(delta.gauges)
            for name, labels, at, seconds, weight in delta.observations:
                self.histograms.setdefault((name, labels), HistogramState()).observe(seconds, weight)
                if name == E2E_LATENCY:
                    self._latencies.append((at, seconds, weight))

    def counter(self, name: str, **labels: str) -> float:
        """One counter's total; with no labels given, the sum over all its label sets."""
        with self._lock:
            if labels:
                return self.counters.get((name, _labels(labels)), 0.0)
            return sum(v for (n, _), v in self.counters.items() if n == name)

    def percentiles(self) -> dict[str, float]:
        """Weighted latency percentiles (ms) over the last `LATENCY_WINDOW_S`."""
        with self._lock:
            horizon = self.clock() - LATENCY_WINDOW_S
            while self._latencies and self._latencies[0][0] < horizon:
                self._latencies.popleft()
            samples = sorted((s, w) for _, s, w in self._latencies)
        total = sum(w for _, w in samples)
        result = {}
        for name, q in PERCENTILE_GAUGES.items():
            if not total:
                result[name] = 0.0
                continue
            target, seen = q * total, 0.0
            for seconds, weight in samples:
                seen += weight
                if seen >= target:
                    result[name] = seconds * 1000
                    break
        return result

    # -- persistence across restarts of the owning actor ---------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": [[n, list(map(list, labels)), v] for (n, labels), v in self.counters.items()],
                "histograms": [
                    [n, list(map(list, labels)), h.buckets, h.total, h.count]
                    for (n, labels), h in self.histograms.items()
                ],
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Counters and histograms come back; gauges are re-reported by their owners."""
        with self._lock:
            for n, labels, v in snapshot.get("counters", []):
                self.counters[(n, tuple(tuple(x) for x in labels))] = v
            for n, labels, buckets, total, count in snapshot.get("histograms", []):
                self.histograms[(n, tuple(tuple(x) for x in labels))] = HistogramState(buckets, total, count)

    # -- rendering -----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """prometheus-client families for every metric in the catalog (a Collector's collect)."""
        gauges = dict(self.gauges)
        for name, value in self.percentiles().items():
            gauges[(name, ())] = value
        with self._lock:
            counters = dict(self.counters)
            histograms = {k: HistogramState(list(h.buckets), h.total, h.count) for k, h in self.histograms.items()}
        for definition in CATALOG.values():
            yield self._family(definition, counters, gauges, histograms)

    @staticmethod
    def _family(
        d: MetricDef,
        counters: dict[tuple[str, Labels], float],
        gauges: dict[tuple[str, Labels], float],
        histograms: dict[tuple[str, Labels], HistogramState],
    ) -> Metric:
        labels = list(d.labels)
        if d.kind == "counter":
            family: Metric = CounterMetricFamily(d.name, d.help, labels=labels)
            samples: dict[Any, Any] = counters
        elif d.kind == "gauge":
            family = GaugeMetricFamily(d.name, d.help, labels=labels)
            samples = gauges
        else:
            family = HistogramMetricFamily(d.name, d.help, labels=labels)
            samples = histograms
        if not d.labels and (d.name, ()) not in samples:
            samples = {**samples, (d.name, ()): HistogramState() if d.kind == "histogram" else 0.0}
        for (name, label_items), value in sorted(samples.items(), key=lambda kv: kv[0]):
            if name != d.name:
                continue
            values = [dict(label_items).get(label, "") for label in d.labels]
            if d.kind == "histogram":
                cumulative, buckets = 0.0, []
                for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), value.buckets, strict=True):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                family.add_metric(values, buckets, value.total)  # type: ignore[attr-defined]
            else:
                family.add_metric(values, value)  # type: ignore[attr-defined]
        return family

    def summary(self) -> dict[str, Any]:
        """The same numbers as JSON: {name: value} or {name: [{labels..., "value": v}]}."""
        out: dict[str, Any] = {}
        for family in self.collect():
            entries = [
                {**s.labels, "value": s.value} for s in family.samples if not s.name.endswith(("_bucket", "_created"))
            ]
            if len(entries) == 1 and set(entries[0]) == {"value"}:
                out[family.name] = entries[0]["value"]
            else:
                out[family.name] = entries
        return out
