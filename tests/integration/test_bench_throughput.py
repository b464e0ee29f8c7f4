"""The throughput benchmark in a short form, so it cannot rot: the four contenders side by side
on a 20,000-line corpus, as docs/BENCHMARKS.md runs them on 200,000 and 1,000,000, in a
subprocess with a clean environment against the real Ray, PostgreSQL and Redis. Nothing is
timed; what is held is that each contender ran and stored what it says it stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_bench_soak import ROOT, _clean_env


def test_a_short_throughput_run_measures_every_contender(
    tmp_path: Path, postgres_server: str, redis_server: str
) -> None:
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, "-m", "jobs.bench", "--lines", "20000", "--json", str(out)]
    cmd += ["--database-url", postgres_server, "--redis-url", redis_server]
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=900)
    why = f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n{proc.stdout[-1500:]}"
    assert proc.returncode == 0 and out.exists(), why
    t = json.loads(out.read_text())["throughput"]
    runs = t["runs"]
    assert [runs[c]["exit_code"] for c in ("decode_only", "plain_script", "strong_script", "breakwater")] == [0] * 4
    strong = runs["strong_script"]
    # The strong script decodes about what the decode-only run does (pyais's IterMessages joins
    # fragments a little differently from the plain script's own framing: 15,286 vs 15,284
    # here), and its tables hold every valid position and static report it counted; Redis one
    # hash per vessel with a position.
    assert abs(strong["messages"] - runs["decode_only"]["messages"]) <= 0.001 * strong["messages"]
    rows = strong["stores"]["sql_rows"]
    assert (rows["strong_positions"], rows["strong_statics"]) == (strong["positions"], strong["statics"])
    assert strong["stores"]["redis_vessel_keys"] == strong["stores"]["redis_geo_members"] > 0
    for key in ("strong_script_msgs_per_s", "ratio_vs_strong", "ratio_vs_strong_cold", "ratio_vs_plain"):
        assert t[key] is not None and t[key] > 0, key
    assert "strong script" in proc.stdout and "ratio Breakwater/strong" in proc.stdout
