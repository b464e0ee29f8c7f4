"""The benchmark harness: `python -m jobs.bench --lines 200000 --json bench.json`.

Scenarios (`--scenario`, default throughput; `all` runs the three in turn):

    throughput  the same corpus through (1) pyais decode only, one process, the ceiling of one
                core; (2) the plain script (jobs/plain_script.py: pyais, a Redis pipeline and a
                PostgreSQL COPY, no resilience); (3) Breakwater's ingest job with both sinks,
                breakers, dead-letter queue and metrics, run as `python -m jobs.ingest`
    memory      Breakwater on N lines and on 10 x N lines: peak RSS of each and their ratio
    outage      Breakwater with Redis reached through a fault proxy that resets every
                connection for a few seconds mid-run; throughput before, during and after,
                the dead-letter queue left, and how long `jobs.retry_dlq --force` takes to drain it

Every measurement gets a fresh, empty scratch database (`bw_bench_<run>_<label>`, created on the
server of `--database-url` and dropped at the end) and a fresh Redis key prefix (deleted at the
end), so none pays for another's rows. The corpus is made by `breakwater.corpus` from the real
captures. `--repeat N` runs the throughput scenario N times and reports medians: the machine
may be shared, and each run records the load average and any other Ray cluster it saw.

Breakwater's rate is `messages_decoded / elapsed_s` of the job's summary, which leaves out
Ray's start-up but not the first decode tasks waiting for their worker processes; the "warm"
rate (from the metrics timeline, first messages to last) leaves that out too, and the wall time
of the whole command includes everything. Peak memory is the RSS summed over the job's whole
process tree (driver, GCS, raylet, workers, dashboard and agents) sampled every 0.2 s; pages
shared between processes count once per process, so the PSS sum (sampled every second) is
reported beside it as what the machine really gave.

Only this run's Ray processes are counted, or ended if they outlive their driver: they are
found as the driver's descendants or by this run's private RAY_TMPDIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BREAKWATER_BENCH_DATA", ROOT.parent / "shared" / "data"))
CAPTURES = ("kystverket-2019-tagblock.nmea", "amsa-mixed.nmea.gz")
RAY_PATTERNS = ("ray::", "raylet", "gcs_server")
SUMMARY_PATH = "/metrics/prometheus/summary"
MEMORY_TARGET_RATIO = 1.5
PSS_EVERY = 5  # samples between PSS readings (PSS is costlier than RSS)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- scratch stores ----------------------------------------------------------------------------


class Scratch:
    """Fresh databases and Redis prefixes for one bench run, all removed by `close`."""

    def __init__(self, database_url: str, redis_url: str, *, keep: bool = False) -> None:
        for url in (database_url, redis_url):
            if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
                raise SystemExit(f"jobs.bench only talks to 127.0.0.1, not {urlsplit(url).hostname}")
        self.admin_url = database_url
        self.redis_url = redis_url
        self.run_id = secrets.token_hex(3)
        self.keep = keep
        self.databases: list[str] = []
        self.prefixes: list[str] = []

    def database(self, label: str) -> str:
        import psycopg

        name = f"bw_bench_{self.run_id}_{label}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return urlsplit(self.admin_url)._replace(path=f"/{name}").geturl()

    def prefix(self, label: str) -> str:
        prefix = f"bench{self.run_id}{label}:"
        self.prefixes.append(prefix)
        return prefix

    def contents(self, database_url: str, prefix: str) -> dict[str, Any]:
        """Rows per table and keys under the prefix: what a run left in the stores."""
        import psycopg
        import redis

        with psycopg.connect(database_url) as conn:
            tables = [
                r[0]
                for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY tablename")
            ]
            rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]
        client = redis.Redis.from_url(self.redis_url)
        keys = vessels = geo = 0
        for key in client.scan_iter(match=f"{prefix}*", count=2000):
            keys += 1
            if b":vessel:" in key:
                vessels += 1
            elif key.endswith(b":geo"):
                geo += int(client.zcard(key))
        client.close()
        return {"sql_rows": rows, "redis_keys": keys, "redis_vessel_keys": vessels, "redis_geo_members": geo}

    def close(self) -> None:
        if self.keep:
            log(f"kept scratch databases {self.databases} and Redis prefixes {self.prefixes}")
            return
        import psycopg
        import redis

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(self.redis_url)
        for prefix in self.prefixes:
            batch = []
            for key in client.scan_iter(match=f"{prefix}*", count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
        client.close()


# -- sampling while a process runs -------------------------------------------------------------


def _role(proc: psutil.Process, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "driver"
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    for role in ("gcs_server", "raylet"):
        if role in cmd:
            return role
    return "workers" if cmd.startswith("ray::") else "other"


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


# -- the three contenders ----------------------------------------------------------------------


def _env(tmp: Path) -> dict[str, str]:
    # Token auth as everywhere; no usage-stats upload (only 127.0.0.1); Ray's session files in
    # the bench's own temp dir, so no other cluster on this machine is joined or disturbed.
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": str(tmp / "ray"),
        "PYTHONPATH": str(ROOT),
    }


def run_plain(
    corpus: Path,
    tmp: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    prefix: str = "",
    timeout_s: float,
) -> dict[str, Any]:
    """jobs/plain_script.py in its own process; decode only when no stores are given."""
    cmd = [sys.executable, "-m", "jobs.plain_script", str(corpus)]
    if database_url and redis_url:
        cmd += ["--database-url", database_url, "--redis-url", redis_url, "--redis-prefix", prefix]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = RssSampler(proc.pid, 0.2)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        sampler.stop.set()
        sampler.join()
        if proc.poll() is None:
            proc.kill()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"exit_code": proc.returncode, "wall_s": round(wall, 3), "stderr_tail": err.decode()[-3000:]}
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result.update(
        exit_code=0,
        wall_s=round(wall, 3),
        sampled_peak_rss_bytes=sampler.peak_bytes,
        load_average_before=load_before,
    )
    return result


def run_breakwater(
    corpus: Path,
    tmp: Path,
    label: str,
    *,
    database_url: str,
    redis_url: str,
    prefix: str,
    extra: list[str],
    timeout_s: float,
    on_tick: Callable[[float, dict[str, float] | None], None] | None = None,
) -> dict[str, Any]:
    """`python -m jobs.ingest` with both sinks, a private DLQ journal and a metrics port."""
    port = free_port()
    summary_path = tmp / f"summary-{label}.json"
    dlq_path = tmp / f"dlq-{label}.sqlite3"
    cmd = [
        sys.executable,
        "-m",
        "jobs.ingest",
        str(corpus),
        "--database-url",
        database_url,
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
        "--metrics-port",
        str(port),
        "--dlq-path",
        str(dlq_path),
        "--summary-json",
        str(summary_path),
        "--no-progress",
        "--job-id",
        f"bench-{label}",
        *extra,
    ]
    stdout_path, stderr_path = tmp / f"ingest-{label}.out", tmp / f"ingest-{label}.err"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp), stdout=out, stderr=err)
        sampler = RssSampler(proc.pid, marker=_env(tmp)["RAY_TMPDIR"])
        poller = MetricsPoller(port, started, on_tick)
        sampler.start()
        poller.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except BaseException:
            proc.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            raise
        finally:
            wall = time.perf_counter() - started
            sampler.stop.set()
            poller.stop.set()
            sampler.join()
            poller.join()
            if proc.poll() is None:
                proc.kill()
            leftovers = _reap(sampler)
    result: dict[str, Any] = {
        "exit_code": code,
        "wall_s": round(wall, 3),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "other_ray_processes_seen": len(sampler._foreign),
        "peak_rss_bytes": sampler.peak_bytes,
        "peak_pss_bytes": sampler.peak_pss_bytes,
        "peak_rss_by_role": sampler.peak_by_role,
        "peak_processes": sampler.peak_processes,
        "rss_samples": sampler.samples,
        "metrics_first_answer_s": poller.first_answer_s,
        "leftover_processes": leftovers,
        "dlq_path": str(dlq_path),
        "redis_url": redis_url,
        "database_url": database_url,
        "prefix": prefix,
        "timeline": poller.timeline,
    }
    if code != 0 or not summary_path.exists():
        result["stderr_tail"] = stderr_path.read_text(errors="replace")[-4000:]
        result["stdout_tail"] = stdout_path.read_text(errors="replace")[-2000:]
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        summary.pop("rejected_examples", None)
        elapsed = summary.get("elapsed_s") or 0.0
        result.update(
            summary=summary,
            elapsed_s=elapsed,
            messages_decoded=summary["messages_decoded"],
            lines_read=summary["lines"]["read"],
            msgs_per_s=round(summary["messages_decoded"] / elapsed, 1) if elapsed else 0.0,
            wall_msgs_per_s=round(summary["messages_decoded"] / wall, 1) if wall else 0.0,
            startup_and_shutdown_s=round(wall - elapsed, 3),
        )
    result.update(warm_rate(poller.timeline))
    last = poller.timeline[-1] if poller.timeline else {}
    result.update({f"latency_{q}_ms": _round(last.get(f"{q}_ms")) for q in ("p50", "p95", "p99")})
    if poller.last_text:
        result.update(histogram_percentiles(poller.last_text))
    return result


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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _reap(sampler: RssSampler) -> list[str]:
    """Ray processes of this run still alive after its driver exited: wait for them a little,
    then end them. Only processes with this run's RAY_TMPDIR are touched."""
    deadline = time.monotonic() + 15
    alive = sampler.alive()
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = sampler.alive()
    names = []
    for p in alive:
        with suppress(psutil.Error):
            names.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
            p.kill()
    return names


