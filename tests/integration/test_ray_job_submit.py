"""`ray job submit` against a cluster started with `ray start --head`, token auth on: the
way users run Breakwater on a cluster."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(os.sys.executable).parent / "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A head node of its own (its own temp dir and ports), stopped by killing exactly the
    processes it started: `ray stop` would stop every Ray cluster on the machine."""
    temp = Path(tempfile.mkdtemp(prefix="bwr", dir="/tmp"))  # Ray's socket paths must stay short
    dashboard = free_port()
    # As cluster.yaml does: the virtualenv first on PATH, so a job's `python` is Breakwater's.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{RAY.parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--temp-dir={temp}", f"--port={free_port()}",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats",
         # Ports of its own: the test session's cluster holds Ray's default agent ports.
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            # Ready when a job can be submitted: the job API answers before the node's agent
            # that runs jobs does ("No available agent to submit job").
            probe = subprocess.run(
                [str(RAY), "job", "submit", "--address", address, "--no-wait", "--", "true"],
                env=env,
                capture_output=True,
            )
            if probe.returncode == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the Ray head's job API did not come up: {probe.stderr.decode()[-1500:]}")
        yield address
    finally:
        head.terminate()
        head.wait(timeout=60)
        for process in psutil.process_iter(["cmdline"]):
            if any(str(temp) in part for part in process.info["cmdline"] or []):
                process.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_the_ingest_job_with_token_auth(ray_head: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    result = subprocess.run(
        [str(RAY), "job", "submit", "--address", ray_head, "--working-dir", str(ROOT), "--",
         "python", "-m", "jobs.ingest", "data/kystverket-2019-tagblock.nmea",
         "--database-url", f"sqlite:///{tmp_path / 'store.sqlite3'}", "--dlq-path", str(tmp_path / "dlq.sqlite3"),
         "--metrics-port", "0", "--summary-json", str(summary), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every line and every report is accounted for" in result.stdout
    data = json.loads(summary.read_text())
    assert data["ok"] and data["messages_decoded"] == 876
    without_token = subprocess.run(
        [str(RAY), "job", "list", "--address", ray_head],
        env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
        capture_output=True,
        timeout=120,
    )
    assert without_token.returncode != 0  # the cluster refuses a client without its token
