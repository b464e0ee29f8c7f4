"""The streaming benchmark in a short form, so it cannot rot: the command as docs/BENCHMARKS.md
shows it, in a subprocess with a clean environment, against the real Ray, PostgreSQL and
Redis, with a TCP and a UDP feed served by the bench. Nothing here is timed (the machine is
shared): what is held is that every line sent was read and that latencies were measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_bench_soak import ROOT, _clean_env


def test_a_short_streaming_run_reads_every_line_and_times_both_stores(
    tmp_path: Path, postgres_server: str, redis_server: str
) -> None:
    out = tmp_path / "streaming.json"
    cmd = [sys.executable, "-m", "jobs.bench", "--scenario", "streaming", "--minutes", "0.25", "--rates", "500"]
    cmd += ["--json", str(out), "--database-url", postgres_server, "--redis-url", redis_server]
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=900)
    why = f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n{proc.stdout[-1500:]}"
    assert proc.returncode == 0 and out.exists(), why
    [r] = json.loads(out.read_text())["streaming"]["rates"]
    assert r["rate_asked_msgs_per_s"] == 500 and r["feed_errors"] == [] and r["feeds_ran_out"] is False
    sent = r["lines_sent"]
    assert sent["tcp"] > 0 and sent["udp"] > 0
    # Every line sent over TCP, and every datagram the kernel did not drop, was read.
    assert r["lost"] == r["udp_dropped"] == 0 and r["lines_read"] == sent["tcp"] + sent["udp"], why
    assert (r["job_exit_code"], r["job_verdict"], r["counted_before_sigterm"]) == (0, "ok", True)
    assert r["probe"]["error"] is None and r["probe"]["vessels"] > 0
    for store in ("redis", "sql"):
        latency = r["latency_ms"][store]
        assert latency["n"] > 10, (store, latency)
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert "streaming 500 msg/s" in proc.stdout
