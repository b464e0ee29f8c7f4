"""The outage scenario: Breakwater with Redis reached through a fault proxy that resets (or
hangs) every connection for a few seconds mid-run.

Reported: throughput before, during and after the outage (from the metrics timeline), how soon
the Redis breaker opened and closed again, the dead-letter queue left at the end, how long
`jobs.retry_dlq --force` takes to drain it, and whether the stores then hold exactly what a run
without an outage left (the throughput run's, or a reference run made here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobs.bench import ROOT, log
from jobs.bench.runners import bench_env, run_breakwater
from jobs.bench.sampling import steady_db_rate
from jobs.bench.scenarios import REPLAY_SETTINGS, Context, _ratio

BREAKER_OPEN, BREAKER_CLOSED = 2, 0  # values of the circuit_breaker_state gauge
Timeline = list[dict[str, float]]


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


def _at(timeline: Timeline, t: float, key: str) -> tuple[float, float]:
    """(time, value) of the last sample at or before t (the first sample if none)."""
    best = timeline[0]
    for point in timeline:
        if point["t"] > t:
            break
        best = point
    return best["t"], best[key]


def _phase(timeline: Timeline, start: float | None, end: float | None) -> dict[str, Any]:
    if not timeline or start is None or end is None or end <= start:
        return {}
    (t0, m0), (t1, m1) = _at(timeline, start, "messages"), _at(timeline, end, "messages")
    out: dict[str, Any] = {"from_s": round(start, 2), "to_s": round(end, 2)}
    out["msgs_per_s"] = round((m1 - m0) / (t1 - t0), 1) if t1 > t0 else None
    for key in ("redis_written", "redis_dlq", "db_written"):
        out[key] = _at(timeline, end, key)[1] - _at(timeline, start, key)[1]
    out["db_written_per_s"] = round(out["db_written"] / (t1 - t0), 1) if t1 > t0 else None
    return out


def _first_after(timeline: Timeline, t: float | None, test: Callable[[dict[str, float]], bool]) -> float | None:
    if t is None:
        return None
    return next((round(p["t"] - t, 2) for p in timeline if p["t"] >= t and test(p)), None)


@dataclass
class OutageRun:
    """The run through the proxy, the switch that timed the outage, and the drain after it."""

    run: dict[str, Any]
    switch: OutageSwitch
    dlq_before_drain: dict[str, Any]
    drain: dict[str, Any]


def scenario_outage(ctx: Context, corpus: Path, corpus_info: dict[str, Any], expected: float) -> dict[str, Any]:
    if ctx.reference_stores is None:
        ctx.reference_stores = _reference_stores(ctx, corpus)
    db, prefix = ctx.scratch.database("outage"), ctx.scratch.prefix("outage")
    outage = _run_through_proxy(ctx, corpus, expected, db, prefix)
    run, switch, drain = outage.run, outage.switch, outage.drain
    timeline = run["timeline"]
    end = timeline[-1]["t"] if timeline else None
    stores = ctx.scratch.contents(db, prefix)
    during = _phase(timeline, switch.down_at, switch.up_at or end)
    return {
        "corpus": corpus_info,
        "outage_mode": ctx.outage_mode,
        "outage_s": ctx.outage_s,
        "proxy_down_at_s": switch.down_at and round(switch.down_at, 2),
        "proxy_up_at_s": switch.up_at and round(switch.up_at, 2),
        "job_ended_during_outage": switch.up_at is None,
        "throughput": {
            "before": _phase(timeline, switch.first_progress_at, switch.down_at),
            "during": during,
            "after": _phase(timeline, switch.up_at, end),
        },
        # The bulkhead: the database's rate while Redis is out, over a run's without an outage.
        "db_written_per_s_without_outage": ctx.reference_db_per_s,
        "db_rate_during_over_without": _ratio(during.get("db_written_per_s"), ctx.reference_db_per_s),
        "breaker_opened_after_s": _first_after(timeline, switch.down_at, lambda p: p["redis_breaker"] == BREAKER_OPEN),
        "breaker_closed_after_up_s": _first_after(
            timeline, switch.up_at, lambda p: p["redis_breaker"] == BREAKER_CLOSED
        ),
        "dlq_at_job_end": (run.get("summary") or {}).get("sinks", {}).get("redis"),
        "dlq_journal_before_drain": outage.dlq_before_drain,
        "drain": drain,
        "dlq_drain_s": drain["wall_s"],
        "stores_after_drain": stores,
        "stores_without_outage": ctx.reference_stores,
        "stores_match_throughput_run": None if ctx.reference_stores is None else stores == ctx.reference_stores,
        "breakwater_msgs_per_s": run.get("msgs_per_s"),
        "run": run,
    }


def _reference_stores(ctx: Context, corpus: Path) -> dict[str, Any]:
    """What the stores hold after the same corpus without an outage, to compare with."""
    log("Breakwater without an outage, for reference")
    db, prefix = ctx.scratch.database("ref"), ctx.scratch.prefix("ref")
    ref = run_breakwater(
        corpus,
        ctx.tmp,
        "reference",
        database_url=db,
        redis_url=ctx.scratch.redis_url,
        prefix=prefix,
        extra=[*REPLAY_SETTINGS, *ctx.ingest_args],
        timeout_s=ctx.timeout_s,
    )
    stores = ctx.scratch.contents(db, prefix)
    ctx.reference_db_per_s = steady_db_rate(ref.get("timeline") or [])
    log(f"  exit {ref['exit_code']}, {ref.get('msgs_per_s')} msg/s steady, {ctx.reference_db_per_s} db rows/s")
    return stores


@contextmanager
def redis_behind_proxy(ctx: Context) -> Iterator[tuple[Any, str]]:
    """The scratch Redis behind a fault proxy, and the URL that reaches it through the proxy."""
    from jobs.fault_proxy import FaultProxy

    target = urlsplit(ctx.scratch.redis_url)
    with FaultProxy((target.hostname or "127.0.0.1", target.port or 6379)) as proxy:
        yield proxy, target._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()


def _run_through_proxy(ctx: Context, corpus: Path, expected: float, db: str, prefix: str) -> OutageRun:
    """The ingest job with Redis behind the fault proxy, then the drain; both go through the
    proxy (up again by then), since that is the Redis address the job's settings name."""
    with redis_behind_proxy(ctx) as (proxy, redis_url):
        switch = OutageSwitch(proxy, ctx.outage_mode, expected, ctx.outage_at, ctx.outage_s)
        extra = ["--set", f"breaker.reset_timeout_s={ctx.reset_timeout_s:g}", *REPLAY_SETTINGS, *ctx.ingest_args]
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
        dlq_before = _dlq_stats(run)
        drain = _drain(run, ctx)
        log(f"  retry_dlq --force: exit {drain['exit_code']} in {drain['wall_s']} s")
    return OutageRun(run, switch, dlq_before, drain)


