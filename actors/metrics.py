"""The metrics actor: totals of the whole cluster, served to Prometheus two ways.

It applies the deltas every part ships (`apply`), serves `/metrics/prometheus` from its
own HTTP endpoint, and mirrors every number into `ray.util.metrics`, so they also appear
in Ray's per-node metrics export as `ray_<name>` (counters `ray_<name>_total`). Totals are
snapshotted to the journal every few seconds; an actor restarted by Ray restores them, so
counters do not fall back to zero mid-job.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import ray
from ray.util import metrics as ray_metrics

from actors.dashboards import install_dashboard
from actors.periodic import Every
from breakwater.journal import Snapshots
from breakwater.metrics import CATALOG, LATENCY_BUCKETS_S, Labels, MetricDelta, MetricsAggregator
from breakwater.metrics_http import MetricsServer

log = logging.getLogger("breakwater.actors.metrics")


class RayExport:
    """The catalog as `ray.util.metrics` objects. Counters are incremented by each delta's
    total (one call per name and label set, not per message); histograms observe one sample
    per batch."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}

    def _metric(self, name: str) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            d = CATALOG[name]
            cls = {"counter": ray_metrics.Counter, "gauge": ray_metrics.Gauge}.get(d.kind)
            if cls is not None:
                metric = cls(name, description=d.help, tag_keys=d.labels)
            else:
                metric = ray_metrics.Histogram(
                    name, description=d.help, boundaries=list(LATENCY_BUCKETS_S), tag_keys=d.labels
                )
            self._metrics[name] = metric
        return metric

    def apply(self, delta: MetricDelta, percentiles: dict[str, float]) -> None:
        for (name, labels), n in delta.counters.items():
            self._metric(name).inc(n, tags=_tags(labels))
        for (name, labels), value in delta.gauges.items():
            self._metric(name).set(value, tags=_tags(labels))
        for name, labels, _at, seconds, _weight in delta.observations:
            self._metric(name).observe(seconds, tags=_tags(labels))
        for name, value in percentiles.items():
            self._metric(name).set(value)


def _tags(labels: Labels) -> dict[str, str] | None:
    return dict(labels) or None


def _session_dir() -> Path:
    """This node's Ray session folder (a private attribute of the pinned Ray version)."""
    return Path(ray._private.worker._global_node.get_session_dir_path())  # type: ignore[attr-defined]


class MetricsActor:
    def __init__(self, host: str, port: int | None, token: str | None, journal_path: Path) -> None:
        self.aggregator = MetricsAggregator()
        self.snapshots = Snapshots(journal_path)
        self.lock = threading.Lock()
        with warnings.catch_warnings():  # Ray's own property warns about an API it uses inside
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted:
            saved = self.snapshots.load("metrics", "totals")
            if saved:
                self.aggregator.restore(saved)
                log.warning("metrics actor restarted: totals restored from the journal")
        self.export = RayExport()
        self.server: MetricsServer | None = None
        self.error: str | None = None
        if port is not None:
            try:
                instance = ray.get_runtime_context().get_worker_id()  # new for every restart
                self.server = MetricsServer(self.aggregator, host, port, token, instance).start()
            except OSError as e:
                self.error = f"cannot listen on {host}:{port}: {e.strerror}"
        self.saver = Every(5.0, self.save, "metrics-snapshot")
        self.saver.start()
        self.dashboard = install_dashboard(_session_dir())

    def save(self) -> None:
        self.snapshots.save("metrics", "totals", self.aggregator.snapshot())

    def endpoint(self) -> dict[str, Any]:
        """Where the endpoint listens, or why it does not."""
        context = ray.get_runtime_context()
        info = {"worker_id": context.get_worker_id(), "dashboard": str(self.dashboard) if self.dashboard else None}
        if self.server is None:
            return {**info, "error": self.error}
        host, port = self.server.address
        return {**info, "host": host, "port": port}

    def apply(self, delta: MetricDelta) -> None:
        with self.lock:
            self.aggregator.apply(delta)
            self.export.apply(delta, self.aggregator.percentiles())

    def summary(self) -> dict[str, Any]:
        return self.aggregator.summary()

    def counter(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.aggregator.counter(name, **(labels or {}))
