"""The per-stage benchmark on a few thousand lines, so it cannot rot: the command as
docs/SCALING.md shows it, in a subprocess with a clean environment, against the real Ray,
PostgreSQL and Redis. Every stage must report a rate and every stage must have seen the same
corpus: the counts one stage hands to the next agree, exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINES = 3000
STAGES = ["read", "frame", "decode", "normalize", "ray_task", "ray_actor", "redis", "postgres", "sqlite", "dlq"]
# The corpus's first 3,000 lines: 454 rejected by the reader, the other 2,546 framed into
# 2,423 messages (multi-sentence messages joined); 2,386 decoded into as many reports, 2,127
# of them positions and static reports (what Redis keeps); 1,993 distinct history rows (the
# captures repeat some reports).
FRAMED, DECODED, FOR_REDIS, HISTORY_ROWS = 2423, 2386, 2127, 1993


def _clean_env() -> dict[str, str]:
    """Nothing the Makefile, the conftest or a developer exported, but the token mode."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, "RAY_AUTH_MODE": "token"}


def test_every_stage_reports_a_rate_and_the_stages_counts_agree(
    tmp_path: Path, postgres_server: str, redis_server: str
) -> None:
    out = tmp_path / "stages.json"
    cmd = [sys.executable, "-m", "jobs.bench.stages", "--lines", str(LINES), "--repeat", "1", "--json", str(out)]
    cmd += ["--database-url", postgres_server, "--redis-url", redis_server]
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}"
    r = json.loads(out.read_text())
    s = r["stages"]

    assert list(s) == STAGES
    for name, stage in s.items():
        assert stage["msgs_per_s"] > 0 and stage["items_per_s"] > 0, name
        assert len(stage["seconds"]) == 1, name
    assert r["disagreements"] == [] and "counts agree" in proc.stdout
    # The counts themselves, exactly: each stage handed the next what it took.
    assert s["read"]["items"] == s["frame"]["items"] == LINES
    assert s["frame"]["messages_out"] == s["decode"]["items"] == s["ray_task"]["items"] == FRAMED
    assert s["decode"]["messages_decoded"] == s["normalize"]["items"] == r["messages_decoded"] == DECODED
    for name in ("decode", "normalize", "ray_actor", "postgres", "sqlite", "dlq"):
        assert s[name]["reports"] == DECODED, name
    assert s["decode"]["reports_for_redis"] == s["redis"]["reports"] == FOR_REDIS
    # The two SQL stores took the same history from the same reports.
    assert s["postgres"]["written"] == s["sqlite"]["written"] == HISTORY_ROWS
    # What SCALING.md's arithmetic needs was recorded with the numbers.
    assert r["machine"]["cpu_count"] == os.cpu_count()
    assert len(r["load_average_start"]) == len(r["load_average_end"]) == 3
    assert set(r["cores_needed"]) == {"world", "world_x10"}
    assert r["cores_needed"]["world_x10"]["postgres"] >= r["cores_needed"]["world"]["postgres"] >= 1
    _assert_scratch_removed(r["run_id"], postgres_server, redis_server)


def _assert_scratch_removed(run_id: str, postgres_url: str, redis_url: str) -> None:
    import psycopg
    import redis

    with psycopg.connect(postgres_url) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"bw_bench_{run_id}_%",))
        assert left.fetchall() == []
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"bench{run_id}*", count=1000)) == []
    finally:
        client.close()
