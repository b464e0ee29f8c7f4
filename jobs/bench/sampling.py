"""What the bench watches while a job runs: its memory, and its metrics endpoint.

Peak memory is the RSS summed over the job's whole process tree (driver, GCS, raylet, workers,
dashboard and agents) sampled every 0.2 s; pages shared between processes count once per
process, so the PSS sum (sampled every second) is reported beside it as what the machine
really gave.

Only this run's Ray processes are counted: they are found as the driver's descendants or by
this run's private RAY_TMPDIR (the marker), never by name alone, because on a shared machine
other sessions' Ray processes run as the same user.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psutil

RAY_PATTERNS = ("ray::", "raylet", "gcs_server")
SUMMARY_PATH = "/metrics/prometheus/summary"
PSS_EVERY = 5  # samples between PSS readings (PSS is costlier than RSS)
SERVICE_ACTORS = ("DeadLetterActor", "MetricsActor", "BreakerActor", "RetrySchedulerActor")


def role_of(cmdline: str, is_driver: bool) -> str:
    """The part of the job a process is, from its command line (Ray sets `ray::<what>`)."""
    if is_driver:
        return "driver"
    for role in ("gcs_server", "raylet"):
        if role in cmdline:
            return role
    if not cmdline.startswith("ray::"):
        return "other"  # dashboard, its agents, the log monitor
    if "WriterActor" in cmdline:
        return "writers"
    if any(actor in cmdline for actor in SERVICE_ACTORS):
        return "services"
    return "decode tasks"  # task workers: ray::decode_batch while busy, ray::IDLE between


WORKER_ROLES = frozenset({"writers", "services", "decode tasks"})


def _role(proc: psutil.Process, root_pid: int) -> str:
    """`role_of`, with every Ray worker process one role ("workers"), as the memory scenario
    reports them."""
    if proc.pid == root_pid:
        return "driver"
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    role = role_of(cmd, is_driver=False)
    return "workers" if role in WORKER_ROLES else role


class RssSampler(threading.Thread):
    """Peak RSS summed over a process, its descendants, and the Ray processes (ray::, raylet,
    gcs_server) that carry `marker` as their RAY_TMPDIR, i.e. belong to this run's cluster.

    The marker matters on a shared machine: other sessions' Ray processes run as the same
    user, and only this run's may be counted, or ended if they outlive their driver."""

    def __init__(self, pid: int, interval_s: float = 0.2, *, marker: str | None = None) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.marker = marker
        self.before = {p.pid for p in psutil.process_iter()}
        self.stop = threading.Event()
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self.peak_by_role: dict[str, int] = {}
        self.peak_processes = 0
        self.samples = 0
        self.seen: dict[int, psutil.Process] = {}
        self._foreign: set[int] = set()  # Ray processes of other clusters

    @property
    def foreign_count(self) -> int:
        """Ray processes of other clusters seen during the run: a sign the machine was shared."""
        return len(self._foreign)

    def ours(self, proc: psutil.Process) -> bool:
        """True for a process of this run's Ray cluster (by its RAY_TMPDIR)."""
        if self.marker is None:
            return False
        try:
            return proc.environ().get("RAY_TMPDIR") == self.marker
        except psutil.Error:
            return False

    def _processes(self) -> dict[int, psutil.Process]:
        procs = {self.root.pid: self.root}
        with suppress(psutil.Error):
            procs.update({p.pid: p for p in self.root.children(recursive=True)})
        if self.marker is None:
            return procs
        for p in psutil.process_iter(["cmdline"]):
            if p.pid in procs or p.pid in self.before or p.pid in self._foreign:
                continue
            if p.pid in self.seen:
                procs[p.pid] = self.seen[p.pid]
                continue
            cmd = " ".join(p.info["cmdline"] or ())
            if any(pattern in cmd for pattern in RAY_PATTERNS):
                if self.ours(p):
                    procs[p.pid] = p
                else:
                    self._foreign.add(p.pid)
        return procs

    def sample(self) -> None:
        total, by_role = 0, dict[str, int]()
        procs = self._processes()
        for proc in procs.values():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            role = _role(proc, self.root.pid)
            by_role[role] = by_role.get(role, 0) + rss
        self.seen.update(procs)
        self.samples += 1
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_by_role, self.peak_processes = total, by_role, len(procs)
        if self.samples % PSS_EVERY == 0:
            self.peak_pss_bytes = max(self.peak_pss_bytes, self._pss(procs))

    @staticmethod
    def _pss(procs: dict[int, psutil.Process]) -> int:
        """Proportional set size: shared pages split between the processes sharing them, so
        the sum is what the tree really occupies (reading smaps costs about 0.3 ms a process)."""
        total = 0
        for proc in procs.values():
            with suppress(psutil.Error):
                total += proc.memory_full_info().pss
        return total

    def run(self) -> None:
        # Until the child has exec'd, its memory is (a copy of) the bench's: don't count it.
        own = psutil.Process().cmdline()
        while not self.stop.is_set():
            with suppress(psutil.Error):
                if self.root.cmdline() != own:
                    break
            self.stop.wait(0.005)
        while not self.stop.is_set():
            with suppress(psutil.Error):
                self.sample()
            self.stop.wait(self.interval_s)

    def alive(self) -> list[psutil.Process]:
        """This run's Ray processes that still exist (there should be none after the job).
        The same Process objects as sampled, so a reused pid is never mistaken for one."""
        out = []
        for proc in self.seen.values():
            with suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and self.ours(proc):
                    out.append(proc)
        return out


