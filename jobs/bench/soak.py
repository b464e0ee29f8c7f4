"""The soak and stress scenarios: Breakwater on live TCP feeds for minutes, both stores on.

    soak    the bench's feed servers (`feed_server`) replay the corpus at `--rate` lines/s over
            `--feeds` feeds for `--minutes`, into `python -m jobs.ingest tcp://...`, with Redis
            reached through the fault proxy and reset for `--flap-down-s` at the end of every
            `--flap-every-s` period
    stress  the same without the faults and without pacing: the feeds send as fast as the
            sockets take the lines, so the job's backpressure sets the rate

When the time is up the feeds stop sending (their connections stay open), the job is stopped
with SIGTERM once its metrics count every line sent, and `jobs.retry_dlq --force` drains what
the queue still holds. Then the honest checks: `lost` is the lines sent less the lines the
job's summary read (the summary itself balances every line read); the queue must be empty;
and the stores must equal those of a reference run: the very lines each feed sent, ingested as
files by a job without faults into a fresh database and prefix (`reference`). `passed` says
whether all of it held; the bench exits 1 when it did not.

Memory (RSS per role), CPU per role, load average and the job's latency gauges are sampled at
the start, every minute and at the end of the feeding. The latency is the job's end-to-end
measure: from the reader cutting a batch to the batch written in every sink (or journaled).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from jobs.bench import log
from jobs.bench.feed_server import FeedServer, split_corpus
from jobs.bench.live_job import LiveJob
from jobs.bench.outage import _dlq_stats, _drain, redis_behind_proxy
from jobs.bench.reference import compare_with_reference
from jobs.bench.scenarios import REPLAY_SETTINGS, Context, make_corpus

SNAPSHOT_EVERY_S = 60.0
CONNECT_TIMEOUT_S = 180.0  # Ray's start-up and the job's warm-up, on a loaded machine
STRESS_LINES_PER_S = 100_000  # corpus sized for this much: over twice what 2 quiet cores ingest (about 45k)


def flap_is_down(elapsed_s: float, down_s: float, every_s: float) -> bool:
    """A flapping store is down for the last `down_s` seconds of every `every_s` period, so
    the job warms up with both stores and each period ends with an outage."""
    return down_s > 0 and elapsed_s % every_s >= every_s - down_s


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def rate_between(timeline: list[dict[str, float]], key: str, start: float, end: float) -> float | None:
    """Per second of `key` between the samples nearest after `start` and before `end`."""
    points = [p for p in timeline if start <= p["t"] <= end]
    if len(points) < 2 or points[-1]["t"] <= points[0]["t"]:
        return None
    return round((points[-1][key] - points[0][key]) / (points[-1]["t"] - points[0]["t"]), 1)


@dataclass
class Feeding:
    """What the feeding phase saw: per-second samples of the feeds and the job, and the
    snapshots (start, every minute, end)."""

    start: float = 0.0
    seconds: float = 0.0
    timeline: list[dict[str, float]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    down_windows: list[list[float]] = field(default_factory=list)


class Flapper:
    """Switches the proxy by `flap_is_down`; keeps the down windows (seconds into the feeding)."""

    def __init__(self, proxy: Any, down_s: float, every_s: float, windows: list[list[float]]) -> None:
        self.proxy, self.down_s, self.every_s, self.windows = proxy, down_s, every_s, windows
        self.down = False

    def apply(self, elapsed: float) -> None:
        down = flap_is_down(elapsed, self.down_s, self.every_s)
        if down != self.down:
            self.proxy.set_mode("reset" if down else "up")
            self.down = down
            if down:
                self.windows.append([round(elapsed, 1), round(elapsed, 1)])
        if self.down:
            self.windows[-1][1] = round(elapsed, 1)

    def end(self) -> None:
        if self.down:
            self.proxy.set_mode("up")
            self.down = False


def _snapshot(job: LiveJob, t: float) -> dict[str, Any]:
    point = job.latest()
    return {
        "t": round(t, 1),
        **job.watch.snapshot(),
        "load_average": os.getloadavg(),
        "latency_last_minute_ms": {q: point.get(f"{q}_ms") for q in ("p50", "p95", "p99")},
        "dlq_size": point.get("dlq_size"),
    }


def _feed(job: LiveJob, servers: list[FeedServer], seconds: float, flapper: Flapper | None) -> Feeding:
    """Wait for the job to connect every feed, let them send for `seconds`, sample as they go."""
    while not all(s.connected.is_set() for s in servers):
        if not job.alive() or job.elapsed > CONNECT_TIMEOUT_S:
            raise RuntimeError(f"the job did not connect its feeds (exit {job.proc.poll()}); see {job.files.stderr}")
        time.sleep(0.1)
    fed = Feeding(start=time.monotonic(), seconds=seconds)
    for s in servers:
        s.go(fed.start + seconds)
    log(f"  feeds connected at {job.elapsed:.1f} s; sending for {seconds:g} s")
    next_snapshot = next_sample = fed.start
    while True:
        now = time.monotonic()
        elapsed = now - fed.start
        if flapper is not None:
            flapper.apply(elapsed)
        if now >= next_sample:
            point = job.latest()
            sent = sum(s.sent for s in servers)
            fed.timeline.append({**point, "job_t": point.get("t", 0.0), "t": round(elapsed, 2), "sent": sent})
            next_sample += 1.0
        if now >= next_snapshot:
            fed.snapshots.append(_snapshot(job, elapsed))
            next_snapshot += SNAPSHOT_EVERY_S
        if all(s.finished.is_set() for s in servers) or not job.alive():
            break
        time.sleep(0.1)
    if flapper is not None:
        flapper.end()
    fed.seconds = time.monotonic() - fed.start
    if fed.seconds - fed.snapshots[-1]["t"] >= 1.0:  # else the last minute's is the end's
        fed.snapshots.append(_snapshot(job, fed.seconds))
    return fed


def _sink_limits(text: bytes | None) -> dict[str, Any]:
    """Breaker trips and each sink's mean batch write time, from the job's last metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    trips: dict[str, float] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families((text or b"").decode()):
        for s in family.samples:
            if s.name == "circuit_breaker_trips_total":
                trips[s.labels["breaker"]] = trips.get(s.labels["breaker"], 0) + s.value
            elif s.name == "ais_sink_write_seconds_sum":
                sums[s.labels["sink"]] = sums.get(s.labels["sink"], 0) + s.value
            elif s.name == "ais_sink_write_seconds_count":
                counts[s.labels["sink"]] = counts.get(s.labels["sink"], 0) + s.value
    mean_ms = {sink: round(1000 * sums[sink] / n, 1) for sink, n in counts.items() if n}
    return {"breaker_trips": trips, "sink_write_mean_ms": mean_ms}


