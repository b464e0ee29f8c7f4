"""The `dlq-scale` scenario: what the dead-letter queue's operations cost at 10,000 waiting
records and at N (default 1,000,000), in this process on a scratch journal, no Ray.

At each size it measures, side by side:
    enqueue_records_per_s   writers' batches of 2,500 records journaled (incl. the is_full check)
    drain_records_per_s     the drain's loop: due(1,000, force) then resolve, as many as went in
    stats_ms                DeadLetterQueue.stats(), what the metrics tick and `dlq stats` run
    is_full_ms              what every enqueue and the held-back reader ask
    scan_stats_ms           the same numbers counted by scanning the rows (how stats worked
                            before the running totals), for comparison
Then the ratios at N over 10k. The queue is filled between sizes with the same enqueue path.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from contextlib import closing
from pathlib import Path
from typing import Any, cast

from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue, Failure
from breakwater.retry import RetryPolicy
from jobs.bench import log
from jobs.bench.outage import _dlq_stats, _drain, redis_behind_proxy
from jobs.bench.runners import run_breakwater
from jobs.bench.scenarios import REPLAY_SETTINGS, Context, breakwater_on_scratch, make_corpus

BATCH = 2_500
DOWN = Failure("StoreUnavailable", "connection refused", "CLOSED", 0.0)


def _rows(start: int, n: int) -> list[tuple[Any, ...]]:
    """Position rows with distinct identities (MMSI, receive time, digest)."""
    return [
        (200_000_000 + (i % 700_000), 1_565_218_800_000 + i, i, 1, 59.0, 10.0, 5.0, 90.0, 90, 0, 0.0, None, "tag_block")
        for i in range(start, start + n)
    ]


class _Filler:
    def __init__(self, queue: DeadLetterQueue) -> None:
        self.queue = queue
        self.next = 0
        self.batches = 0

    def add(self, n: int) -> float:
        """Journal n more records in writer-sized batches; seconds it took."""
        started = time.perf_counter()
        while n > 0:
            size = min(BATCH, n)
            self.queue.enqueue(
                "redis", {"position": _rows(self.next, size)}, source="bench", job_id="bench",
                batch_id=f"b{self.batches}", read_ms=1, failure=DOWN, next_retry_at=0.0,
            )  # fmt: skip
            self.next += size
            self.batches += 1
            n -= size
        return time.perf_counter() - started


def _median_ms(call: Any, times: int = 15) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def _scan_stats(queue: DeadLetterQueue) -> None:
    queue.db.execute(
        "SELECT sink, status, COUNT(*), SUM(size_bytes), MIN(first_failed_at) FROM dead_letters GROUP BY sink, status"
    ).fetchall()
    queue.db.execute("SELECT last_error, COUNT(*) FROM dead_letters GROUP BY last_error").fetchall()


def _measure(queue: DeadLetterQueue, filler: _Filler) -> dict[str, Any]:
    """At the queue's present size: the read paths first, then 25,000 records in and 25,000
    drained out again, so the size is the same before and after."""
    waiting = queue.stats().waiting
    reads = {
        "stats_ms": _median_ms(queue.stats),
        "is_full_ms": _median_ms(queue.is_full),
        "scan_stats_ms": _median_ms(lambda: _scan_stats(queue), times=5),
    }
    moved = 10 * BATCH
    enqueue_s = filler.add(moved)
    drained, started = 0, time.perf_counter()
    while drained < moved:
        letters = queue.due("redis", 1_000, force=True)
        queue.resolve(letters, written=len(letters), duplicates=0)
        drained += len(letters)
    drain_s = time.perf_counter() - started
    return {
        "waiting": waiting,
        "enqueue_records_per_s": round(moved / enqueue_s),
        "drain_records_per_s": round(drained / drain_s),
        **reads,
    }


def scenario_dlq_scale(tmp: Path, records: int) -> dict[str, Any]:
    config = DeadLetterConfig(path=tmp / "dlq-scale.sqlite3", max_records=10 * records, max_bytes=1 << 40)
    queue = DeadLetterQueue(config, RetryPolicy())
    filler = _Filler(queue)
    filler.add(10_000)
    at_10k = _measure(queue, filler)
    fill_s = filler.add(max(0, records - at_10k["waiting"]))
    at_n = _measure(queue, filler)
    queue.close()
    return {
        "records": records,
        "at_10k": at_10k,
        "at_n": at_n,
        "fill_s": round(fill_s, 1),
        "enqueue_ratio_n_vs_10k": round(at_n["enqueue_records_per_s"] / at_10k["enqueue_records_per_s"], 2),
        "drain_ratio_n_vs_10k": round(at_n["drain_records_per_s"] / at_10k["drain_records_per_s"], 2),
        "journal_bytes": (tmp / "dlq-scale.sqlite3").stat().st_size,
    }


# The long outage: Redis away for a whole ingest, then back, and the queue drained into it.

_REDIS = "redis"
# The capped stream of updates carries entry ids made of the time of each write: no two runs
# can share them, so it is left out of the comparison; every other key must be equal.
_UNCOMPARED = ("updates",)


class _RedisDownOnceStarted:
    """Resets every Redis connection from the job's first metrics answer on. The job checks
    its stores at start-up and refuses to start without them; its metrics answer only after
    that check and before the writers' warm-up, so no batch should reach Redis (the job's
    summary says whether one did: `sinks.redis.written`, which the test holds to 0)."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.down_at: float | None = None
        self.messages_before: float | None = None

    def __call__(self, now: float, point: dict[str, float] | None) -> None:
        if self.down_at is None and point is not None:
            self.proxy.set_mode("reset")
            self.down_at, self.messages_before = now, point["messages"]
            log(f"  Redis proxy reset at {now:.1f} s ({point['messages']:,.0f} messages)")


