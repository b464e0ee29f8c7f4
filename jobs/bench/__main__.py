"""The benchmark harness: `python -m jobs.bench --lines 200000 --json bench.json`.

Scenarios (`--scenario`, default throughput; `all` runs them all in turn):

    throughput  the same corpus through (1) pyais decode only, one process, the ceiling of one
                core; (2) the plain script (jobs/plain_script.py: pyais, a Redis pipeline and a
                PostgreSQL COPY, no resilience); (3) the strong script (jobs/strong_script.py:
                pyais IterMessages per 5,000-line chunk, COPY into two tables without keys, each
                vessel's newest position of a chunk to Redis); (4) Breakwater's ingest job with
                both sinks, breakers, dead-letter queue and metrics, run as `python -m jobs.ingest`
    memory      Breakwater on N lines and on 10 x N lines: peak RSS of each and their ratio
    outage      Breakwater with Redis reached through a fault proxy that resets every
                connection for a few seconds mid-run; throughput before, during and after,
                the dead-letter queue left, and how long `jobs.retry_dlq --force` takes to drain it
    fastpath    in this process, no Ray and no server: what a batch costs when its sink's
                breaker is open (the gate's decision, the writer's divert, the journal)
    dlq-scale   in this process, no Ray: the dead-letter queue's enqueue, drain, stats and
                is_full at 10,000 and at --records waiting records; then a long outage:
                Breakwater over --outage-lines lines with Redis down for the whole ingest,
                Redis back, `jobs.retry_dlq --force`, and Redis compared with a run without it
    soak        live TCP feeds at --rate lines/s for --minutes (default 10) with Redis flapping
                (down --flap-down-s every --flap-every-s); SIGTERM, drain, lost lines, stores
                against a run without faults, memory and latency every minute (`soak`)
    stress      the same feeds as fast as the job takes them, no faults, --minutes (default 2):
                backpressure, peak memory, nothing lost, and the job's ceiling
    streaming   a TCP and a UDP feed whose lines carry the time they are sent, at each of --rates
                msg/s (default 2000 and 10000) for --minutes (default 1): receive-to-visible
                latency p50/p95/p99 in Redis and in SQL, and the sustained rate (`streaming`)

Every measurement against the stores gets a fresh, empty scratch database and Redis key prefix
(`scratch`); how rates and memory are measured is told in `runners` and `sampling`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.bench.dlq_scale import scenario_dlq_scale, scenario_long_outage
from jobs.bench.fastpath import scenario_fastpath
from jobs.bench.machine import machine_info
from jobs.bench.outage import scenario_outage
from jobs.bench.runners import run_plain
from jobs.bench.scenarios import Context, make_corpus, scenario_memory, scenario_throughput
from jobs.bench.scratch import Scratch
from jobs.bench.soak import console_lines, live_runs, scenario_soak, scenario_stress
from jobs.bench.streaming import console_lines as streaming_lines
from jobs.bench.streaming import scenario_streaming, streaming_runs

SCENARIOS = ("throughput", "memory", "outage", "fastpath", "dlq-scale", "soak", "stress", "streaming")
NEEDS_SERVERS = frozenset({"throughput", "memory", "outage", "dlq-scale", "soak", "stress", "streaming"})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="throughput")
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
    p.add_argument(
        "--fastpath-decisions", type=int, default=2000, help="timed batches of the fastpath scenario, default 2000"
    )
    p.add_argument("--records", type=int, default=1_000_000, help="waiting records of the dlq-scale scenario")
    p.add_argument(
        "--outage-lines",
        type=int,
        default=1_000_000,
        help="lines ingested with Redis down in the dlq-scale scenario, default 1000000; 0 skips that part",
    )
    p.add_argument(
        "--minutes", type=float, help="soak, stress and streaming: minutes of feeding (default 10, 2 and 1 a rate)"
    )
    p.add_argument("--rates", type=int, nargs="+", help="streaming: msg/s, one run each (default 2000 10000)")
    p.add_argument("--rate", type=int, default=5000, help="soak: lines/s over all feeds, default 5000")
    p.add_argument("--feeds", type=int, default=2, help="soak and stress: live TCP feeds, default 2")
    p.add_argument("--flap-down-s", type=float, default=10.0, help="soak: seconds Redis is down a period, default 10")
    p.add_argument("--flap-every-s", type=float, default=60.0, help="soak: the flapping period, default 60")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="longest any one run may take")
    p.add_argument("--keep", action="store_true", help="keep the scratch databases, keys and temp files")
    return p.parse_args(argv)


def _row(name: str, rate: float | None, wall: float | None, rss: int | None) -> str:
    return f"{name:24}{rate or 0:>12,.0f}{wall or 0:>10.2f}{(rss or 0) / 2**20:>14.0f}"


def _throughput_lines(t: dict[str, Any]) -> list[str]:
    wall = t["wall_s"]
    return [
        f"corpus: {t['corpus']['lines']:,} lines, {t['corpus']['bytes'] / 1e6:.1f} MB",
        f"{'':24}{'msg/s':>12}{'wall s':>10}{'peak RSS MiB':>14}",
        _row("decode only (pyais)", t["decode_only_msgs_per_s"], wall["decode_only"], t["decode_only_peak_rss_bytes"]),
        _row("plain script", t["plain_script_msgs_per_s"], wall["plain_script"], t["plain_script_peak_rss_bytes"]),
        _row("strong script", t["strong_script_msgs_per_s"], wall["strong_script"], t["strong_script_peak_rss_bytes"]),
        _row("Breakwater (steady)", t["breakwater_msgs_per_s"], wall["breakwater"], t["peak_rss_bytes"]),
        f"ratio Breakwater/strong {t['ratio_vs_strong']} steady, {t['ratio_vs_strong_cold']} whole commands "
        f"(strong script {t['strong_script_wall_msgs_per_s']} msg/s over its whole run)",
        f"ratio Breakwater/plain {t['ratio_vs_plain']}, Breakwater/decode {t['ratio_vs_decode']}; "
        f"Breakwater incl. Ray start-up {t['breakwater_wall_msgs_per_s']} msg/s",
        f"Breakwater peak PSS {(t['peak_pss_bytes'] or 0) / 2**20:.0f} MiB (shared pages counted once)",
        f"end-to-end latency p50 {t['latency_p50_ms']} ms, p95 {t['latency_p95_ms']} ms, p99 {t['latency_p99_ms']} ms",
    ]


def _memory_lines(m: dict[str, Any]) -> list[str]:
    return [
        f"memory: peak RSS {m['peak_rss_bytes_n'] / 2**20:.0f} MiB at {m['lines_n']:,} lines, "
        f"{m['peak_rss_bytes_10n'] / 2**20:.0f} MiB at {m['lines_10n']:,}: ratio {m['peak_rss_ratio']} "
        f"(target < {m['target_ratio']}); PSS ratio {m['peak_pss_ratio']}"
    ]


def _outage_lines(o: dict[str, Any]) -> list[str]:
    phases = ", ".join(f"{k} {v.get('msgs_per_s')}" for k, v in o["throughput"].items() if v)
    return [
        f"outage ({o['outage_mode']} {o['outage_s']:g} s): msg/s {phases}; breaker open after "
        f"{o['breaker_opened_after_s']} s, closed {o['breaker_closed_after_up_s']} s after Redis was back",
        f"  database rows/s during the outage {o['throughput'].get('during', {}).get('db_written_per_s')} "
        f"vs {o['db_written_per_s_without_outage']} without one (ratio {o['db_rate_during_over_without']})",
        f"  DLQ before drain {o['dlq_journal_before_drain'].get('waiting')}, "
        f"drained in {o['dlq_drain_s']} s; stores match the run without outage: "
        f"{o['stores_match_throughput_run']}",
    ]


def _fastpath_lines(f: dict[str, Any]) -> list[str]:
    return [
        f"fastpath (breaker open, {f['fastpath_batch_reports']:,.0f} reports a batch, "
        f"{f['fastpath_decisions']:,} batches): decision p50 {f['fastpath_decision_us_p50']} us, "
        f"p99 {f['fastpath_decision_us_p99']} us",
        f"  divert to the DLQ link p50 {f['fastpath_divert_us_p50']} us, p99 {f['fastpath_divert_us_p99']} us "
        f"(target < {f['fastpath_target_us']:g} us); sink calls {f['fastpath_sink_calls']}",
        f"  into the SQLite journal p50 {f['fastpath_journal_ms_per_batch_p50']} ms a batch, "
        f"{f['fastpath_journal_us_per_record']} us a record",
    ]


def console_report(results: dict[str, Any]) -> str:
    out = []
    if results.get("throughput"):
        out += _throughput_lines(results["throughput"])
    if results.get("memory"):
        out += _memory_lines(results["memory"])
    if results.get("outage"):
        out += _outage_lines(results["outage"])
    if results.get("fastpath"):
        out += _fastpath_lines(results["fastpath"])
    if results.get("dlq_scale"):
        out += _dlq_scale_lines(results["dlq_scale"])
    return "\n".join(out + console_lines(results) + streaming_lines(results))


def _dlq_scale_lines(d: dict[str, Any]) -> list[str]:
    out = [f"dlq-scale: {'':18}{'enqueue/s':>11}{'drain/s':>10}{'stats ms':>10}{'is_full ms':>11}{'scan ms':>9}"]
    for label, m in (("at 10k", d["at_10k"]), (f"at {d['records']:,}", d["at_n"])):
        out.append(
            f"  {label:<26}{m['enqueue_records_per_s']:>11,}{m['drain_records_per_s']:>10,}"
            f"{m['stats_ms']:>10}{m['is_full_ms']:>11}{m['scan_stats_ms']:>9}"
        )
    out.append(f"  ratio at N / at 10k: enqueue {d['enqueue_ratio_n_vs_10k']}, drain {d['drain_ratio_n_vs_10k']}")
    if d.get("long_outage"):
        out += _long_outage_lines(d["long_outage"])
    return out


def _long_outage_lines(o: dict[str, Any]) -> list[str]:
    return [
        f"long outage (Redis down for the whole ingest of {o['lines']:,} lines): ingest {o['ingest_s']} s "
        f"({o['msgs_per_s']} msg/s; without the outage {o['reference_ingest_s']} s), job {o['job_verdict']}, "
        f"{o['dlq_records_at_ingest_end']:,} Redis records in the DLQ at its end",
        f"  drained in {o['drain_s']} s ({o['drain_records_per_s']} records/s); "
        f"waiting after {o['waiting_after_drain']}, dead {o['dead_after_drain']}; lost {o['lost']}; "
        f"Redis equal to the run without outage: "
        f"{o['redis_matches_reference']} ({o['redis_keys_compared']:,} keys)",
    ]


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM ends the bench like Ctrl-C: the running job is stopped and the scratch stores dropped."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_scenarios(args: argparse.Namespace, ctx: Context, wanted: set[str], results: dict[str, Any]) -> None:
    """Each wanted scenario in turn, its results into `results` as soon as it has them."""
    corpus = info = None
    if wanted & {"throughput", "outage"}:
        corpus, info = make_corpus(args.lines, ctx.tmp)
    if "throughput" in wanted:
        results["throughput"] = scenario_throughput(ctx, corpus, info)  # type: ignore[arg-type]
        results.update({k: v for k, v in results["throughput"].items() if k != "runs"})
    if "outage" in wanted:
        expected = (results.get("throughput") or {}).get("decode_only_messages")
        if expected is None:
            expected = run_plain(corpus, ctx.tmp, timeout_s=args.timeout_s)["messages"]  # type: ignore[arg-type]
        results["outage"] = scenario_outage(ctx, corpus, info, expected)  # type: ignore[arg-type]
    if "memory" in wanted:
        results["memory"] = scenario_memory(ctx, args.memory_lines or args.lines)
    if "dlq-scale" in wanted:
        results["dlq_scale"] = scenario_dlq_scale(ctx.tmp, args.records)
        if args.outage_lines > 0:
            results["dlq_scale"]["long_outage"] = scenario_long_outage(ctx, args.outage_lines)
    if "fastpath" in wanted:
        results["fastpath"] = scenario_fastpath(ctx.tmp, args.lines, args.fastpath_decisions)
        results.update({k: v for k, v in results["fastpath"].items() if k.startswith("fastpath_")})
    if "soak" in wanted:
        results["soak"] = scenario_soak(ctx, args)
    if "stress" in wanted:
        results["stress"] = scenario_stress(ctx, args)
    if "streaming" in wanted:
        results["streaming"] = scenario_streaming(ctx, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["RAY_AUTH_MODE"] = "token"
    signal.signal(signal.SIGTERM, _interrupt)
    wanted = set(SCENARIOS) if args.scenario == "all" else {args.scenario}
    scratch = Scratch(args.database_url, args.redis_url, keep=args.keep)
    tmp = Path(tempfile.mkdtemp(prefix="bwbench-"))
    ctx = Context(args, scratch, tmp)
    results: dict[str, Any] = {
        "scenario": args.scenario,
        "run_id": scratch.run_id,
        "machine": machine_info(scratch if wanted & NEEDS_SERVERS else None),
    }
    started = time.perf_counter()
    try:
        run_scenarios(args, ctx, wanted, results)
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
    if (results.get("dlq_scale") or {}).get("long_outage"):
        runs += [results["dlq_scale"]["long_outage"]["run"], results["dlq_scale"]["long_outage"]["drain"]]
    return runs + live_runs(results) + streaming_runs(results)


if __name__ == "__main__":
    sys.exit(main())
