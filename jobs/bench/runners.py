"""The contenders, each run as its own process while the bench samples it.

- `run_plain`: jobs/plain_script.py, decode only when no stores are given.
- `run_breakwater`: `python -m jobs.ingest` with both sinks, breakers, a private dead-letter
  journal and a metrics port.

Breakwater's rate is `messages_decoded / elapsed_s` of the job's summary, which leaves out
Ray's start-up but not the first decode tasks waiting for their worker processes; the "warm"
rate (from the metrics timeline, first messages to last) leaves that out too, and the wall time
of the whole command includes everything. This run's Ray processes that outlive their driver
are ended, and only they (see `sampling`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from jobs.bench import ROOT
from jobs.bench.sampling import MetricsPoller, RssSampler, histogram_percentiles, warm_rate

TickHook = Callable[[float, dict[str, float] | None], None]


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_env(tmp: Path) -> dict[str, str]:
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
    script: str = "jobs.plain_script",
) -> dict[str, Any]:
    """jobs/plain_script.py (or another `script` with its arguments, jobs/strong_script.py)
    in its own process; decode only when no stores are given."""
    cmd = [sys.executable, "-m", script, str(corpus)]
    if database_url and redis_url:
        cmd += ["--database-url", database_url, "--redis-url", redis_url, "--redis-prefix", prefix]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=bench_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


@dataclass(frozen=True)
class IngestFiles:
    """Where one ingest run leaves its summary, dead-letter journal and output (the bench's temp dir)."""

    summary: Path
    dlq: Path
    stdout: Path
    stderr: Path

    @classmethod
    def under(cls, tmp: Path, label: str) -> IngestFiles:
        return cls(
            tmp / f"summary-{label}.json",
            tmp / f"dlq-{label}.sqlite3",
            tmp / f"ingest-{label}.out",
            tmp / f"ingest-{label}.err",
        )


@dataclass
class WatchedRun:
    """A finished ingest process and what was watched while it ran."""

    exit_code: int
    wall_s: float
    sampler: RssSampler
    poller: MetricsPoller
    leftovers: list[str]


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
    on_tick: TickHook | None = None,
) -> dict[str, Any]:
    """`python -m jobs.ingest` with both sinks, a private DLQ journal and a metrics port."""
    port = free_port()
    files = IngestFiles.under(tmp, label)
    cmd = [sys.executable, "-m", "jobs.ingest", str(corpus)]
    cmd += ["--database-url", database_url, "--redis-url", redis_url, "--redis-prefix", prefix]
    cmd += ["--metrics-port", str(port), "--dlq-path", str(files.dlq), "--summary-json", str(files.summary)]
    cmd += ["--no-progress", "--job-id", f"bench-{label}", *extra]
    load_before = os.getloadavg()[0]
    watched = _watch(cmd, tmp, files, port, on_tick, timeout_s)
    sampler, poller = watched.sampler, watched.poller
    result: dict[str, Any] = {
        "exit_code": watched.exit_code,
        "wall_s": round(watched.wall_s, 3),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "other_ray_processes_seen": sampler.foreign_count,
        "peak_rss_bytes": sampler.peak_bytes,
        "peak_pss_bytes": sampler.peak_pss_bytes,
        "peak_rss_by_role": sampler.peak_by_role,
        "peak_processes": sampler.peak_processes,
        "rss_samples": sampler.samples,
        "metrics_first_answer_s": poller.first_answer_s,
        "leftover_processes": watched.leftovers,
        "dlq_path": str(files.dlq),
        "redis_url": redis_url,
        "database_url": database_url,
        "prefix": prefix,
        "timeline": poller.timeline,
    }
    result.update(_job_summary(files, watched))
    result.update(warm_rate(poller.timeline))
    last = poller.timeline[-1] if poller.timeline else {}
    result.update({f"latency_{q}_ms": _round(last.get(f"{q}_ms")) for q in ("p50", "p95", "p99")})
    if poller.last_text:
        result.update(histogram_percentiles(poller.last_text))
    return result


def _watch(
    cmd: list[str], tmp: Path, files: IngestFiles, port: int, on_tick: TickHook | None, timeout_s: float
) -> WatchedRun:
    """Run the ingest job, sampling its memory and metrics, and end what it leaves behind.
    An interrupt (Ctrl-C, SIGTERM) stops the job as Ctrl-C would, then goes on up."""
    started = time.perf_counter()
    with open(files.stdout, "wb") as out, open(files.stderr, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=bench_env(tmp), stdout=out, stderr=err)
        sampler = RssSampler(proc.pid, marker=bench_env(tmp)["RAY_TMPDIR"])
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
    return WatchedRun(code, wall, sampler, poller, leftovers)


def _job_summary(files: IngestFiles, watched: WatchedRun) -> dict[str, Any]:
    """The job's own summary and the rates made from it; the output's tail when it failed."""
    out: dict[str, Any] = {}
    if watched.exit_code != 0 or not files.summary.exists():
        out["stderr_tail"] = files.stderr.read_text(errors="replace")[-4000:]
        out["stdout_tail"] = files.stdout.read_text(errors="replace")[-2000:]
    if not files.summary.exists():
        return out
    summary = json.loads(files.summary.read_text())
    summary.pop("rejected_examples", None)
    elapsed = summary.get("elapsed_s") or 0.0
    wall = watched.wall_s
    out.update(
        summary=summary,
        elapsed_s=elapsed,
        messages_decoded=summary["messages_decoded"],
        lines_read=summary["lines"]["read"],
        msgs_per_s=round(summary["messages_decoded"] / elapsed, 1) if elapsed else 0.0,
        wall_msgs_per_s=round(summary["messages_decoded"] / wall, 1) if wall else 0.0,
        startup_and_shutdown_s=round(wall - elapsed, 3),
    )
    return out


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