# -- scenarios ---------------------------------------------------------------------------------


def make_corpus(lines: int, tmp: Path) -> tuple[Path, dict[str, Any]]:
    from breakwater.corpus import build_corpus

    started = time.perf_counter()
    info = build_corpus([DATA / c for c in CAPTURES], lines, tmp / f"corpus-{lines}.nmea")
    log(
        f"corpus of {lines:,} lines ({info.bytes / 1e6:.1f} MB, {info.replays} replays) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return Path(info.path), info.as_dict()  # type: ignore[arg-type]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    middle = statistics.median(present)
    return round(middle, 1) if isinstance(middle, float) else middle


def _throughput_round(ctx: Context, corpus: Path, r: int) -> dict[str, dict[str, Any]]:
    """One run of each contender, each on fresh scratch stores."""
    log(f"round {r + 1}: decode only (pyais, one process)")
    decode = run_plain(corpus, ctx.tmp, timeout_s=ctx.timeout_s)
    log(f"  {decode.get('msgs_per_s')} msg/s")
    log(f"round {r + 1}: plain script (pyais + Redis pipeline + PostgreSQL COPY, one process)")
    db, prefix = ctx.scratch.database(f"plain{r}"), ctx.scratch.prefix(f"plain{r}")
    plain = run_plain(
        corpus,
        ctx.tmp,
        database_url=db,
        redis_url=ctx.scratch.redis_url,
        prefix=prefix,
        timeout_s=ctx.timeout_s,
    )
    plain["stores"] = ctx.scratch.contents(db, prefix)
    log(f"  {plain.get('msgs_per_s')} msg/s")
    log(f"round {r + 1}: Breakwater ingest job (Ray, both sinks, breakers, DLQ, metrics)")
    db, prefix = ctx.scratch.database(f"bw{r}"), ctx.scratch.prefix(f"bw{r}")
    bw = run_breakwater(
        corpus,
        ctx.tmp,
        f"throughput{r}",
        database_url=db,
        redis_url=ctx.scratch.redis_url,
        prefix=prefix,
        extra=ctx.ingest_args,
        timeout_s=ctx.timeout_s,
    )
    bw["stores"] = ctx.scratch.contents(db, prefix)
    log(f"  exit {bw['exit_code']}, {bw.get('msgs_per_s')} msg/s steady, wall {bw['wall_s']} s")
    ctx.reference_stores = ctx.reference_stores or bw["stores"]
    return {"decode_only": decode, "plain_script": plain, "breakwater": bw}


def scenario_throughput(ctx: Context, corpus: Path, corpus_info: dict[str, Any]) -> dict[str, Any]:
    """The three contenders, `ctx.repeat` rounds; the headline numbers are medians."""
    rounds = [_throughput_round(ctx, corpus, r) for r in range(ctx.repeat)]

    def med(run: str, key: str) -> Any:
        return _median([x[run].get(key) for x in rounds])

    decode, plain, bw = (med(run, "msgs_per_s") for run in ("decode_only", "plain_script", "breakwater"))
    return {
        "corpus": corpus_info,
        "rounds": ctx.repeat,
        "decode_only_msgs_per_s": decode,
        "decode_only_messages": med("decode_only", "messages"),
        "plain_script_msgs_per_s": plain,
        "breakwater_msgs_per_s": bw,
        "breakwater_warm_msgs_per_s": med("breakwater", "warm_msgs_per_s"),
        "breakwater_wall_msgs_per_s": med("breakwater", "wall_msgs_per_s"),
        "ratio_vs_plain": _ratio(bw, plain),
        "ratio_vs_decode": _ratio(bw, decode),
        "peak_rss_bytes": med("breakwater", "peak_rss_bytes"),
        "peak_pss_bytes": med("breakwater", "peak_pss_bytes"),
        "plain_script_peak_rss_bytes": med("plain_script", "peak_rss_bytes"),
        "decode_only_peak_rss_bytes": med("decode_only", "peak_rss_bytes"),
        "latency_p50_ms": med("breakwater", "latency_p50_ms"),
        "latency_p95_ms": med("breakwater", "latency_p95_ms"),
        "latency_p99_ms": med("breakwater", "latency_p99_ms"),
        "wall_s": {run: med(run, "wall_s") for run in ("decode_only", "plain_script", "breakwater")},
        "breakwater_elapsed_s": med("breakwater", "elapsed_s"),
        "breakwater_startup_and_shutdown_s": med("breakwater", "startup_and_shutdown_s"),
        "breakwater_first_message_s": med("breakwater", "first_message_s"),
        "per_round_msgs_per_s": {
            run: [x[run].get("msgs_per_s") for x in rounds] for run in ("decode_only", "plain_script", "breakwater")
        },
        "runs": rounds[0] if len(rounds) == 1 else {f"round{i + 1}": x for i, x in enumerate(rounds)},
    }


def scenario_memory(ctx: Context, lines: int) -> dict[str, Any]:
    runs = {}
    for label, n in (("n", lines), ("10n", lines * 10)):
        corpus, info = make_corpus(n, ctx.tmp)
        log(f"Breakwater on {n:,} lines (memory)")
        db, prefix = ctx.scratch.database(f"mem{label}"), ctx.scratch.prefix(f"mem{label}")
        run = run_breakwater(
            corpus,
            ctx.tmp,
            f"memory-{label}",
            database_url=db,
            redis_url=ctx.scratch.redis_url,
            prefix=prefix,
            extra=ctx.ingest_args,
            timeout_s=ctx.timeout_s,
        )
        run.pop("timeline", None)
        run["corpus"] = info
        runs[label] = run
        corpus.unlink()
        log(
            f"  exit {run['exit_code']}, peak RSS {run['peak_rss_bytes'] / 2**20:.0f} MiB, "
            f"{run.get('msgs_per_s')} msg/s"
        )
    ratio = _ratio(runs["10n"]["peak_rss_bytes"], runs["n"]["peak_rss_bytes"])
    return {
        "lines_n": lines,
        "lines_10n": lines * 10,
        "peak_rss_bytes_n": runs["n"]["peak_rss_bytes"],
        "peak_rss_bytes_10n": runs["10n"]["peak_rss_bytes"],
        "peak_rss_ratio": ratio,
        "target_ratio": MEMORY_TARGET_RATIO,
        "peak_pss_bytes_n": runs["n"]["peak_pss_bytes"],
        "peak_pss_bytes_10n": runs["10n"]["peak_pss_bytes"],
        "peak_pss_ratio": _ratio(runs["10n"]["peak_pss_bytes"], runs["n"]["peak_pss_bytes"]),
        "within_target": ratio is not None and ratio < MEMORY_TARGET_RATIO,
        "runs": runs,
    }


def _at(timeline: list[dict[str, float]], t: float, key: str) -> tuple[float, float]:
    """(time, value) of the last sample at or before t (the first sample if none)."""
    best = timeline[0]
    for point in timeline:
        if point["t"] > t:
            break
        best = point
    return best["t"], best[key]


def _phase(timeline: list[dict[str, float]], start: float | None, end: float | None) -> dict[str, Any]:
    if not timeline or start is None or end is None or end <= start:
        return {}
    (t0, m0), (t1, m1) = _at(timeline, start, "messages"), _at(timeline, end, "messages")
    out: dict[str, Any] = {"from_s": round(start, 2), "to_s": round(end, 2)}
    out["msgs_per_s"] = round((m1 - m0) / (t1 - t0), 1) if t1 > t0 else None
    for key in ("redis_written", "redis_dlq", "db_written"):
        out[key] = _at(timeline, end, key)[1] - _at(timeline, start, key)[1]
    return out


class OutageSwitch:
    """Takes the proxy down once the job has done `start_fraction` of the expected messages,
    brings it back `outage_s` later; called by the metrics poller every tick."""

    def __init__(self, proxy: Any, mode: str, expected_messages: float, start_fraction: float, outage_s: float) -> None:
        self.proxy = proxy
        self.mode = mode
        self.threshold = expected_messages * start_fraction
        self.outage_s = outage_s
        self.down_at: float | None = None
        self.up_at: float | None = None
        self.first_progress_at: float | None = None

    def __call__(self, now: float, point: dict[str, float] | None) -> None:
        if point is not None and point["messages"] > 0 and self.first_progress_at is None:
            self.first_progress_at = point["t"]
        if self.down_at is None and point is not None and point["messages"] >= self.threshold:
            self.proxy.set_mode(self.mode)
            self.down_at = now
            log(f"  Redis proxy {self.mode} at {now:.1f} s ({point['messages']:,.0f} messages)")
        elif self.down_at is not None and self.up_at is None and now >= self.down_at + self.outage_s:
            self.proxy.set_mode("up")
            self.up_at = now
            log(f"  Redis proxy up at {now:.1f} s")


def _first_after(
    timeline: list[dict[str, float]], t: float | None, test: Callable[[dict[str, float]], bool]
) -> float | None:
    if t is None:
        return None
    return next((round(p["t"] - t, 2) for p in timeline if p["t"] >= t and test(p)), None)


def scenario_outage(ctx: Context, corpus: Path, corpus_info: dict[str, Any], expected: float) -> dict[str, Any]:
    from jobs.fault_proxy import FaultProxy

    if ctx.reference_stores is None:
        # What the stores hold after the same corpus without an outage, to compare with.
        log("Breakwater without an outage, for reference")
        db, prefix = ctx.scratch.database("ref"), ctx.scratch.prefix("ref")
        ref = run_breakwater(
            corpus,
            ctx.tmp,
            "reference",
            database_url=db,
            redis_url=ctx.scratch.redis_url,
            prefix=prefix,
            extra=ctx.ingest_args,
            timeout_s=ctx.timeout_s,
        )
        ctx.reference_stores = ctx.scratch.contents(db, prefix)
        log(f"  exit {ref['exit_code']}, {ref.get('msgs_per_s')} msg/s steady")
    target = urlsplit(ctx.scratch.redis_url)
    db, prefix = ctx.scratch.database("outage"), ctx.scratch.prefix("outage")
    with FaultProxy((target.hostname or "127.0.0.1", target.port or 6379)) as proxy:
        redis_url = target._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        switch = OutageSwitch(proxy, ctx.outage_mode, expected, ctx.outage_at, ctx.outage_s)
        extra = ["--set", f"breaker.reset_timeout_s={ctx.reset_timeout_s:g}", *ctx.ingest_args]
        log(f"Breakwater with a Redis outage ({ctx.outage_mode}, {ctx.outage_s:g} s)")
        run = run_breakwater(
            corpus,
            ctx.tmp,
            "outage",
            database_url=db,
            redis_url=redis_url,
            prefix=prefix,
            extra=extra,
            timeout_s=ctx.timeout_s,
            on_tick=switch,
        )
        if switch.down_at is not None and switch.up_at is None:
            proxy.set_mode("up")
        log(f"  exit {run['exit_code']}, {run.get('msgs_per_s')} msg/s steady")
        dlq_before = _dlq_stats(run["dlq_path"])
        drain = _drain(run, ctx)
        log(f"  retry_dlq --force: exit {drain['exit_code']} in {drain['wall_s']} s")
    timeline = run["timeline"]
    end = timeline[-1]["t"] if timeline else None
    stores = ctx.scratch.contents(db, prefix)
    return {
        "corpus": corpus_info,
        "outage_mode": ctx.outage_mode,
        "outage_s": ctx.outage_s,
        "proxy_down_at_s": switch.down_at and round(switch.down_at, 2),
        "proxy_up_at_s": switch.up_at and round(switch.up_at, 2),
        "job_ended_during_outage": switch.up_at is None,
        "throughput": {
            "before": _phase(timeline, switch.first_progress_at, switch.down_at),
            "during": _phase(timeline, switch.down_at, switch.up_at or end),
            "after": _phase(timeline, switch.up_at, end),
        },
        "breaker_opened_after_s": _first_after(timeline, switch.down_at, lambda p: p["redis_breaker"] == 2),
        "breaker_closed_after_up_s": _first_after(timeline, switch.up_at, lambda p: p["redis_breaker"] == 0),
        "dlq_at_job_end": (run.get("summary") or {}).get("sinks", {}).get("redis"),
        "dlq_journal_before_drain": dlq_before,
        "drain": drain,
        "dlq_drain_s": drain["wall_s"],
        "stores_after_drain": stores,
        "stores_without_outage": ctx.reference_stores,
        "stores_match_throughput_run": None if ctx.reference_stores is None else stores == ctx.reference_stores,
        "breakwater_msgs_per_s": run.get("msgs_per_s"),
        "run": run,
    }


def _dlq_stats(path: str) -> dict[str, Any]:
    from breakwater.config import load_settings
    from breakwater.operations import LocalOperations

    ops = LocalOperations(load_settings({"dlq": {"path": path}}))
    try:
        stats = ops.dlq_stats()
    finally:
        ops.close()
    return {k: stats.get(k) for k in ("waiting", "dead", "by_sink", "by_error")}


def _drain(run: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """`python -m jobs.retry_dlq --force` with the job's settings; --local because the job's
    cluster is gone and no other cluster on this machine should be joined."""
    cmd = [
        sys.executable,
        "-m",
        "jobs.retry_dlq",
        "--force",
        "--local",
        "--database-url",
        run["database_url"],
        "--redis-url",
        run["redis_url"],
        "--redis-prefix",
        run["prefix"],
        "--dlq-path",
        run["dlq_path"],
        "--set",
        f"breaker.reset_timeout_s={ctx.reset_timeout_s:g}",
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(ctx.tmp), capture_output=True, timeout=ctx.timeout_s)
    out: dict[str, Any] = {"exit_code": proc.returncode, "wall_s": round(time.perf_counter() - started, 3)}
    try:
        out["report"] = json.loads(proc.stdout.decode())
    except ValueError:
        out["stdout_tail"] = proc.stdout.decode(errors="replace")[-2000:]
        out["stderr_tail"] = proc.stderr.decode(errors="replace")[-3000:]
    return out


# -- the command -------------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace, scratch: Scratch, tmp: Path) -> None:
        self.scratch = scratch
        self.tmp = tmp
        self.timeout_s = args.timeout_s
        self.ingest_args = list(args.ingest_arg)
        self.outage_mode = args.outage_mode
        self.outage_s = args.outage_s
        self.outage_at = args.outage_at
        self.reset_timeout_s = args.reset_timeout_s
        self.repeat = args.repeat
        self.reference_stores: dict[str, Any] | None = None


def machine_info(scratch: Scratch) -> dict[str, Any]:
    import psycopg
    import redis

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    with psycopg.connect(scratch.admin_url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    client = redis.Redis.from_url(scratch.redis_url)
    redis_version = client.info("server")["redis_version"]
    client.close()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ray": version("ray"),
        "pyais": version("pyais"),
        "psycopg": version("psycopg"),
        "redis_py": version("redis"),
        "postgresql": pg,
        "redis_server": redis_version,
        "load_average": os.getloadavg(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=("throughput", "outage", "memory", "all"), default="throughput")
    p.add_argument("--lines", type=int, default=200_000, help="corpus lines, default 200000")
    p.add_argument("--memory-lines", type=int, help="N of the memory scenario (default --lines); it also runs 10 x N")
    p.add_argument("--repeat", type=int, default=1, help="rounds of the throughput scenario (medians reported)")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server where the scratch databases are created (this database is only used to create them)",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis server for the scratch prefixes")
    p.add_argument(
        "--ingest-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for jobs.ingest, e.g. --ingest-arg=--writers=4 (repeatable)",
    )
    p.add_argument("--outage-mode", choices=("reset", "hang"), default="reset")
    p.add_argument("--outage-s", type=float, default=5.0, help="seconds Redis is away, default 5")
    p.add_argument("--outage-at", type=float, default=0.3, help="share of the messages done when it goes, default 0.3")
    p.add_argument("--reset-timeout-s", type=float, default=2.0, help="breaker.reset_timeout_s in the outage run")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="longest any one run may take")
    p.add_argument("--keep", action="store_true", help="keep the scratch databases, keys and temp files")
    return p.parse_args(argv)


def _row(name: str, rate: float | None, wall: float | None, rss: int | None) -> str:
    return f"{name:24}{rate or 0:>12,.0f}{wall or 0:>10.2f}{(rss or 0) / 2**20:>14.0f}"


def console_report(results: dict[str, Any]) -> str:
    out = []
    t = results.get("throughput")
    if t:
        wall = t["wall_s"]
        out += [
            f"corpus: {t['corpus']['lines']:,} lines, {t['corpus']['bytes'] / 1e6:.1f} MB",
            f"{'':24}{'msg/s':>12}{'wall s':>10}{'peak RSS MiB':>14}",
            _row(
                "decode only (pyais)",
                t["decode_only_msgs_per_s"],
                wall["decode_only"],
                t["decode_only_peak_rss_bytes"],
            ),
            _row(
                "plain script",
                t["plain_script_msgs_per_s"],
                wall["plain_script"],
                t["plain_script_peak_rss_bytes"],
            ),
            _row("Breakwater (steady)", t["breakwater_msgs_per_s"], wall["breakwater"], t["peak_rss_bytes"]),
            f"ratio Breakwater/plain {t['ratio_vs_plain']}, Breakwater/decode {t['ratio_vs_decode']}; "
            f"Breakwater incl. Ray start-up {t['breakwater_wall_msgs_per_s']} msg/s",
            f"Breakwater peak PSS {(t['peak_pss_bytes'] or 0) / 2**20:.0f} MiB (shared pages counted once)",
            f"end-to-end latency p50 {t['latency_p50_ms']} ms, p95 {t['latency_p95_ms']} ms, "
            f"p99 {t['latency_p99_ms']} ms",
        ]
    m = results.get("memory")
    if m:
        out.append(
            f"memory: peak RSS {m['peak_rss_bytes_n'] / 2**20:.0f} MiB at {m['lines_n']:,} lines, "
            f"{m['peak_rss_bytes_10n'] / 2**20:.0f} MiB at {m['lines_10n']:,}: ratio {m['peak_rss_ratio']} "
            f"(target < {m['target_ratio']}); PSS ratio {m['peak_pss_ratio']}"
        )
    o = results.get("outage")
    if o:
        phases = ", ".join(f"{k} {v.get('msgs_per_s')}" for k, v in o["throughput"].items() if v)
        out.append(
            f"outage ({o['outage_mode']} {o['outage_s']:g} s): msg/s {phases}; breaker open after "
            f"{o['breaker_opened_after_s']} s, closed {o['breaker_closed_after_up_s']} s after Redis was back"
        )
        out.append(
            f"  DLQ before drain {o['dlq_journal_before_drain'].get('waiting')}, "
            f"drained in {o['dlq_drain_s']} s; stores match the run without outage: "
            f"{o['stores_match_throughput_run']}"
        )
    return "\n".join(out)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM ends the bench like Ctrl-C: the running job is stopped and the scratch stores dropped."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["RAY_AUTH_MODE"] = "token"
    signal.signal(signal.SIGTERM, _interrupt)
    scratch = Scratch(args.database_url, args.redis_url, keep=args.keep)
    tmp = Path(tempfile.mkdtemp(prefix="bwbench-"))
    ctx = Context(args, scratch, tmp)
    results: dict[str, Any] = {
        "scenario": args.scenario,
        "run_id": scratch.run_id,
        "machine": machine_info(scratch),
    }
    started = time.perf_counter()
    try:
        wanted = {"throughput", "memory", "outage"} if args.scenario == "all" else {args.scenario}
        corpus = info = None
        if wanted & {"throughput", "outage"}:
            corpus, info = make_corpus(args.lines, tmp)
        if "throughput" in wanted:
            results["throughput"] = scenario_throughput(ctx, corpus, info)  # type: ignore[arg-type]
            results.update({k: v for k, v in results["throughput"].items() if k != "runs"})
        if "outage" in wanted:
            expected = (results.get("throughput") or {}).get("decode_only_messages")
            if expected is None:
                expected = run_plain(corpus, tmp, timeout_s=args.timeout_s)["messages"]  # type: ignore[arg-type]
            results["outage"] = scenario_outage(ctx, corpus, info, expected)  # type: ignore[arg-type]
        if "memory" in wanted:
            results["memory"] = scenario_memory(ctx, args.memory_lines or args.lines)
    finally:
        results["bench_wall_s"] = round(time.perf_counter() - started, 1)
        scratch.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    print(console_report(results))
    failed = [r for r in _runs(results) if r.get("exit_code")]
    return 1 if failed else 0


def _runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    runs = list((results.get("throughput") or {}).get("runs", {}).values())
    runs += list((results.get("memory") or {}).get("runs", {}).values())
    if results.get("outage"):
        runs += [results["outage"]["run"], results["outage"]["drain"]]
    return runs


if __name__ == "__main__":
    sys.exit(main())
