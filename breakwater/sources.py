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
"""

from __future__ import annotations

import gzip
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import parse_qs, urlsplit

from breakwater.errors import SourceError

log = logging.getLogger("breakwater.sources")

GZIP_MAGIC = b"\x1f\x8b"
_READ_SIZE = 1 << 16


class Source(Protocol):
    name: str
    live: bool  # True for feeds that never end on their own

    @property
    def connected(self) -> bool: ...

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]: ...


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
        except (OSError, EOFError) as e:  # a truncated gzip file ends the source, counted lines stay
            log.error("%s: reading stopped: %s", self.name, e)


class StdinSource:
    live = False
    connected = False
    name = "stdin"

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        yield from sys.stdin.buffer


class TcpFeed:
    """A live NMEA feed over TCP. Yields None every `idle_s` without data, reconnects after
    `backoff_s` (doubling up to `max_backoff_s`) when the connection drops or is refused."""

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
            try:
                with socket.create_connection((self.host, self.port), timeout=5.0) as sock:
                    sock.settimeout(self.idle_s)
                    self._connected = True
                    delay = self.backoff_s
                    log.info("%s: connected", self.name)
                    yield from self._read(sock, stop)
            except OSError as e:
                log.warning("%s: %s", self.name, e)
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