def _http_get(url: str, timeout_s: float = 1.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _labelled(summary: dict[str, Any], name: str, **labels: str) -> float:
    entries = summary.get(name)
    if not isinstance(entries, list):
        return float(entries or 0.0) if not labels else 0.0
    return float(sum(e["value"] for e in entries if all(e.get(k) == v for k, v in labels.items())))


def extract(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics summary that a benchmark timeline keeps."""
    return {
        "messages": _labelled(summary, "ais_messages_processed"),
        "lines": _labelled(summary, "ais_lines_read"),
        "redis_written": _labelled(summary, "ais_sink_records", sink="redis", outcome="written"),
        "redis_dlq": _labelled(summary, "ais_sink_records", sink="redis", outcome="dlq"),
        "db_written": _labelled(summary, "ais_sink_records", sink="db", outcome="written"),
        "redis_breaker": _labelled(summary, "circuit_breaker_state", breaker="redis"),
        "dlq_size": _labelled(summary, "ais_dlq_size"),
        "in_flight": _labelled(summary, "ais_batches_in_flight"),
        "p50_ms": _labelled(summary, "ais_latency_p50_ms"),
        "p95_ms": _labelled(summary, "ais_latency_p95_ms"),
        "p99_ms": _labelled(summary, "ais_latency_p99_ms"),
    }


def histogram_percentiles(text: bytes) -> dict[str, float | None]:
    """Upper bucket bounds (ms) holding the 50th/95th/99th percentile of the whole run's
    ais_end_to_end_latency_seconds histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "ais_end_to_end_latency_seconds":
            buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        bound = next((le for le, n in buckets if total and n >= q * total), None)
        out[f"latency_hist_{name}_le_ms"] = None if bound is None else bound * 1000
    out["latency_hist_count"] = total
    return out


def warm_rate(timeline: list[dict[str, float]]) -> dict[str, float | None]:
    """The rate once the first messages are through (workers started and warm): from the first
    sample with messages to the first one with the final count. Metrics arrive about once a
    second, so on a short run this is coarse."""
    done = [p for p in timeline if p["messages"] > 0]
    if not done:
        return {"first_message_s": None, "warm_msgs_per_s": None}
    final = next(p for p in done if p["messages"] == done[-1]["messages"])
    span = final["t"] - done[0]["t"]
    rate = (final["messages"] - done[0]["messages"]) / span if span > 0 else None
    return {"first_message_s": done[0]["t"], "warm_msgs_per_s": None if rate is None else round(rate, 1)}


class MetricsPoller(threading.Thread):
    """Scrapes the job's metrics endpoint every `interval_s` seconds; keeps a timeline and the
    last answers (the job's final numbers, just before its endpoint goes away)."""

    def __init__(
        self,
        port: int,
        started: float,
        on_tick: Callable[[float, dict[str, float] | None], None] | None,
        interval_s: float = 0.5,
    ) -> None:
        super().__init__(name="metrics-poller", daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.started = started
        self.on_tick = on_tick
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.timeline: list[dict[str, float]] = []
        self.last_text: bytes | None = None
        self.first_answer_s: float | None = None

    def run(self) -> None:
        tick = 0
        while not self.stop.is_set():
            now = time.perf_counter() - self.started
            body = _http_get(self.base + SUMMARY_PATH)
            point = None
            if body is not None:
                if self.first_answer_s is None:
                    self.first_answer_s = now
                point = {"t": round(now, 2), **extract(json.loads(body))}
                self.timeline.append(point)
                if tick % 2 == 0:
                    self.last_text = _http_get(self.base + "/metrics/prometheus") or self.last_text
            if self.on_tick is not None:
                self.on_tick(now, point)
            tick += 1
            self.stop.wait(self.interval_s)


def steady_db_rate(timeline: list[dict[str, float]]) -> float | None:
    """Database rows written per second from the first written row to the last: the rate of
    a run without an outage, to hold the rate during one against (the bulkhead's measure)."""
    written = [p for p in timeline if p["db_written"] > 0]
    if len(written) < 2:
        return None
    final = next(p for p in written if p["db_written"] == written[-1]["db_written"])
    span = final["t"] - written[0]["t"]
    return round((final["db_written"] - written[0]["db_written"]) / span, 1) if span > 0 else None
