"""Sources (files, gzip by content, live TCP feeds) and the shape of the package."""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from breakwater.errors import SourceError
from breakwater.sources import FileSource, TcpFeed, open_source

ROOT = Path(__file__).resolve().parents[2]
LINES = [b"!AIVDM,1,1,,A,17P@<J?P00blFWmjG@5a5?v62<10,0*27\n", b"$GPGGA,1*00\n"]


def read(source: object) -> list[bytes]:
    return [line for line in source.lines(threading.Event()) if line is not None]  # type: ignore[attr-defined]


def test_plain_and_gzip_files_are_told_apart_by_content(tmp_path: Path) -> None:
    plain = tmp_path / "feed.gz"  # a misleading name: the content decides
    plain.write_bytes(b"".join(LINES))
    packed = tmp_path / "feed.nmea"
    packed.write_bytes(gzip.compress(b"".join(LINES)))
    assert read(FileSource(plain)) == LINES
    assert read(FileSource(packed)) == LINES


def test_a_truncated_gzip_file_ends_the_source_without_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(b"".join(LINES) * 1000)[:-30])
    assert len(read(FileSource(path))) < 2000


def test_a_missing_file_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source("/nonexistent/feed.nmea")
    with pytest.raises(SourceError, match="tcp://host:port"):
        open_source("tcp://nohost")


def test_a_live_feed_yields_lines_and_idle_ticks() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        conn.sendall(LINES[0] + LINES[1][:5])  # a line split across two sends
        conn.sendall(LINES[1][5:])
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    feed = open_source(f"tcp://127.0.0.1:{port}?reconnect=0")
    assert isinstance(feed, TcpFeed) and feed.live
    got = list(feed.lines(threading.Event()))
    server.close()
    assert [x for x in got if x is not None] == [LINES[0].rstrip(b"\n"), LINES[1].rstrip(b"\n")]


def test_importing_breakwater_does_not_import_ray() -> None:
    code = "import sys, breakwater, breakwater.cli, breakwater.client; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


def test_only_actors_and_jobs_import_ray() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "breakwater").rglob("*.py")
        if any(line.startswith(("import ray", "from ray")) for line in path.read_text().splitlines())
    ]
    assert offenders == []


def test_the_package_is_typed() -> None:
    assert (ROOT / "breakwater" / "py.typed").exists()
