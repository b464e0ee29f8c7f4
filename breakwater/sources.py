"""Where lines come from: files (plain or gzip), standard input, live TCP feeds.

All file and socket I/O of Breakwater's input lives here. A source yields raw lines as bytes;
a live source also yields None when no line arrived for a moment, so the reader can cut a
small batch by time instead of waiting for a full one.

Source specs, as given on the command line:

    path/to/file.nmea       a file; gzip is recognised by its magic bytes, not its name
    -                       standard input
    tcp://host:port         a live feed (an AIS receiver or aggregator); reconnects with
                            backoff when the connection drops
    tcp://host:port?reconnect=0   the same, ending when the peer closes the connection

A source that cannot be read to its end (a truncated gzip file, an I/O error, a feed with
reconnect=0 that is refused or reset) raises SourceError from `lines`, after the lines it
did read: the reader counts those, and the job's summary says what was not read.
"""

from __future__ import annotations

import gzip
import io
import logging
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import parse_qs, urlsplit

from breakwater.errors import SourceError

if TYPE_CHECKING:
    from typing_extensions import Buffer

log = logging.getLogger("breakwater.sources")

GZIP_MAGIC = b"\x1f\x8b"
_READ_SIZE = 1 << 16
# What reading a file or a pipe raises when it cannot go on: I/O errors, a gzip stream cut
# short (EOFError) or corrupt (zlib.error; gzip.BadGzipFile is an OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error)


class Source(Protocol):
    name: str
    live: bool  # True for feeds that never end on their own

    @property
    def connected(self) -> bool: ...

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        """Raw lines until the end of the source or until `stop` is set; SourceError when
        the source cannot be read to its end (after yielding every line it could read)."""
        ...


class FileSource:
    """A file read line by line; `name` is the path as given."""

    live = False
    connected = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise SourceError(f"{self.name}: no such file")

    def _open(self) -> BinaryIO:
        with open(self.path, "rb") as probe:
            magic = probe.read(2)
        if magic == GZIP_MAGIC:
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return open(self.path, "rb", buffering=_READ_SIZE)

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        try:
            with self._open() as stream:
                yield from stream
        except _READ_ERRORS as e:
            raise SourceError(f"{self.name}: not read to its end: {e}") from e


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were read to look at them: they come first again.

    Reads return what the stream has (`read1`), so lines on a live pipe are not held back
    until a buffer fills."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n], self._head = self._head[:n], self._head[n:]
            return n
        read1 = getattr(self._rest, "read1", self._rest.read)
        data: bytes = read1(len(view))
        view[: len(data)] = data
        return len(data)


def _sniffed(stream: BinaryIO) -> BinaryIO:
    """`stream` to be read line by line, decompressed when it starts with gzip's magic bytes."""
    head = stream.read(len(GZIP_MAGIC))
    raw = _Prefixed(head, stream)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return io.BufferedReader(raw, _READ_SIZE)


class StdinSource:
    """Standard input, plain or gzip (recognised by content, as a file is)."""

    live = False
    connected = False
    name = "stdin"

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        try:
            yield from _sniffed(sys.stdin.buffer)
        except _READ_ERRORS as e:
            raise SourceError(f"{self.name}: not read to its end: {e}") from e


class TcpFeed:
    """A live NMEA feed over TCP. Yields None every `idle_s` without data, reconnects after
    `backoff_s` (doubling up to `max_backoff_s`) when the connection drops or is refused.

    With `reconnect=False` the feed ends when the peer closes the connection; a refused
    connection or one that breaks is a SourceError, since the feed was not read to its end."""

    live = True

    def __init__(
        self,
        host: str,
        port: int,
        *,
        reconnect: bool = True,
        idle_s: float = 0.25,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.name = f"tcp://{host}:{port}"
        self.reconnect = reconnect
        self.idle_s = idle_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        delay = self.backoff_s
        while not stop.is_set():
            step = "cannot connect"
            try:
                with socket.create_connection((self.host, self.port), timeout=5.0) as sock:
                    sock.settimeout(self.idle_s)
                    self._connected = True
                    step = "connection lost"
                    delay = self.backoff_s
                    log.info("%s: connected", self.name)
                    yield from self._read(sock, stop)
            except OSError as e:
                if not self.reconnect:
                    raise SourceError(f"{self.name}: not read to its end: {step}: {e}") from e
                log.warning("%s: %s: %s", self.name, step, e)
            finally:
                self._connected = False
            if not self.reconnect:
                return
            yield None
            stop.wait(delay)
            delay = min(delay * 2, self.max_backoff_s)

    def _read(self, sock: socket.socket, stop: threading.Event) -> Iterator[bytes | None]:
        pending = b""
        while not stop.is_set():
            try:
                chunk = sock.recv(_READ_SIZE)
            except TimeoutError:
                yield None
                continue
            if not chunk:
                if pending:
                    yield pending
                log.info("%s: closed by the peer", self.name)
                return
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete


def open_source(spec: str) -> Source:
    """A source from its command-line spec; SourceError if it cannot be used."""
    if spec == "-":
        return StdinSource()
    if spec.startswith("tcp://"):
        parts = urlsplit(spec)
        if not parts.hostname or not parts.port:
            raise SourceError(f"{spec}: a feed needs tcp://host:port")
        reconnect = parse_qs(parts.query).get("reconnect", ["1"])[0] not in ("0", "false", "no")
        return TcpFeed(parts.hostname, parts.port, reconnect=reconnect)
    return FileSource(spec)


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """True once something accepts connections on host:port (used by tests and tools)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
