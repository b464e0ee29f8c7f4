"""Many live feeds in one job, run as a user runs it: `python -m jobs.ingest` in a clean
environment with two TCP feeds and a UDP feed, each named. One TCP server drops its
connection half way, the other stalls (connected, silent) half way; both send the rest on the
connection the job opens again. The job runs until SIGTERM (what `ray job stop` sends), then
finishes what is in flight, prints its summary and exits 0. Every line that reached a socket
is read, each feed's metrics are on the Prometheus endpoint under its name."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.shell import VENV_BIN, clean_env, owned_processes, processes_of
from tests.conftest import read_lines
from tests.integration.test_resilience import wait_until


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TwoPartServer:
    """Serves `lines` in two halves over two connections: after the first half it either
    closes the connection (`drop`) or keeps it open and silent (`stall`) until the job gives
    up on it and connects again."""

    def __init__(self, lines: list[bytes], mode: str) -> None:
        self.lines, self.mode = lines, mode
        self.server = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.getsockname()[1])

    def _serve(self) -> None:
        half = len(self.lines) // 2
        first, _ = self.server.accept()
        self.connections += 1
        first.sendall(b"".join(line + b"\n" for line in self.lines[:half]))
        if self.mode == "drop":
            first.close()
        second, _ = self.server.accept()  # a stalled connection is given up by the job
        self.connections += 1
        first.close()
        second.sendall(b"".join(line + b"\n" for line in self.lines[half:]))
        self.done.set()
        self.second = second  # kept open: a live feed that goes on


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, source label) -> value, of the per-source samples on the endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/prometheus", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {
        (s.name, s.labels["source"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "source" in s.labels
    }


def test_named_tcp_and_udp_feeds_that_drop_and_stall_lose_nothing_and_stop_on_sigterm(
    tmp_path: Path, kystverket_path: Path
) -> None:
    lines = read_lines(kystverket_path)
    dropping, stalling = TwoPartServer(lines, "drop"), TwoPartServer(lines, "stall")
    udp_port, metrics_port = free_port(socket.SOCK_DGRAM), free_port()
    home = tmp_path / "home"
    home.mkdir()
    summary_path = tmp_path / "summary.json"
    command = [
        str(VENV_BIN / "python"), "-m", "jobs.ingest",
        f"tcp://127.0.0.1:{dropping.port}?name=north",
        f"tcp://127.0.0.1:{stalling.port}?name=stalled",
        f"udp://127.0.0.1:{udp_port}?name=east",
        "--database-url", f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "--dlq-path", str(tmp_path / "dead-letters.sqlite3"),
        "--metrics-port", str(metrics_port),
        "--set", "feed_silence_s=2",
        "--set", "flush_interval_ms=100",
        "--summary-json", str(summary_path),
        "--no-progress",
    ]  # fmt: skip
    with owned_processes(home):
        job = subprocess.Popen(
            command,
            cwd=Path(__file__).resolve().parents[2],
            env=clean_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: scrape(metrics_port).get(("ais_source_up", "east")) == 1, 300, "the UDP feed listening")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for i in range(0, len(lines), 4):
                    sender.sendto(b"".join(line + b"\r\n" for line in lines[i : i + 4]), ("127.0.0.1", udp_port))
            wait_until(lambda: dropping.done.is_set() and stalling.done.is_set(), 120, "both halves served")

            def every_line_done() -> dict[tuple[str, str], float] | None:
                seen = scrape(metrics_port)
                done = [
                    (seen.get(("ais_source_lines_total", n)), seen.get(("ais_source_messages_total", n)))
                    for n in ("north", "stalled", "east")
                ]
                return seen if done == [(len(lines), 876)] * 3 else None

            seen = wait_until(every_line_done, 120, "every line of every feed read and written")
            # Two of the three feeds' copies of each report are receptions, once the writers have
            # shipped their counts.
            wait_until(
                lambda: (
                    sum(
                        scrape(metrics_port).get(("ais_fused_copies_total", n), 0) for n in ("north", "stalled", "east")
                    )
                    == 2 * 876
                ),
                60,
                "the fused copies counted",
            )
            # `breakwater sources`, as an operator runs it beside the job.
            shown = subprocess.run(
                [str(VENV_BIN / "breakwater"), "--json", "sources", "--url", f"http://127.0.0.1:{metrics_port}"],
                env=clean_env(home), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            shown_json = json.loads(shown.stdout)
            listed = {row["source"]: row for row in shown_json["feeds"]}
            # The three feeds are three receivers (the capture names no station); each heard
            # every transmission at the same time, so every clock check passed.
            receivers = {row["receiver"]: row for row in shown_json["receivers"]}
            assert sorted(receivers) == ["east", "north", "stalled"]
            assert {(r["state"], r["failed"]) for r in receivers.values()} == {("trusted", 0)}
            assert all(r["checks"] >= 876 for r in receivers.values())
            assert sorted(listed) == ["east", "north", "stalled"]
            # Every line and message of each feed; up or down as the feed is at that moment (the
            # feeds that went silent are dropped and dialled again every feed_silence_s).
            shown_counts = [(r["source"], r["lines"], r["messages"]) for r in listed.values()]
            assert shown_counts == [(name, len(lines), 876) for name in ("east", "north", "stalled")]
            assert {r["state"] for r in listed.values()} <= {"up", "down"}
            assert sum(r["fused_copies"] for r in listed.values()) == 2 * 876  # two feeds' copies of each
            # The job's own local cluster serves no Ray dashboard (ray_dashboard is off): Ray
            # still runs a dashboard process without its web server, which takes none of the
            # ports a dashboard would (8265 and the 50 Ray tries after it).
            processes = processes_of(home)
            assert any("raylet" in " ".join(p.cmdline()) for p in processes)
            listening = {c.laddr.port for p in processes for c in p.net_connections() if c.status == psutil.CONN_LISTEN}
            assert metrics_port in listening  # the check sees the job's listeners
            assert sorted(port for port in listening if 8265 <= port <= 8315) == []
            job.send_signal(signal.SIGTERM)
            out, err = job.communicate(timeout=180)
        finally:
            if job.poll() is None:
                job.kill()
    assert job.returncode == 0, err[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["lines"]["read"] == 3 * len(lines)
    assert summary["lines"]["read"] == summary["lines"]["decoded"] + summary["lines"]["rejected"]
    db = summary["sinks"]["db"]
    # The capture's tag blocks carry receive times: the three feeds' copies of a transmission
    # are one report, heard by three receivers (named by their feeds, as the capture names no
    # station): 876 reports and 2 x 876 receptions of them.
    assert summary["fused_copies"] == 2 * 876
    assert db["received"] == 3 * 876 and (db["written"], db["duplicates"], db["dead_letter_queue"]) == (3 * 876, 0, 0)
    assert "stopped on request" in out
    assert (dropping.connections, stalling.connections) == (2, 2)
    # The metrics say the same: a reconnect after the drop, a silence and a reconnect after
    # the stall (at least: every feed_silence_s of quiet after the second halves adds more).
    assert seen[("ais_source_reconnects_total", "north")] >= 1
    assert seen[("ais_source_silences_total", "stalled")] >= 1
    assert seen[("ais_source_reconnects_total", "stalled")] >= 1
    assert seen.get(("ais_source_dropped_total", "east"), 0) == 0  # counted when the kernel drops
    for name in ("north", "stalled", "east"):
        assert seen[("ais_source_rejected_lines_total", name)] == 2