@dataclass
class LiveSetup:
    """What distinguishes the two scenarios."""

    label: str
    seconds: float
    rate_per_s: float | None  # None: as fast as the sockets take the lines
    corpus_lines: int
    flap_down_s: float = 0.0
    flap_every_s: float = 60.0


def run_live(ctx: Context, setup: LiveSetup, feeds: int) -> dict[str, Any]:
    """Feeds, job, SIGTERM, drain, reference: the common course of soak and stress."""
    corpus, info = make_corpus(setup.corpus_lines, ctx.tmp)
    parts = split_corpus(corpus, feeds, ctx.tmp)
    corpus.unlink()
    db, prefix = ctx.scratch.database(setup.label), ctx.scratch.prefix(setup.label)
    servers = [FeedServer(p, rate_per_s=setup.rate_per_s and setup.rate_per_s / feeds) for p in parts]
    with ExitStack() as stack:
        redis_url, flapper, windows = ctx.scratch.redis_url, None, list[list[float]]()
        if setup.flap_down_s > 0:
            proxy, redis_url = stack.enter_context(redis_behind_proxy(ctx))
            flapper = Flapper(proxy, setup.flap_down_s, setup.flap_every_s, windows)
        for s in servers:
            s.start()
            stack.callback(s.close)
        extra = ["--set", f"breaker.reset_timeout_s={ctx.reset_timeout_s:g}", *REPLAY_SETTINGS, *ctx.ingest_args]
        log(f"Breakwater on {feeds} live feeds ({setup.label}), {db.rsplit('/', 1)[-1]}")
        job = LiveJob.start(
            ctx.tmp, setup.label, [s.spec for s in servers],
            database_url=db, redis_url=redis_url, prefix=prefix, extra=extra,
        )  # fmt: skip
        try:
            fed = _feed(job, servers, setup.seconds, flapper)
            sent = sum(s.sent for s in servers)
            log(f"  sent {sent:,} lines in {fed.seconds:.1f} s; waiting for the job to count them")
            stop = job.stop_when_counted(sent, timeout_s=max(120.0, ctx.timeout_s / 10))
            last_text = job.poller.last_text
        finally:
            run = job.finish()
        fed.down_windows = windows
        log(f"  job exit {run['exit_code']}, read {run.get('lines_read')} lines; draining the queue")
        drain = _drain(run, ctx)
        after_drain = _dlq_stats(run)
    out = _report(setup, info, servers, fed, run, stop, drain, after_drain, _sink_limits(last_text))
    out.update(compare_with_reference(ctx, run, servers, setup.label))
    out["passed"] = passed(out)
    for p in parts:
        p.unlink(missing_ok=True)
    return out


