"""A fault-injecting TCP proxy, to take a store away in the middle of a run and bring it back.

It forwards 127.0.0.1:<port> to a target (Redis on 127.0.0.1:6379 by default) and can be
switched at any time between three modes:

    up      forward every byte both ways
    reset   reset every open connection and every new one as soon as it is accepted: the
            client sees "connection reset by peer", as when the server or a firewall drops it
    hang    keep connections open but forward nothing: the client waits for its timeout, as
            when the server is frozen or the network silently drops packets

    from jobs.fault_proxy import FaultProxy
    with FaultProxy(("127.0.0.1", 6379)) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        proxy.set_mode("reset"); ...; proxy.set_mode("up")

By hand: `python -m jobs.fault_proxy --target 127.0.0.1:6379 --port 16379`, then type up, reset
or hang (and Enter) to switch.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import struct
import sys
import threading
from typing import Literal

Mode = Literal["up", "reset", "hang"]
MODES: tuple[Mode, ...] = ("up", "reset", "hang")
_POLL_S = 0.2  # how soon a pump notices a mode change or a stop


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, zero timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def close(self, *, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if reset:
                _reset(sock)
            else:
                sock.close()


class FaultProxy:
    def __init__(
        self, target: tuple[str, int] = ("127.0.0.1", 6379), *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = target
        self.listener = socket.create_server((host, port), reuse_port=False)
        self.listener.settimeout(_POLL_S)
        self.mode: Mode = "up"
        self.accepted = 0
        self.resets = 0
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        with self._lock:
            self.mode = mode
            doomed = list(self._connections) if mode == "reset" else []
        if mode == "hang":
            self._flowing.clear()
        else:
            self._flowing.set()
        for conn in doomed:
            self.resets += 1
            conn.close(reset=True)

    def stop(self) -> None:
        self._stop.set()
        self._flowing.set()
        self._thread.join(timeout=2)
        self.listener.close()
        with self._lock:
            doomed = list(self._connections)
        for conn in doomed:
            conn.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == "reset":
                self.resets += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            conn = _Connection(client, upstream)
            with self._lock:
                self._connections.add(conn)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(conn, src, dst), daemon=True).start()

    def _pump(self, conn: _Connection, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not conn.closed.is_set() and not self._stop.is_set():
                if not self._flowing.wait(_POLL_S):
                    continue  # hang: leave the bytes in the kernel buffers
                ready, _, _ = select.select([src], [], [], _POLL_S)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):
            pass  # the other pump or set_mode closed the sockets
        finally:
            conn.close()
            with self._lock:
                self._connections.discard(conn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.fault_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:6379", help="host:port to forward to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (127.0.0.1), 0 for any")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with FaultProxy((host, int(port)), port=args.port) as proxy:
        print(f"forwarding 127.0.0.1:{proxy.port} -> {args.target}; type up, reset or hang", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command in MODES:
                proxy.set_mode(command)  # type: ignore[arg-type]
                print(f"mode {command}", flush=True)
            elif command:
                print(f"unknown mode {command!r}: up, reset or hang", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
