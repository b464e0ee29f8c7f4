"""The ingest job on live feeds, watched while it runs and stopped the way an operator stops it.

`LiveJob.start` runs `python -m jobs.ingest tcp://...` with both sinks, a private dead-letter
journal and a metrics port, as `runners.run_breakwater` does for a file. A live job never ends
on its own: `stop_when_counted` waits until the job's metrics count every line the feeds sent
(polled, never a fixed sleep), then sends SIGTERM, which finishes the batches in flight and
writes the summary. `finish` returns what `run_breakwater` returns, plus the samples taken.

`RoleWatch` is the bench's RSS sampler with a snapshot on demand of RSS and CPU seconds per
role (driver, writers, decode tasks, services, raylet, gcs_server, other): a soak takes one
every minute, and the CPU between two snapshots shows which process a stress run saturates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from jobs.bench import ROOT
from jobs.bench.runners import IngestFiles, WatchedRun, _job_summary, _reap, bench_env, free_port
from jobs.bench.sampling import MetricsPoller, RssSampler, histogram_percentiles, role_of


class RoleWatch(RssSampler):
    """Peak RSS as `RssSampler` keeps it, and snapshots of RSS and CPU per role."""

    def snapshot(self) -> dict[str, dict[str, float]]:
        rss: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for proc in self._processes().values():
            try:
                mem, times, cmd = proc.memory_info().rss, proc.cpu_times(), " ".join(proc.cmdline())
            except psutil.Error:
                continue
            role = role_of(cmd, proc.pid == self.root.pid)
            rss[role] = rss.get(role, 0) + mem
            cpu[role] = round(cpu.get(role, 0.0) + times.user + times.system, 2)
        return {"rss_bytes": rss, "cpu_s": cpu}


class LiveJob:
    """One `python -m jobs.ingest` on live feeds, from start to SIGTERM."""

    def __init__(self, cmd: list[str], tmp: Path, files: IngestFiles, port: int, settings: dict[str, str]) -> None:
        self.files = files
        self.settings = settings
        self.started = time.perf_counter()
        self.load_before = os.getloadavg()
        self._out = open(files.stdout, "wb")  # noqa: SIM115 (closed in finish)
        self._err = open(files.stderr, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=bench_env(tmp), stdout=self._out, stderr=self._err)
        self.watch = RoleWatch(self.proc.pid, 1.0, marker=bench_env(tmp)["RAY_TMPDIR"])
        self.poller = MetricsPoller(port, self.started, None)
        self.watch.start()
        self.poller.start()
        self.sigterm_at: float | None = None

    @classmethod
    def start(
        cls,
        tmp: Path,
        label: str,
        specs: list[str],
        *,
        database_url: str,
        redis_url: str,
        prefix: str,
        extra: list[str],
    ) -> LiveJob:
        port = free_port()
        files = IngestFiles.under(tmp, label)
        cmd = [sys.executable, "-m", "jobs.ingest", *specs]
        cmd += ["--database-url", database_url, "--redis-url", redis_url, "--redis-prefix", prefix]
        cmd += ["--metrics-port", str(port), "--dlq-path", str(files.dlq), "--summary-json", str(files.summary)]
        cmd += ["--no-progress", "--job-id", f"bench-{label}", *extra]
        settings = {"database_url": database_url, "redis_url": redis_url, "prefix": prefix, "dlq_path": str(files.dlq)}
        return cls(cmd, tmp, files, port, settings)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def latest(self) -> dict[str, float]:
        """The last metrics sample (zeros before the first one)."""
        return self.poller.timeline[-1] if self.poller.timeline else {"lines": 0.0, "messages": 0.0}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop_when_counted(self, sent: int, timeout_s: float) -> dict[str, Any]:
        """SIGTERM once the job's metrics count `sent` lines read (or after `timeout_s`, which
        the report then says); then wait for the job to finish its batches and exit."""
        began = time.perf_counter()
        counted = False
        while self.alive() and time.perf_counter() - began < timeout_s:
            if self.latest()["lines"] >= sent:
                counted = True
                break
            time.sleep(0.2)
        waited = round(time.perf_counter() - began, 2)
        if self.alive():
            self.sigterm_at = self.elapsed
            self.proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        return {"counted_before_sigterm": counted, "waited_for_count_s": waited}

    def kill(self) -> None:
        """An interrupted bench: stop the job as Ctrl-C would, then for good."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        if self.alive():
            self.proc.kill()

    def finish(self) -> dict[str, Any]:
        """Stop watching, end what the job left behind, and gather its results."""
        if self.alive():
            self.kill()
        wall = self.elapsed
        self.watch.stop.set()
        self.poller.stop.set()
        self.watch.join()
        self.poller.join()
        self._out.close()
        self._err.close()
        leftovers = _reap(self.watch)
        watched = WatchedRun(self.proc.returncode, wall, self.watch, self.poller, leftovers)
        result: dict[str, Any] = {
            **self.settings,
            "exit_code": self.proc.returncode,
            "wall_s": round(wall, 3),
            "sigterm_at_s": self.sigterm_at and round(self.sigterm_at, 2),
            "load_average_before": self.load_before,
            "load_average_after": os.getloadavg(),
            "other_ray_processes_seen": self.watch.foreign_count,
            "peak_rss_bytes": self.watch.peak_bytes,
            "peak_pss_bytes": self.watch.peak_pss_bytes,
            "peak_rss_by_role": self.watch.peak_by_role,
            "leftover_processes": leftovers,
        }
        result.update(_job_summary(self.files, watched))
        if self.poller.last_text:
            result.update(histogram_percentiles(self.poller.last_text))
        return result
