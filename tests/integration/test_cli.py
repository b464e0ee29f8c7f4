"""The `breakwater` command against a real ingest: queries and operations, as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from breakwater.cli import main
from tests.integration.conftest import Job
from tests.integration.test_ingest_embedded import independent_tracks


def run(job: Job, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> Any:
    store = job.cli_flags()
    capsys.readouterr()
    assert main([*store, "--json", *args]) == code
    out = capsys.readouterr().out
    return json.loads(out) if code == 0 else out


def test_queries(sqlite_job: Job, kystverket_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = sqlite_job.ingest(kystverket_path)
    tracks = independent_tracks(kystverket_path)
    mmsi = max(tracks, key=lambda m: len(tracks[m]))
    counts = run(sqlite_job, capsys, "counts")
    assert counts["positions"] == summary["reports"]["position"]
    latest = run(sqlite_job, capsys, "latest", str(mmsi))
    assert (latest["lat"], latest["lon"]) == (tracks[mmsi][-1][2], tracks[mmsi][-1][3])
    track = run(sqlite_job, capsys, "track", str(mmsi), "--start", "2019-08-07T22:59:58", "--limit", "3")
    assert [(p["lat"], p["lon"]) for p in track] == [(lat, lon) for _, _, lat, lon in tracks[mmsi][:3]]
    near = run(sqlite_job, capsys, "nearby", str(latest["lat"]), str(latest["lon"]), "--radius-km", "0.5")
    assert mmsi in {v["mmsi"] for v in near}
    boxed = run(
        sqlite_job,
        capsys,
        "box",
        str(latest["lat"] - 0.01),
        str(latest["lon"] - 0.01),
        str(latest["lat"] + 0.01),
        str(latest["lon"] + 0.01),
    )
    assert mmsi in {v["mmsi"] for v in boxed}
    assert run(sqlite_job, capsys, "vessel", "1") is None
    settings = run(sqlite_job, capsys, "settings")
    assert settings["namespace"] == sqlite_job.namespace


def test_operations_on_the_running_cluster(
    sqlite_job: Job, kystverket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_job.ingest(kystverket_path, extra=("--set", "admin_token=s3cret"))
    stats = run(sqlite_job, capsys, "dlq", "stats")
    assert (stats["waiting"], stats["dead"]) == (0, 0)
    breakers = run(sqlite_job, capsys, "breakers")
    assert [(b["sink"], b["state"]) for b in breakers] == [("db", "CLOSED")]
    refused = run(sqlite_job, capsys, "breaker", "db", "open", code=1)
    assert refused == ""  # the reason goes to stderr, nothing to stdout
    forced = run(sqlite_job, capsys, "--admin-token", "s3cret", "breaker", "db", "open")
    assert forced["state"] == "OPEN" and forced["forced"]
    released = run(sqlite_job, capsys, "--admin-token", "s3cret", "breaker", "db", "release")
    assert released["state"] == "CLOSED"
    assert run(sqlite_job, capsys, "dlq", "peek", "-n", "5") == []
    assert run(sqlite_job, capsys, "dlq", "retry") == {}


def test_clear_needs_yes_and_the_token(
    sqlite_job: Job, kystverket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_job.ingest(kystverket_path, extra=("--set", "admin_token=s3cret"))
    store = sqlite_job.cli_flags()
    assert main([*store, "--admin-token", "s3cret", "dlq", "clear"]) == 1
    assert "confirm" in capsys.readouterr().err
    assert main([*store, "--admin-token", "wrong", "dlq", "clear", "--yes"]) == 1
    assert "admin token" in capsys.readouterr().err
    assert main([*store, "--json", "--admin-token", "s3cret", "dlq", "clear", "--yes"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cleared": 0}
