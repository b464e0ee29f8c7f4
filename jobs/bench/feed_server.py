"""Live feeds for the soak and stress scenarios: a TCP server per feed, on 127.0.0.1 and a
free port, that replays a part of the bench corpus to the one ingest job that connects.

A feed sends whole lines only, so every line it counts as sent is a line the job can count as
read. Paced (`rate_per_s`), it sends what is due every `tick_s`; unpaced (None), it sends
chunks as fast as the socket takes them, and `sendall` blocking is the job's backpressure
reaching the sender. When its time is up it stops sending but keeps the connection open: the
job is stopped by SIGTERM, not by the feed ending.

    parts = split_corpus(corpus, 2, tmp)          # one file per feed, cut at message starts
    servers = [FeedServer(p, rate_per_s=2500) for p in parts]
    ...  # the job connects to tcp://127.0.0.1:<server.port>?reconnect=0
    for s in servers: s.go(deadline)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from itertools import islice
from pathlib import Path

TICK_S = 0.02  # a paced feed sends what is due every 20 ms
CHUNK_LINES = 500  # an unpaced feed's sendall size
MAX_DEBT_S = 1.0  # a paced feed never makes up more than a second of a stall at once


class Pacer:
    """How many lines are due at time `now` for a steady rate: rate x elapsed, less what was
    sent. A stall (the sender starved of CPU, or blocked by the receiver) is made up at most
    `max_debt_s` at a time; the debt beyond that is forgiven, so the achieved rate, counted
    from the lines actually sent, shows the stall instead of a burst hiding it."""

    def __init__(self, rate_per_s: float, start: float, max_debt_s: float = MAX_DEBT_S) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.start = start
        self.max_debt = max(1, int(rate_per_s * max_debt_s))
        self.sent = 0
        self.forgiven = 0  # lines owed that were never sent: the stalls' cost

    def due(self, now: float) -> int:
        owed = int(self.rate_per_s * (now - self.start)) - self.sent
        if owed > self.max_debt:
            self.forgiven += owed - self.max_debt
            self.start += (owed - self.max_debt) / self.rate_per_s
            owed = self.max_debt
        return max(0, owed)

    def record(self, lines: int) -> None:
        self.sent += lines


class PacedLines:
    """A file's lines in chunks, as a feed sends them: every TICK_S what is due at
    `rate_per_s` (None: CHUNK_LINES at once, as fast as they are taken), until the deadline
    or `closing`. `ran_out` is set when the file ended first; `forgiven` counts the lines a
    stall cost (`Pacer`)."""

    def __init__(self, path: Path, rate_per_s: float | None, clock: Callable[[], float]) -> None:
        self.path, self.rate_per_s, self.clock = path, rate_per_s, clock
        self.ran_out = False
        self.forgiven = 0

    def chunks(self, deadline: float, closing: threading.Event) -> Iterator[list[bytes]]:
        pacer = None if self.rate_per_s is None else Pacer(self.rate_per_s, self.clock())
        with open(self.path, "rb") as lines:
            while not closing.is_set() and self.clock() < deadline:
                n = CHUNK_LINES if pacer is None else pacer.due(self.clock())
                if n == 0:
                    time.sleep(TICK_S)
                    continue
                chunk = list(islice(lines, n))
                if not chunk:
                    self.ran_out = True
                    return
                yield chunk  # the caller sends it before the next is due
                if pacer is not None:
                    pacer.record(len(chunk))
                    self.forgiven = pacer.forgiven


def _starts_a_message(line: bytes) -> bool:
    """False for the second and later sentences of a multi-sentence AIS message: a corpus is
    cut between feeds only where no message would be split across two of them."""
    sentence = line.rsplit(b"\\", 1)[-1] if line.startswith(b"\\") else line
    if not sentence.startswith(b"!"):
        return True
    fields = sentence.split(b",", 3)
    return len(fields) < 3 or fields[2] in (b"1", b"")


def split_corpus(corpus: Path, parts: int, out_dir: Path) -> list[Path]:
    """The corpus in `parts` files of about the same size, each cut where a message starts."""
    size = corpus.stat().st_size
    paths = [out_dir / f"{corpus.stem}-feed{i}.nmea" for i in range(parts)]
    with open(corpus, "rb") as src:
        index = 0
        out = open(paths[0], "wb")  # noqa: SIM115 (one file after the other, closed in the loop)
        try:
            for line in src:
                if index + 1 < parts and src.tell() > size * (index + 1) / parts and _starts_a_message(line):
                    out.close()
                    index += 1
                    out = open(paths[index], "wb")  # noqa: SIM115
                out.write(line)
        finally:
            out.close()
    return paths


class FeedThread(threading.Thread):
    """A feed's sending thread: it waits for `go(deadline)`, then sends until the deadline;
    `stop_sending` ends it early and waits for it."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._go = threading.Event()
        self._deadline = 0.0
        self._closing = threading.Event()

    def go(self, deadline: float) -> None:
        self._deadline = deadline
        self._go.set()

    def stop_sending(self) -> None:
        self._closing.set()
        self._go.set()
        self.join(timeout=5)


class FeedServer(FeedThread):
    """One live feed: takes one connection, waits for `go`, then sends its file's lines paced
    at `rate_per_s` (None: as fast as the socket takes them) until the deadline or the end of
    the file. `sent` and `sent_bytes` count lines the kernel has taken (sendall returned)."""

    def __init__(self, path: Path, *, rate_per_s: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(f"feed-{path.name}")
        self.path = path
        self.rate_per_s = rate_per_s
        self.clock = clock
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.sent = 0
        self.sent_bytes = 0
        self.ran_out = False  # the file ended before the deadline
        self.blocked_s = 0.0  # time spent inside sendall: the receiver holding the sender back
        self.forgiven = 0
        self.error: str | None = None
        self.connected = threading.Event()
        self.finished = threading.Event()
        self._conn: socket.socket | None = None

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def spec(self) -> str:
        """The job's source spec: a feed that ends, as a failure, if the connection breaks."""
        return f"tcp://127.0.0.1:{self.port}?reconnect=0"

    def close(self) -> None:
        self.stop_sending()
        if self._conn is not None:
            with suppress(OSError):
                self._conn.close()
        self.listener.close()

    def run(self) -> None:
        try:
            conn = self._accept()
            if conn is None:
                return
            self._conn = conn
            self.connected.set()
            self._go.wait()
            if not self._closing.is_set():
                self._send(conn)
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.finished.set()

    def _accept(self) -> socket.socket | None:
        while not self._closing.is_set():
            with suppress(TimeoutError):
                conn, _ = self.listener.accept()
                conn.setblocking(True)
                return conn
        return None

    def encode(self, chunk: list[bytes]) -> bytes:
        """The bytes that carry a chunk of lines: the lines as they are."""
        return b"".join(chunk)

    def _send(self, conn: socket.socket) -> None:
        paced = PacedLines(self.path, self.rate_per_s, self.clock)
        for chunk in paced.chunks(self._deadline, self._closing):
            data = self.encode(chunk)
            before = self.clock()
            conn.sendall(data)  # blocks while the job reads slower than this: backpressure
            self.blocked_s += self.clock() - before
            self.sent += len(chunk)
            self.sent_bytes += len(data)
            self.forgiven = paced.forgiven
        self.ran_out = paced.ran_out
