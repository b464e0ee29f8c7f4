"""The throughput and memory scenarios, and what every scenario shares (`Context`, the corpus).

    throughput  the same corpus through (1) pyais decode only, one process, the ceiling of one
                core; (2) the plain script (jobs/plain_script.py: pyais, a Redis pipeline and a
                PostgreSQL COPY, no resilience); (3) Breakwater's ingest job with both sinks,
                breakers, dead-letter queue and metrics. `--repeat N` runs N rounds and reports
                medians: the machine may be shared, and each run records the load average and
                any other Ray cluster it saw.
    memory      Breakwater on N lines and on 10 x N lines: peak RSS of each and their ratio

The corpus is made by `jobs.bench.corpus` from the real captures in data/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from jobs.bench import ROOT, log
from jobs.bench.runners import run_breakwater, run_plain
from jobs.bench.sampling import steady_db_rate
from jobs.bench.scratch import Scratch

# How a run is compared with a reference run on a corpus of replays. Fusion off: two feeds that
# split one corpus share a few transmissions heard with different times near the cut, and which
# feed's copy reaches a writer first (and is stored as the report) is not deterministic. A speed
# limit no replay reaches: at each replay's start every vessel jumps back to where the capture
# began, which the speed check rightly flags, but which report is flagged depends on how the
# feeds' lines meet in the writers. Either way the stores could not equal the reference row by
# row. The checks still run (and cost what they cost); fusion and the flags have their own tests.
REPLAY_SETTINGS = ("--set", "fusion_window_s=0", "--set", "max_speed_kn=1e9")

DATA = Path(os.environ.get("BENCH_CAPTURES_DIR", ROOT / "data"))
CAPTURES = ("kystverket-2019-tagblock.nmea", "amsa-mixed.nmea.gz")
MEMORY_TARGET_RATIO = 1.5
CONTENDERS = ("decode_only", "plain_script", "strong_script", "breakwater")


class Context:
    """What the server-backed scenarios share: the scratch stores, the temp dir and the flags.
    `reference_stores` is what the stores held after a run without an outage, once known."""

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
        self.reference_db_per_s: float | None = None  # database rows/s of that run


def make_corpus(lines: int, tmp: Path) -> tuple[Path, dict[str, Any]]:
    from jobs.bench.corpus import build_corpus

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
    plain = _script_on_scratch(ctx, corpus, f"plain{r}", "jobs.plain_script")
    log(f"  {plain.get('msgs_per_s')} msg/s")
    log(f"round {r + 1}: strong script (pyais IterMessages, COPY per chunk, newest per vessel to Redis)")
    strong = _script_on_scratch(ctx, corpus, f"strong{r}", "jobs.strong_script")
    log(f"  {strong.get('msgs_per_s')} msg/s")
    log(f"round {r + 1}: Breakwater ingest job (Ray, both sinks, breakers, DLQ, metrics)")
    bw, db, prefix = breakwater_on_scratch(ctx, corpus, f"bw{r}", f"throughput{r}")
    bw["stores"] = ctx.scratch.contents(db, prefix)
    log(f"  exit {bw['exit_code']}, {bw.get('msgs_per_s')} msg/s steady, wall {bw['wall_s']} s")
    if ctx.reference_stores is None:
        ctx.reference_stores = bw["stores"]
        ctx.reference_db_per_s = steady_db_rate(bw.get("timeline") or [])
    return {"decode_only": decode, "plain_script": plain, "strong_script": strong, "breakwater": bw}


def _script_on_scratch(ctx: Context, corpus: Path, store: str, script: str) -> dict[str, Any]:
    """A one-process script (`jobs.plain_script`, `jobs.strong_script`) on a fresh scratch
    database and prefix named `store`; its results, what it left in the stores, and its rate
    over its whole run."""
    db, prefix = ctx.scratch.database(store), ctx.scratch.prefix(store)
    run = run_plain(
        corpus, ctx.tmp, database_url=db, redis_url=ctx.scratch.redis_url, prefix=prefix,
        timeout_s=ctx.timeout_s, script=script,
    )  # fmt: skip
    run["stores"] = ctx.scratch.contents(db, prefix)
    if run.get("wall_s") and run.get("messages"):
        run["wall_msgs_per_s"] = round(run["messages"] / run["wall_s"], 1)
    return run


def scenario_throughput(ctx: Context, corpus: Path, corpus_info: dict[str, Any]) -> dict[str, Any]:
    """The three contenders, `ctx.repeat` rounds; the headline numbers are medians."""
    rounds = [_throughput_round(ctx, corpus, r) for r in range(ctx.repeat)]

    def med(run: str, key: str) -> Any:
        return _median([x[run].get(key) for x in rounds])

    decode, plain, strong, bw = (med(run, "msgs_per_s") for run in CONTENDERS)
    strong_wall, bw_wall = med("strong_script", "wall_msgs_per_s"), med("breakwater", "wall_msgs_per_s")
    return {
        "corpus": corpus_info,
        "rounds": ctx.repeat,
        "decode_only_msgs_per_s": decode,
        "decode_only_messages": med("decode_only", "messages"),
        "plain_script_msgs_per_s": plain,
        "breakwater_msgs_per_s": bw,
        "breakwater_warm_msgs_per_s": med("breakwater", "warm_msgs_per_s"),
        "breakwater_wall_msgs_per_s": med("breakwater", "wall_msgs_per_s"),
        "strong_script_msgs_per_s": strong,
        "strong_script_wall_msgs_per_s": strong_wall,
        "ratio_vs_plain": _ratio(bw, plain),
        # Breakwater's steady rate (Ray up, workers warm) over the strong script's; and the whole
        # commands', Ray's start-up and shutdown included, over the strong script's whole run.
        "ratio_vs_strong": _ratio(bw, strong),
        "ratio_vs_strong_cold": _ratio(bw_wall, strong_wall),
        "ratio_vs_decode": _ratio(bw, decode),
        "peak_rss_bytes": med("breakwater", "peak_rss_bytes"),
        "peak_pss_bytes": med("breakwater", "peak_pss_bytes"),
        "plain_script_peak_rss_bytes": med("plain_script", "peak_rss_bytes"),
        "strong_script_peak_rss_bytes": med("strong_script", "peak_rss_bytes"),
        "decode_only_peak_rss_bytes": med("decode_only", "peak_rss_bytes"),
        "latency_p50_ms": med("breakwater", "latency_p50_ms"),
        "latency_p95_ms": med("breakwater", "latency_p95_ms"),
        "latency_p99_ms": med("breakwater", "latency_p99_ms"),
        "wall_s": {run: med(run, "wall_s") for run in CONTENDERS},
        "breakwater_elapsed_s": med("breakwater", "elapsed_s"),
        "breakwater_startup_and_shutdown_s": med("breakwater", "startup_and_shutdown_s"),
        "breakwater_first_message_s": med("breakwater", "first_message_s"),
        "per_round_msgs_per_s": {run: [x[run].get("msgs_per_s") for x in rounds] for run in CONTENDERS},
        "runs": rounds[0] if len(rounds) == 1 else {f"round{i + 1}": x for i, x in enumerate(rounds)},
    }


def breakwater_on_scratch(
    ctx: Context, corpus: Path, store: str, label: str, extra: tuple[str, ...] = ()
) -> tuple[dict[str, Any], str, str]:
    """Breakwater's ingest job on a fresh scratch database and Redis prefix named `store`
    (with the settings `extra`); the run's results, and the database URL and prefix it wrote to."""
    db, prefix = ctx.scratch.database(store), ctx.scratch.prefix(store)
    run = run_breakwater(
        corpus,
        ctx.tmp,
        label,
        database_url=db,
        redis_url=ctx.scratch.redis_url,
        prefix=prefix,
        extra=[*extra, *ctx.ingest_args],
        timeout_s=ctx.timeout_s,
    )
    return run, db, prefix


