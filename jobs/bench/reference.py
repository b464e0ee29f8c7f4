"""The honest check of a live run: its stores after the drain against a reference run, the very
lines each feed sent ingested as files by a job without faults into a fresh database and
prefix. Compared: row counts per table; every data row, hashed, provenance left out; and
Redis key by key (`dlq_scale.redis_state`), provenance left out of the vessel hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.bench import log
from jobs.bench.dlq_scale import _mmsis_differing, redis_state
from jobs.bench.feed_server import FeedServer
from jobs.bench.runners import run_breakwater
from jobs.bench.scenarios import REPLAY_SETTINGS, Context

DATA_TABLES = ("positions", "static_reports", "other_messages", "latest_positions", "vessels")
# Which copy of a report was kept, not what the report says. One report heard twice (same
# MMSI, receive time and payload: one identity, `reports.row_key`) is stored once, and which
# copy's source, station or raw line is kept depends on arrival order: the live feeds and the
# reference's file order them differently. Everything else must be equal.
PROVENANCE = ("source", "station", "time_source")
SQL_COPY_COLUMNS = (*PROVENANCE, "nmea")


def without_provenance(state: dict[str, Any]) -> dict[str, Any]:
    """Redis as `redis_state` reads it, less the provenance fields of each vessel hash."""
    return {
        key: {f: v for f, v in value.items() if f not in PROVENANCE} if ":vessel:" in key else value
        for key, value in state.items()
    }


def sql_fingerprint(database_url: str) -> dict[str, list[int]]:
    """Rows and a sum of row hashes per data table, provenance left out: equal for two
    databases that hold the same rows, in any order (row counts alone would not see a
    position written with the wrong values)."""
    import psycopg

    row = "(to_jsonb(t) - " + " - ".join(f"'{c}'" for c in SQL_COPY_COLUMNS) + ")::text"
    out = {}
    with psycopg.connect(database_url) as conn:
        for table in DATA_TABLES:
            query = f'SELECT count(*), coalesce(sum(hashtext({row})::bigint), 0) FROM "{table}" t'
            count, hashes = conn.execute(query).fetchone()  # type: ignore[misc]
            out[table] = [int(count), int(hashes)]
    return out


def _reference_corpus(servers: list[FeedServer], out: Path) -> Path:
    """The bytes each feed sent, one feed after the other: what the reference run ingests."""
    with open(out, "wb") as dst:
        for s in servers:
            with open(s.path, "rb") as src:
                dst.write(src.read(s.sent_bytes))
    return out


def compare_with_reference(ctx: Context, run: dict[str, Any], servers: list[FeedServer], label: str) -> dict[str, Any]:
    """The stores after the drain against a run without faults on the very lines sent."""
    db, prefix = run["database_url"], run["prefix"]
    after_redis, after = (
        without_provenance(redis_state(ctx.scratch.redis_url, prefix)),
        ctx.scratch.contents(db, prefix),
    )
    ref_db, ref_prefix = ctx.scratch.database(f"{label}ref"), ctx.scratch.prefix(f"{label}ref")
    corpus = _reference_corpus(servers, ctx.tmp / f"{label}-sent.nmea")
    log(f"reference: the {sum(s.sent for s in servers):,} lines sent, as a file, without faults")
    ref = run_breakwater(
        corpus, ctx.tmp, f"{label}-reference", database_url=ref_db, redis_url=ctx.scratch.redis_url,
        prefix=ref_prefix, extra=[*REPLAY_SETTINGS, *ctx.ingest_args], timeout_s=ctx.timeout_s,
    )  # fmt: skip
    corpus.unlink()
    ref_redis = without_provenance(redis_state(ctx.scratch.redis_url, ref_prefix))
    reference = ctx.scratch.contents(ref_db, ref_prefix)
    sql_after, sql_reference = sql_fingerprint(db), sql_fingerprint(ref_db)
    log(f"  exit {ref['exit_code']}; {reference['redis_vessel_keys']:,} vessels, rows {reference['sql_rows']}")
    return {
        "stores_after_drain": after,
        "stores_reference": reference,
        "stores_match_reference": after == reference,
        "redis_matches_reference": after_redis == ref_redis,
        "sql_rows_match_reference": sql_after == sql_reference,
        "sql_fingerprint_after_drain": sql_after,
        "sql_fingerprint_reference": sql_reference,
        "redis_keys_compared": len(ref_redis),
        "vessels_differing_from_reference": len(_mmsis_differing(ref_redis, after_redis)),
        "reference_run": {k: v for k, v in ref.items() if k not in ("timeline", "summary")},
    }