def _dlq_stats(run: dict[str, Any]) -> dict[str, Any]:
    """The run's journal, opened with the run's own stores: a journal counts only the records
    of the deployment it is opened for."""
    from breakwater.config import load_settings
    from breakwater.operations import LocalOperations

    settings = {"database_url": run["database_url"], "redis_url": run["redis_url"], "redis_prefix": run["prefix"]}
    ops = LocalOperations(load_settings({**settings, "dlq": {"path": run["dlq_path"]}}))
    try:
        stats = ops.dlq_stats()
    finally:
        ops.close()
    return {k: stats.get(k) for k in ("waiting", "dead", "by_sink", "by_error")}


def _drain(run: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """`python -m jobs.retry_dlq --force` with the job's settings; --local because the job's
    cluster is gone and no other cluster on this machine should be joined."""
    cmd = [sys.executable, "-m", "jobs.retry_dlq", "--force", "--local"]
    cmd += ["--database-url", run["database_url"], "--redis-url", run["redis_url"], "--redis-prefix", run["prefix"]]
    cmd += ["--dlq-path", run["dlq_path"], "--set", f"breaker.reset_timeout_s={ctx.reset_timeout_s:g}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=bench_env(ctx.tmp), capture_output=True, timeout=ctx.timeout_s)
    out: dict[str, Any] = {"exit_code": proc.returncode, "wall_s": round(time.perf_counter() - started, 3)}
    try:
        out["report"] = json.loads(proc.stdout.decode())
    except ValueError:
        out["stdout_tail"] = proc.stdout.decode(errors="replace")[-2000:]
        out["stderr_tail"] = proc.stderr.decode(errors="replace")[-3000:]
    return out
