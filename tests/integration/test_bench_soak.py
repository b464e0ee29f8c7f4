"""The soak and stress benchmarks in a short form, so they cannot rot: the commands as
docs/BENCHMARKS.md shows them, in a subprocess with a clean environment, against the real Ray,
PostgreSQL and Redis, with live TCP feeds served by the bench. Nothing here is timed: the
machine is shared; what is held is that nothing is lost and the stores are right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _clean_env() -> dict[str, str]:
    """Nothing the Makefile, the conftest or a developer exported, but the token mode."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return {**env, "RAY_AUTH_MODE": "token"}


def _bench(scenario: str, out: Path, database_url: str, redis_url: str, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "jobs.bench", "--scenario", scenario, "--json", str(out), *args]
    cmd += ["--database-url", database_url, "--redis-url", redis_url]
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=900)
    why = f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n{proc.stdout[-1500:]}"
    assert out.exists(), why
    result: dict[str, Any] = json.loads(out.read_text())[scenario]
    for part in ("run", "drain", "reference_run"):
        tails = {k: v for k, v in result[part].items() if k in ("exit_code", "stderr_tail", "stdout_tail")}
        why += f"\n{part}: {tails}"
    assert proc.returncode == 0, why
    assert f"{scenario}: " in proc.stdout and "lost 0;" in proc.stdout, why
    return result


def _assert_nothing_lost_and_stores_right(r: dict[str, Any]) -> None:
    # Every line a feed sent was read by the job, before SIGTERM stopped it, and balanced.
    assert r["counted_before_sigterm"] is True
    assert r["lines_counted"] == r["lines_sent"] == sum(r["lines_sent_per_feed"]) > 0
    assert r["lost"] == 0 and r["feed_errors"] == [] and r["feeds_ran_out"] is False
    assert (r["job_exit_code"], r["job_verdict"], r["job_errors"]) == (0, "ok", [])
    # The drain left nothing, and the stores hold what a job without faults made of the
    # very lines sent: row counts, every data row (hashed), and Redis key by key.
    assert r["drain_exit_code"] == 0
    assert r["dlq_after_drain"] == {"waiting": 0, "dead": 0}
    assert r["stores_after_drain"] == r["stores_reference"]
    assert r["stores_reference"]["redis_vessel_keys"] > 0 and r["stores_reference"]["sql_rows"]["positions"] > 0
    assert r["sql_rows_match_reference"] is True and r["redis_matches_reference"] is True
    assert r["vessels_differing_from_reference"] == 0 and r["passed"] is True
    # Memory was sampled at the start and the end at least; latency from the job's histogram.
    assert len(r["memory"]["samples"]) >= 2 and r["memory"]["first_last_ratio"] > 0
    assert r["latency"]["whole_run_bucket_upper_bound_ms"]["p99"] is not None


def test_a_short_soak_with_a_flapping_redis_loses_nothing(
    tmp_path: Path, postgres_server: str, redis_server: str
) -> None:
    # 40 s at 1,000 lines/s over two feeds; Redis reset for the last 10 s of every 20 s. The
    # breaker opens at the second consecutive failure here, so each outage trips it although
    # redis-py's own retries stretch every failing call over seconds.
    r = _bench(
        "soak", tmp_path / "soak.json", postgres_server, redis_server,
        "--minutes", "0.66", "--rate", "1000", "--flap-down-s", "10", "--flap-every-s", "20",
        "--ingest-arg=--set=breaker.failure_threshold=2",
    )  # fmt: skip
    _assert_nothing_lost_and_stores_right(r)
    assert r["feeds"] == 2 and r["rate_asked_per_s"] == 1000
    assert len(r["flap"]["down_windows_s"]) == 2
    assert r["breaker_trips"].get("redis", 0) >= 1
    assert r["job_sinks"]["redis"]["dead_letter_queue"] > 0 and r["dlq_peak"] > 0
    assert r["job_sinks"]["db"]["dead_letter_queue"] == 0


def test_a_short_stress_holds_the_feeds_back_and_loses_nothing(
    tmp_path: Path, postgres_server: str, redis_server: str
) -> None:
    r = _bench("stress", tmp_path / "stress.json", postgres_server, redis_server, "--minutes", "0.3")
    _assert_nothing_lost_and_stores_right(r)
    assert r["rate_asked_per_s"] is None and r["flap"] is None
    # Backpressure: the feeds spent time blocked in sendall, i.e. the job's reader held them
    # back, and what they got ahead of the job stayed within the sockets' buffers.
    assert r["sender_blocked_share"] > 0
    assert 0 <= r["backlog_max_lines"] < r["lines_sent"]
    assert r["job_lines_per_s_second_half"] > 0 and r["cpu_cores_by_role"]
    assert r["peak_rss_bytes"] > 0
