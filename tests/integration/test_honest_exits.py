"""Honest exits of the real ingest job on a local Ray cluster: a source that could not be read
to its end makes the job exit 1 and say so, with every line it did read accounted for; a gzip
stream on standard input is read like a gzip file."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Job
from tests.unit.test_sources_and_package import complete_lines

GZIP_CUT = "Compressed file ended before the end-of-stream marker was reached"
INCOMPLETE = "INCOMPLETE: every line read is accounted for, but input is missing or could not be read"


def test_a_truncated_gzip_file_exits_1_with_every_line_read_accounted_for(
    sqlite_job: Job, kystverket_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packed = gzip.compress(kystverket_path.read_bytes(), mtime=0)
    cut = tmp_path / "cut.nmea.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    whole_lines = complete_lines(cut.read_bytes())
    head = tmp_path / "head.nmea"  # the same lines, plain and complete: what the job should count
    head.write_bytes(b"".join(whole_lines))

    summary = sqlite_job.ingest(cut, expect=1)
    printed = capsys.readouterr().out.splitlines()
    error = f"{cut}: not read to its end: {GZIP_CUT}"
    assert f"Breakwater ingest {summary['job_id']}: {INCOMPLETE}" in printed
    assert f"  ERROR source {error} (after {len(whole_lines):,} lines)" in printed
    assert summary["ok"] is False
    assert summary["errors"] == [f"source {error} (after {len(whole_lines):,} lines)"]
    assert summary["sources"] == [{"name": str(cut), "lines_read": len(whole_lines), "ended": "failed", "error": error}]
    assert summary["lines"]["read"] == len(whole_lines) > 0

    oracle = sqlite_job.ingest(head)
    assert oracle["ok"] is True
    for key in ("lines", "rejected", "messages_decoded", "reports"):
        assert summary[key] == oracle[key], key
    assert summary["sinks"]["db"]["written"] == oracle["sinks"]["db"]["duplicates"]


def test_a_gzip_stream_on_standard_input_is_read_like_a_gzip_file(
    sqlite_job: Job, kystverket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = gzip.compress(kystverket_path.read_bytes())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(packed)))
    summary = sqlite_job.ingest("-")
    assert summary["lines"] == {"read": 1_000, "decoded": 998, "rejected": 2, "pending": 0}
    assert summary["messages_decoded"] == 876
    assert summary["ok"] and summary["errors"] == []
    assert summary["sources"] == [{"name": "stdin", "lines_read": 1_000, "ended": "end", "error": None}]


def test_an_empty_input_exits_1_and_says_so(sqlite_job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    summary = sqlite_job.ingest("-", expect=1)
    assert summary["errors"] == ["source stdin: no lines in it"]
    assert summary["lines"] == {"read": 0, "decoded": 0, "rejected": 0, "pending": 0}
