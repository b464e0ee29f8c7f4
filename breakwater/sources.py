"""Where lines come from: files (plain or gzip), standard input, live TCP and UDP feeds.

All file and socket I/O of Breakwater's input lives here. A source yields raw lines as bytes;
a live source also yields None when no line arrived for a moment, so the reader can cut a
small batch by time instead of waiting for a full one.

Source specs, as given on the command line:

    path/to/file.nmea       a file; gzip is recognised by its magic bytes, not its name
    -                       standard input
    tcp://host:port         a live feed (an AIS receiver or aggregator); reconnects with
                            backoff and jitter when the connection drops, is refused or
                            stays silent for `silence_s`
    tcp://host:port?reconnect=0   the same, ending when the peer closes the connection
    udp://host:port         a UDP listener bound to host:port (0.0.0.0 for every interface):
                            each datagram holds whole lines; datagrams the kernel dropped
                            because the socket's buffer was full are counted
    ...?name=north          any live feed: the source's name in reports and metrics
                            (default: the spec without its query)

A live source keeps `FeedStats` (lines, last line's time, reconnects, kernel drops); the
ingest loop turns them into per-source metrics.

A source that cannot be read to its end (a truncated gzip file, an I/O error, a feed with
reconnect=0 that is refused or reset) raises SourceError from `lines`, after the lines it
did read: the reader counts those, and the job's summary says what was not read.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import random
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import parse_qs, urlsplit

from breakwater.errors import SourceError
from breakwater.framing import SourceStamp, place_key

if TYPE_CHECKING:
    from typing_extensions import Buffer

log = logging.getLogger("breakwater.sources")

GZIP_MAGIC = b"\x1f\x8b"
_READ_SIZE = 1 << 16
_STAMP_BYTES = 1 << 16
# What reading a file or a pipe raises when it cannot go on: I/O errors, a gzip stream cut
# short (EOFError) or corrupt (zlib.error; gzip.BadGzipFile is an OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass
class FeedStats:
    """What a live source knows about its own traffic; read by the ingest loop (another
    thread) for the metrics, so each field is a plain value written in one step."""

    lines: int = 0
    last_line_at: float | None = None  # time.monotonic() of the last line
    reconnects: int = 0  # connections opened after the first one
    silences: int = 0  # connections dropped because the peer sent nothing for silence_s

    def saw(self, lines: int) -> None:
        self.lines += lines
        self.last_line_at = time.monotonic()


class Source(Protocol):
    name: str
    live: bool  # True for feeds that never end on their own

    @property
    def stamp(self) -> SourceStamp | None:
        """A file's, placing its time-less messages (`framing.SourceStamp`); None otherwise."""
        ...

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
        self.stamp = self._stamp()

    def _stamp(self) -> SourceStamp:
        """The file's modification time and a key from its first 64 KiB (as stored, so a
        gzip file and its plain copy are different files, as their times are)."""
        try:
            with open(self.path, "rb") as f:
                mtime_ns = os.fstat(f.fileno()).st_mtime_ns
                return SourceStamp(mtime_ns // 1_000_000, place_key(f.read(_STAMP_BYTES)))
        except OSError as e:
            raise SourceError(f"{self.name}: cannot be read: {e}") from e

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
    stamp = None
    name = "stdin"

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        try:
            yield from _sniffed(sys.stdin.buffer)
        except _READ_ERRORS as e:
            raise SourceError(f"{self.name}: not read to its end: {e}") from e


def backoff_delays(first_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Waits between reconnection attempts: doubling from `first_s` up to `max_s`, each one
    drawn from its upper half, so feeds that dropped together do not all return together."""
    rng = rng or random.Random()
    delay = first_s
    while True:
        yield rng.uniform(delay / 2, delay)
        delay = min(delay * 2, max_s)


class TcpFeed:
    """A live NMEA feed over TCP. Yields None every `idle_s` without data; reconnects, with
    backoff and jitter (`backoff_delays`), when the connection drops or is refused, and when
    a connected peer sends nothing for `silence_s` (0: never), which is how a feed that hangs
    without closing looks.

    With `reconnect=False` the feed ends when the peer closes the connection; a refused
    connection or one that breaks is a SourceError, since the feed was not read to its end.
    Silence is not checked then: such a feed is a replay that ends by closing."""

    live = True
    stamp = None

    def __init__(
        self,
        host: str,
        port: int,
        *,
        name: str | None = None,
        reconnect: bool = True,
        idle_s: float = 0.25,
        silence_s: float = 0.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.name = name or f"tcp://{host}:{port}"
        self.reconnect = reconnect
        self.idle_s = idle_s
        self.silence_s = silence_s if reconnect else 0.0
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = FeedStats()
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        delays = backoff_delays(self.backoff_s, self.max_backoff_s)
        connections = 0
        while not stop.is_set():
            step = "cannot connect"
            try:
                with socket.create_connection((self.host, self.port), timeout=5.0) as sock:
                    sock.settimeout(self.idle_s)
                    self._connected = True
                    connections += 1
                    self.stats.reconnects = connections - 1
                    step = "connection lost"
                    delays = backoff_delays(self.backoff_s, self.max_backoff_s)
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
            stop.wait(next(delays))

    def _read(self, sock: socket.socket, stop: threading.Event) -> Iterator[bytes | None]:
        pending = b""
        heard = time.monotonic()
        while not stop.is_set():
            try:
                chunk = sock.recv(_READ_SIZE)
            except TimeoutError:
                if self.silence_s and time.monotonic() - heard >= self.silence_s:
                    self.stats.silences += 1
                    log.warning("%s: nothing received for %.0f s: reconnecting", self.name, self.silence_s)
                    return
                yield None
                continue
            heard = time.monotonic()
            if not chunk:
                if pending:
                    self.stats.saw(1)
                    yield pending
                log.info("%s: closed by the peer", self.name)
                return
            pending += chunk
            *complete, pending = pending.split(b"\n")
            if complete:
                self.stats.saw(len(complete))
                yield from complete


class UdpListener:
    """A UDP socket bound to host:port that receives NMEA datagrams, each of one or more
    whole lines (what receivers and forwarders send). Yields None every `idle_s` without a
    datagram. UDP has no backpressure: when the reader falls behind, the kernel drops
    datagrams once the socket's receive buffer (`buffer_bytes`) is full; `dropped()` counts
    them (Linux), so a loss is never silent."""

    live = True
    stamp = None

    def __init__(
        self, host: str, port: int, *, name: str | None = None, idle_s: float = 0.25, buffer_bytes: int = 8 << 20
    ) -> None:
        self.host, self.port = host, port
        self.name = name or f"udp://{host}:{port}"
        self.idle_s = idle_s
        self.buffer_bytes = buffer_bytes
        self.stats = FeedStats()
        self._bound = False
        self._inode: int | None = None

    @property
    def connected(self) -> bool:
        return self._bound

    def lines(self, stop: threading.Event) -> Iterator[bytes | None]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_bytes)
            try:
                sock.bind((self.host, self.port))
            except OSError as e:
                raise SourceError(f"{self.name}: cannot listen on {self.host}:{self.port}: {e}") from e
            sock.settimeout(self.idle_s)
            self._inode = os.fstat(sock.fileno()).st_ino
            self._bound = True
            log.info("%s: listening", self.name)
            try:
                while not stop.is_set():
                    try:
                        datagram = sock.recv(65535)
                    except TimeoutError:
                        yield None
                        continue
                    lines = [line for line in datagram.split(b"\n") if line.strip()]
                    self.stats.saw(len(lines))
                    yield from lines
            finally:
                self._bound = False

    def dropped(self) -> int:
        """Datagrams the kernel dropped for this socket (its `drops` in /proc/net/udp); 0
        where that is not known."""
        return udp_drops(self._inode) if self._inode is not None else 0


def udp_drops(inode: int) -> int:
    """The kernel's drop count of the UDP socket with this inode (Linux /proc/net/udp and
    udp6: the inode is the 10th field, drops the last)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 12 and fields[9] == str(inode):
                return int(fields[-1])
    return 0


def _flag(query: dict[str, list[str]], key: str, default: bool) -> bool:
    if key not in query:
        return default
    return query[key][0] not in ("0", "false", "no")


def open_source(spec: str, *, silence_s: float = 0.0) -> Source:
    """A source from its command-line spec; SourceError if it cannot be used. `silence_s` is
    how long a connected TCP feed may stay silent before it is reconnected (0: never)."""
    if spec == "-":
        return StdinSource()
    for scheme in ("tcp", "udp"):
        if spec.startswith(f"{scheme}://"):
            parts = urlsplit(spec)
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or not port:
                raise SourceError(f"{spec}: a feed needs {scheme}://host:port")
            query = parse_qs(parts.query)
            name = query.get("name", [None])[0] or f"{scheme}://{parts.netloc}"
            if scheme == "udp":
                return UdpListener(parts.hostname, port, name=name)
            reconnect = _flag(query, "reconnect", True)
            return TcpFeed(parts.hostname, port, name=name, reconnect=reconnect, silence_s=silence_s)
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
