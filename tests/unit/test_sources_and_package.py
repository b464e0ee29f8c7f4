"""Sources (files, gzip by content, live TCP feeds) and the shape of the package."""

from __future__ import annotations

import gzip
import io
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from breakwater.errors import SourceError
from breakwater.sources import GZIP_MAGIC, FileSource, StdinSource, TcpFeed, open_source

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


def read_until_error(lines: Iterator[bytes | None]) -> tuple[list[bytes], SourceError | None]:
    """The lines a source gave, and the SourceError it ended with (None: read to its end)."""
    got: list[bytes] = []
    try:
        for line in lines:
            if line is not None:
                got.append(line)
    except SourceError as e:
        return got, e
    return got, None


def complete_lines(truncated_gzip: bytes) -> list[bytes]:
    """What zlib alone can decompress of a cut gzip stream, in whole lines: the oracle."""
    data = zlib.decompressobj(wbits=31).decompress(truncated_gzip)
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def test_a_truncated_gzip_file_gives_every_whole_line_then_says_it_was_cut(tmp_path: Path) -> None:
    packed = gzip.compress(b"".join(LINES) * 1000, mtime=0)
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    got, error = read_until_error(FileSource(path).lines(threading.Event()))
    assert got == complete_lines(packed[: len(packed) // 2])
    assert 0 < len(got) < 2000
    assert str(error) == (
        f"{path}: not read to its end: Compressed file ended before the end-of-stream marker was reached"
    )


def test_a_corrupt_gzip_file_says_so(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(b"".join(LINES) * 1000, mtime=0))
    packed[40:80] = bytes(b ^ 0xFF for b in packed[40:80])
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(packed))
    got, error = read_until_error(FileSource(path).lines(threading.Event()))
    assert got == []
    assert isinstance(error, SourceError) and isinstance(error.__cause__, zlib.error)
    assert str(error).startswith(f"{path}: not read to its end: Error -3 while decompressing data")


def test_standard_input_is_recognised_by_content_as_a_file_is(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = b"".join(LINES)
    given_and_read = [
        (gzip.compress(plain), LINES),
        (plain, LINES),
        (b"", []),  # inputs shorter than the gzip magic are read as they are
        (b"\n", [b"\n"]),
        (GZIP_MAGIC[:1], [GZIP_MAGIC[:1]]),
    ]
    for given, lines in given_and_read:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(given)))
        assert read(StdinSource()) == lines, given


def test_a_truncated_gzip_stream_on_standard_input_says_it_was_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    packed = gzip.compress(b"".join(LINES) * 1000, mtime=0)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(packed[: len(packed) // 2])))
    got, error = read_until_error(StdinSource().lines(threading.Event()))
    assert got == complete_lines(packed[: len(packed) // 2])
    assert str(error) == "stdin: not read to its end: Compressed file ended before the end-of-stream marker was reached"


def test_a_feed_without_reconnect_that_is_refused_says_so() -> None:
    with socket.socket() as closed:  # bound, never listening: a connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        feed = open_source(f"tcp://127.0.0.1:{port}?reconnect=0")
        got, error = read_until_error(feed.lines(threading.Event()))
    assert got == []
    assert str(error) == (
        f"tcp://127.0.0.1:{port}: not read to its end: cannot connect: [Errno 111] Connection refused"
    )


def test_a_feed_without_reconnect_that_is_reset_gives_its_lines_then_says_so() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    first_line_read = threading.Event()

    def serve_then_reset() -> None:
        conn, _ = server.accept()
        conn.sendall(LINES[0] + b"$GPGGA,")  # the second line never completes
        first_line_read.wait(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # with linger 0: a reset, not an orderly close

    threading.Thread(target=serve_then_reset, daemon=True).start()
    lines = TcpFeed("127.0.0.1", port, reconnect=False, idle_s=0.05).lines(threading.Event())
    first = next(line for line in lines if line is not None)
    first_line_read.set()
    rest, error = read_until_error(lines)
    server.close()
    assert (first, rest) == (LINES[0].rstrip(b"\n"), [])
    assert str(error) == (
        f"tcp://127.0.0.1:{port}: not read to its end: connection lost: [Errno 104] Connection reset by peer"
    )


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
