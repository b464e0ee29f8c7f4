"""The dlq-scale benchmark's long outage in a short form, so it cannot rot: the command as
docs/BENCHMARKS.md shows it, in a subprocess with a clean environment, against the real Ray,
PostgreSQL and Redis. Redis is down for the whole ingest; after the drain nothing is lost and
Redis holds exactly what a run without the outage left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINES = 20_000
MESSAGES_IN_20K_LINES = 14_947  # decodable messages in the corpus's first 20,000 lines


def _clean_env() -> dict[str, str]:
    """Nothing the Makefile, the conftest or a developer exported, but the token mode."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return {**env, "RAY_AUTH_MODE": "token"}


def _why(proc: subprocess.CompletedProcess[str], out: Path) -> str:
    """The bench's own log, and the tails of the job and drain that failed inside it."""
    why = f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n{proc.stdout[-1000:]}"
    if out.exists():
        o = json.loads(out.read_text()).get("dlq_scale", {}).get("long_outage", {})
        for part in ("run", "drain"):
            tails = {k: v for k, v in o.get(part, {}).items() if k in ("exit_code", "stderr_tail", "stdout_tail")}
            why += f"\n{part}: {tails}"
    return why


def test_a_long_redis_outage_drains_to_the_state_of_a_run_without_it(
    tmp_path: Path, postgres_server: str, redis_server: str
) -> None:
    out = tmp_path / "dlq-scale.json"
    cmd = [sys.executable, "-m", "jobs.bench", "--scenario", "dlq-scale", "--records", "20000"]
    cmd += ["--outage-lines", str(LINES), "--json", str(out)]
    cmd += ["--database-url", postgres_server, "--redis-url", redis_server]
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, _why(proc, out)
    o = json.loads(out.read_text())["dlq_scale"]["long_outage"]
    redis = o["job_sinks"]["redis"]

    assert (o["lines"], o["messages_decoded"], o["job_verdict"]) == (LINES, MESSAGES_IN_20K_LINES, "ok")
    # Down for the whole ingest: nothing reached Redis, and what had to go there is queued.
    assert redis["written"] == 0
    assert o["dlq_records_at_ingest_end"] == redis["dead_letter_queue"] == redis["dlq_waiting"] > 0
    assert o["dlq_dead_at_ingest_end"] == 0
    # The drain took every record and left nothing behind.
    drained = o["drain_report"]["redis.written"] + o["drain_report"].get("redis.duplicates", 0)
    assert drained == o["dlq_records_at_ingest_end"]
    assert (o["waiting_after_drain"], o["dead_after_drain"], o["records_unaccounted"]) == (0, 0, 0)
    assert o["drain_s"] > 0
    # The honest check: Redis, key by key, and the database's row counts as without the outage.
    assert o["vessels_differing_from_reference"] == 0 and o["redis_matches_reference"] is True
    assert o["stores_after_drain"] == o["stores_without_outage"]
    assert o["stores_after_drain"]["redis_vessel_keys"] > 0
    assert o["lost"] == 0
    assert "lost 0;" in proc.stdout and "Redis equal to the run without outage: True" in proc.stdout