def passed(r: dict[str, Any]) -> bool:
    """The checks a soak or stress run must pass: every line sent read and balanced, the queue
    empty after the drain, and the stores equal to the reference's."""
    return bool(
        r["lost"] == 0
        and r["counted_before_sigterm"]
        and r["job_verdict"] == "ok"
        and r["dlq_after_drain"] == {"waiting": 0, "dead": 0}
        and r["stores_match_reference"]
        and r["sql_rows_match_reference"]
        and r["redis_matches_reference"]
    )


def _memory(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    totals = [sum(s["rss_bytes"].values()) for s in snapshots]
    return {
        "samples": [
            {"t": s["t"], "rss_bytes": t, "rss_by_role": s["rss_bytes"]} for s, t in zip(snapshots, totals, strict=True)
        ],
        "first_last_ratio": ratio(totals[-1], totals[0]) if totals else None,
    }


def _flap(setup: LiveSetup, fed: Feeding) -> dict[str, Any] | None:
    if not setup.flap_down_s:
        return None
    every, down = setup.flap_every_s, setup.flap_down_s
    return {"store": "redis", "mode": "reset", "down_s": down, "every_s": every, "down_windows_s": fed.down_windows}


def _report(
    setup: LiveSetup,
    corpus: dict[str, Any],
    servers: list[FeedServer],
    fed: Feeding,
    run: dict[str, Any],
    stop: dict[str, Any],
    drain: dict[str, Any],
    after_drain: dict[str, Any],
    limits: dict[str, Any],
) -> dict[str, Any]:
    sent = sum(s.sent for s in servers)
    summary = run.get("summary") or {}
    counted = run.get("lines_read")
    return {
        "rate_asked_per_s": setup.rate_per_s,
        "seconds_asked": setup.seconds,
        "feeds": len(servers),
        "corpus": corpus,
        "lines_sent": sent,
        "lines_sent_per_feed": [s.sent for s in servers],
        "feeding_s": round(fed.seconds, 2),
        "rate_achieved_per_s": round(sent / fed.seconds, 1) if fed.seconds else None,
        "rate_achieved_over_asked": ratio(sent / fed.seconds if fed.seconds else None, setup.rate_per_s),
        "feeds_ran_out": any(s.ran_out for s in servers),
        "feed_errors": [s.error for s in servers if s.error],
        "lines_forgiven_by_pacer": sum(s.forgiven for s in servers),
        "sender_blocked_share": ratio(sum(s.blocked_s for s in servers), fed.seconds * len(servers)),
        "lines_counted": counted,
        "lost": None if counted is None else sent - counted,
        **stop,
        "job_exit_code": run["exit_code"],
        "job_verdict": "ok" if summary.get("ok") else "NOT OK",
        "job_errors": summary.get("errors"),
        "messages_decoded": run.get("messages_decoded"),
        "job_sinks": summary.get("sinks"),
        "flap": _flap(setup, fed),
        **limits,
        "dlq_peak": max((p.get("dlq_size", 0) for p in fed.timeline), default=0),
        "dlq_after_drain": {k: after_drain.get(k) for k in ("waiting", "dead")},
        "drain_exit_code": drain["exit_code"],
        "drain_s": drain["wall_s"],
        "memory": _memory(fed.snapshots),
        "peak_rss_bytes": run.get("peak_rss_bytes"),
        "peak_rss_by_role": run.get("peak_rss_by_role"),
        "latency": {
            "what": "batch cut by the reader to written in every sink (or journaled), per report",
            "whole_run_bucket_upper_bound_ms": {q: run.get(f"latency_hist_{q}_le_ms") for q in ("p50", "p95", "p99")},
            "last_minute_ms_per_snapshot": [{"t": s["t"], **s["latency_last_minute_ms"]} for s in fed.snapshots],
        },
        "load_average_per_snapshot": [{"t": s["t"], "load": s["load_average"]} for s in fed.snapshots],
        "cpu_s_per_snapshot": [{"t": s["t"], **s["cpu_s"]} for s in fed.snapshots],
        "timeline": fed.timeline,
        "run": {k: v for k, v in run.items() if k not in ("summary",)},
        "drain": drain,
    }


def _stress_limits(out: dict[str, Any]) -> dict[str, Any]:
    """The ceiling: rates over the second half of the feeding (the first half fills buffers
    and warms up), the socket backlog, and each role's share of the CPU over that half."""
    timeline, half = out["timeline"], out["feeding_s"] / 2
    end = out["feeding_s"]
    cpu = out["cpu_s_per_snapshot"]
    cpu_share = {}
    if len(cpu) >= 2:
        first, last = cpu[0], cpu[-1]
        span = last["t"] - first["t"]
        cpu_share = {r: round((last[r] - first.get(r, 0)) / span, 2) for r in last if r != "t" and span > 0}
    in_flight = [p["in_flight"] for p in timeline if p["t"] >= half and "in_flight" in p]
    return {
        "send_rate_first_5s_per_s": rate_between(timeline, "sent", 0, 5),
        "send_rate_second_half_per_s": rate_between(timeline, "sent", half, end),
        "job_lines_per_s_second_half": rate_between(timeline, "lines", half, end),
        "job_msgs_per_s_second_half": rate_between(timeline, "messages", half, end),
        "backlog_max_lines": max((p["sent"] - p["lines"] for p in timeline), default=None),
        "in_flight_mean_second_half": round(sum(in_flight) / len(in_flight), 2) if in_flight else None,
        "cpu_cores_by_role": cpu_share,
    }


def scenario_soak(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    minutes = args.minutes if args.minutes is not None else 10.0
    seconds = minutes * 60
    setup = LiveSetup(
        "soak", seconds, float(args.rate), math.ceil(args.rate * seconds * 1.05) + 1000,
        args.flap_down_s, args.flap_every_s,
    )  # fmt: skip
    return {"minutes": minutes, **run_live(ctx, setup, args.feeds)}


def scenario_stress(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    minutes = args.minutes if args.minutes is not None else 2.0
    seconds = minutes * 60
    setup = LiveSetup("stress", seconds, None, math.ceil(STRESS_LINES_PER_S * seconds))
    out = {"minutes": minutes, **run_live(ctx, setup, args.feeds)}
    out.update(_stress_limits(out))
    return out


def console_lines(results: dict[str, Any]) -> list[str]:
    out = []
    for name in ("soak", "stress"):
        r = results.get(name)
        if not r:
            continue
        mem = r["memory"]["samples"]
        lat = r["latency"]["whole_run_bucket_upper_bound_ms"]
        out += [
            f"{name}: {r['lines_sent']:,} lines sent over {r['feeds']} feeds in {r['feeding_s']} s "
            f"({r['rate_achieved_per_s']:,} lines/s, asked {r['rate_asked_per_s'] or 'as fast as taken'}); "
            f"counted {r['lines_counted']}, lost {r['lost']}; job {r['job_verdict']}; "
            f"{'passed' if r['passed'] else 'FAILED'}",
            f"  breaker trips {r['breaker_trips']}, DLQ peak {r['dlq_peak']:,.0f}, after drain "
            f"{r['dlq_after_drain']}; stores equal to the reference: {r['stores_match_reference']}, "
            f"Redis key by key: {r['redis_matches_reference']}, SQL row by row: {r['sql_rows_match_reference']}",
            f"  RSS {mem[0]['rss_bytes'] / 2**20:,.0f} MiB first, {mem[-1]['rss_bytes'] / 2**20:,.0f} MiB last "
            f"(ratio {r['memory']['first_last_ratio']}), peak {(r['peak_rss_bytes'] or 0) / 2**20:,.0f} MiB; "
            f"latency p50/p95/p99 <= {lat['p50']}/{lat['p95']}/{lat['p99']} ms",
        ]
        if name == "stress":
            out.append(
                f"  ceiling: job {r['job_lines_per_s_second_half']} lines/s ({r['job_msgs_per_s_second_half']} msg/s), "
                f"feeds {r['send_rate_first_5s_per_s']} lines/s in the first 5 s, "
                f"{r['send_rate_second_half_per_s']} in the second half; CPU cores {r['cpu_cores_by_role']}"
            )
    return out


def live_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The processes whose exit codes decide the bench's: job, drain and reference of each."""
    runs = []
    for name in ("soak", "stress"):
        if results.get(name):
            r = results[name]
            runs += [r["run"], r["drain"], r["reference_run"], {"exit_code": 0 if r["passed"] else 1}]
    return runs