def redis_state(redis_url: str, prefix: str) -> dict[str, Any]:
    """Every key under the prefix (the prefix cut off) with its whole value: what a reader
    of this deployment's Redis can see."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    state: dict[str, Any] = {}
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=2000):
            name, kind = key[len(prefix) :], str(client.type(key))
            if name in _UNCOMPARED:
                continue
            if kind == "hash":
                state[name] = client.hgetall(key)
            elif kind == "zset":
                state[name] = dict(cast("list[tuple[str, float]]", client.zrange(key, 0, -1, withscores=True)))
            elif kind == "set":
                state[name] = sorted(client.smembers(key))
            else:
                state[name] = f"<{kind}>"
    finally:
        client.close()
    return state


def _mmsis_differing(reference: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """MMSIs whose Redis state is not what the run without an outage left: a vessel hash
    missing or unequal, or a GEO member missing, extra or elsewhere."""
    mmsis: set[str] = set()
    for key in reference.keys() | after.keys():
        ref, got = reference.get(key), after.get(key)
        if ref == got:
            continue
        if ":vessel:" in key:
            mmsis.add(key.rsplit(":", 1)[1])
        elif isinstance(ref, dict) or isinstance(got, dict):
            ref_d, got_d = ref if isinstance(ref, dict) else {}, got if isinstance(got, dict) else {}
            mmsis |= {m for m in ref_d.keys() | got_d.keys() if ref_d.get(m) != got_d.get(m)}
        else:
            mmsis |= set(ref or []) ^ set(got or [])
    return mmsis


def _mmsis_queued(journal: str) -> set[str]:
    """MMSIs that still have a Redis record waiting or dead in the journal."""
    with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        keys = db.execute("SELECT record_key FROM dead_letters WHERE sink=?", (_REDIS,)).fetchall()
    return {k.split(":", 1)[0] for (k,) in keys}


def _queue_stats(run: dict[str, Any]) -> dict[str, int]:
    """The run's Redis records waiting and dead in its journal (read with the run's stores)."""
    by_sink = (_dlq_stats(run)["by_sink"] or {}).get(_REDIS) or {}
    return {"waiting": int(by_sink.get("waiting", 0)), "dead": int(by_sink.get("dead", 0))}


def scenario_long_outage(ctx: Context, lines: int) -> dict[str, Any]:
    """Breakwater over `lines` lines with Redis down for the whole ingest (the database up),
    then Redis back and `jobs.retry_dlq --force`; compared with the same corpus ingested
    without an outage into a clean prefix and database."""
    corpus, info = make_corpus(lines, ctx.tmp)
    log(f"Breakwater on {lines:,} lines without an outage, for reference")
    ref_run, ref_db, ref_prefix = breakwater_on_scratch(ctx, corpus, "lref", "long-reference", REPLAY_SETTINGS)
    reference = redis_state(ctx.scratch.redis_url, ref_prefix)
    db, prefix = ctx.scratch.database("long"), ctx.scratch.prefix("long")
    run, switch, at_end, drain = _ingest_while_redis_is_down(ctx, corpus, lines, db, prefix)
    corpus.unlink()
    summary = run.get("summary") or {}
    return {
        "lines": lines,
        "corpus": info,
        "messages_decoded": run.get("messages_decoded"),
        "ingest_exit_code": run["exit_code"],
        "ingest_s": run.get("elapsed_s"),
        "ingest_wall_s": run["wall_s"],
        "msgs_per_s": run.get("msgs_per_s"),
        "reference_ingest_s": ref_run.get("elapsed_s"),
        "reference_msgs_per_s": ref_run.get("msgs_per_s"),
        "redis_down_at_s": switch.down_at and round(switch.down_at, 2),
        "messages_before_redis_down": switch.messages_before,
        "job_verdict": "ok" if summary.get("ok") else "NOT OK",
        "job_sinks": summary.get("sinks"),
        "dlq_records_at_ingest_end": at_end["waiting"],
        "dlq_dead_at_ingest_end": at_end["dead"],
        "drain_exit_code": drain["exit_code"],
        "drain_s": drain["wall_s"],
        **_losses(run, at_end["waiting"], drain, reference, redis_state(ctx.scratch.redis_url, prefix)),
        "stores_after_drain": ctx.scratch.contents(db, prefix),
        "stores_without_outage": ctx.scratch.contents(ref_db, ref_prefix),
        "reference_exit_code": ref_run["exit_code"],
        "run": {k: v for k, v in run.items() if k not in ("timeline", "rss_samples", "summary")},
        "drain": drain,
    }


def _losses(
    run: dict[str, Any], into_outage: int, drain: dict[str, Any], reference: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    """What the outage cost once drained, counted two ways. By the queue: records that went
    in and were neither written (or found written) by the drain nor are still waiting or
    dead. By the stores: vessels whose Redis state is not what the run without an outage
    left, and for which nothing is left in the queue. Each is a lower bound on the records
    lost (a wrong vessel with nothing queued for it means at least one), so `lost` is the
    larger."""
    left = _queue_stats(run)
    report = (drain.get("report") or {}).get("drained") or {}
    drained = int(report.get(f"{_REDIS}.written", 0)) + int(report.get(f"{_REDIS}.duplicates", 0))
    count_gap = into_outage - drained - left["waiting"] - left["dead"]
    differing = _mmsis_differing(reference, after)
    unexplained = differing - _mmsis_queued(run["dlq_path"])
    return {
        "drain_report": report,
        "drain_records_per_s": round(drained / drain["wall_s"]) if drain["wall_s"] else None,
        "waiting_after_drain": left["waiting"],
        "dead_after_drain": left["dead"],
        "records_unaccounted": count_gap,
        "redis_keys_compared": len(reference),
        "vessels_differing_from_reference": len(differing),
        "vessels_differing_with_nothing_queued": sorted(unexplained)[:20],
        "redis_matches_reference": after == reference,
        "lost": max(0, count_gap, len(unexplained)),
    }


def _ingest_while_redis_is_down(
    ctx: Context, corpus: Path, lines: int, db: str, prefix: str
) -> tuple[dict[str, Any], _RedisDownOnceStarted, dict[str, int], dict[str, Any]]:
    """The ingest job with Redis behind the fault proxy, reset from start-up to the end of
    the ingest; then the proxy up again and the drain through it (the address the job's
    settings name). The queue's limit is raised over the corpus: this measures an outage
    the queue can hold, not the backpressure (tests/integration/test_resilience.py has that)."""
    with redis_behind_proxy(ctx) as (proxy, redis_url):
        switch = _RedisDownOnceStarted(proxy)
        extra = ["--set", f"breaker.reset_timeout_s={ctx.reset_timeout_s:g}"]
        extra += ["--set", f"dlq.max_records={max(1_000_000, 4 * lines)}", *REPLAY_SETTINGS, *ctx.ingest_args]
        log(f"Breakwater on {lines:,} lines with Redis down for the whole ingest")
        run = run_breakwater(
            corpus,
            ctx.tmp,
            "long-outage",
            database_url=db,
            redis_url=redis_url,
            prefix=prefix,
            extra=extra,
            timeout_s=ctx.timeout_s,
            on_tick=switch,
        )
        at_end = _queue_stats(run)
        log(f"  exit {run['exit_code']} in {run['wall_s']} s; {at_end['waiting']:,} Redis records in the queue")
        proxy.set_mode("up")
        drain = _drain(run, ctx)
        log(f"  retry_dlq --force: exit {drain['exit_code']} in {drain['wall_s']} s")
    return run, switch, at_end, drain