def scenario_memory(ctx: Context, lines: int) -> dict[str, Any]:
    """Breakwater on N and on 10 x N lines: memory should grow far less than the input."""
    runs = {}
    for label, n in (("n", lines), ("10n", lines * 10)):
        corpus, info = make_corpus(n, ctx.tmp)
        log(f"Breakwater on {n:,} lines (memory)")
        run, _db, _prefix = breakwater_on_scratch(ctx, corpus, f"mem{label}", f"memory-{label}")
        run.pop("timeline", None)
        run["corpus"] = info
        runs[label] = run
        corpus.unlink()
        log(
            f"  exit {run['exit_code']}, peak RSS {run['peak_rss_bytes'] / 2**20:.0f} MiB, "
            f"{run.get('msgs_per_s')} msg/s"
        )
    rss_ratio = _ratio(runs["10n"]["peak_rss_bytes"], runs["n"]["peak_rss_bytes"])
    return {
        "lines_n": lines,
        "lines_10n": lines * 10,
        "peak_rss_bytes_n": runs["n"]["peak_rss_bytes"],
        "peak_rss_bytes_10n": runs["10n"]["peak_rss_bytes"],
        "peak_rss_ratio": rss_ratio,
        "target_ratio": MEMORY_TARGET_RATIO,
        "peak_pss_bytes_n": runs["n"]["peak_pss_bytes"],
        "peak_pss_bytes_10n": runs["10n"]["peak_pss_bytes"],
        "peak_pss_ratio": _ratio(runs["10n"]["peak_pss_bytes"], runs["n"]["peak_pss_bytes"]),
        "within_target": rss_ratio is not None and rss_ratio < MEMORY_TARGET_RATIO,
        "runs": runs,
    }
