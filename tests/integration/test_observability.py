"""Metrics during a real ingest: the endpoint, Ray's own export, a real Prometheus server."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from prometheus_client.parser import text_string_to_metric_families

from breakwater.journal import Snapshots
from breakwater.metrics_http import INSTANCE_HEADER
from tests.conftest import read_lines
from tests.integration.conftest import Job
from tests.integration.test_resilience import Feed, Running, actor, wait_until

ROOT = Path(__file__).resolve().parents[2]
QUICK = ("--set", "metrics_push_interval_s=0.2", "--set", "flush_interval_ms=100", "--batch-lines", "2000")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoint(job: Job) -> dict[str, Any]:
    return dict(ray.get(actor(job, "metrics").endpoint.remote()))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    return scrape_instance(port)[1]


def scrape_instance(port: int) -> tuple[str, Samples]:
    """The samples, and which process served them (the metrics actor's worker id)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/prometheus", timeout=5) as response:
        text = response.read().decode()
        instance = response.headers[INSTANCE_HEADER]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return str(instance), samples


def expected_from_summary(summary: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The counters the endpoint must show for one job, taken from its summary."""
    want = {
        ("ais_lines_read_total", ()): summary["lines"]["read"],
        ("ais_messages_processed_total", ()): summary["messages_decoded"],
    }
    for reason, n in summary["rejected"].items():
        want[("ais_lines_rejected_total", (("reason", reason),))] = n
    for kind, n in summary["reports"].items():
        want[("ais_reports_total", (("kind", kind),))] = n
    for sink, s in summary["sinks"].items():
        want[("ais_sink_records_total", (("outcome", "written"), ("sink", sink)))] = s["written"]
        want[("ais_duplicates_total", (("sink", sink),))] = s["duplicates"]
    return want


def test_endpoint_counters_agree_with_the_job_summary(sqlite_job: Job, kystverket_path: Path, amsa_path: Path) -> None:
    feed = Feed(read_lines(kystverket_path) + read_lines(amsa_path))
    running = Running(sqlite_job, feed.url, QUICK)
    feed.send(0.5)
    port = wait_until(lambda: endpoint(sqlite_job).get("port"), 60, "the metrics endpoint")
    during = wait_until(lambda: (v := scrape(port))[("ais_messages_processed_total", ())] > 0 and v, 60, "counts")
    assert during[("ais_lines_read_total", ())] <= feed.sent
    feed.close()
    summary = running.join()
    want = expected_from_summary(summary)

    def agrees() -> bool:
        seen = scrape(port)  # a labelled counter never incremented has no sample yet: 0
        return all(seen.get(key, 0.0) == value for key, value in want.items())

    wait_until(agrees, 30, "the endpoint to show the summary's numbers")
    seen = scrape(port)
    assert seen[("ais_end_to_end_latency_seconds_count", ())] == sum(summary["reports"].values())
    assert seen[("circuit_breaker_state", (("breaker", "db"),))] == 0
    assert seen[("ais_latency_p99_ms", ())] > 0


def test_counters_survive_a_restart_of_the_metrics_actor(sqlite_job: Job, kystverket_path: Path) -> None:
    port = free_port()
    summary = sqlite_job.ingest(kystverket_path, extra=("--metrics-port", str(port), *QUICK))
    messages = summary["messages_decoded"]
    wait_until(lambda: scrape(port)[("ais_messages_processed_total", ())] == messages, 30, "the final counts")
    snapshots = Snapshots(sqlite_job.dlq_path)

    def saved() -> bool:
        snapshot = snapshots.load("metrics", "totals") or {}
        return any(n == "ais_messages_processed" and v == messages for n, _, v in snapshot.get("counters", []))

    wait_until(saved, 30, "a snapshot with the final counts")
    old = endpoint(sqlite_job)["worker_id"]
    ray.kill(actor(sqlite_job, "metrics"), no_restart=False)
    # ray.kill returns at once: for a moment the old process still answers, or cuts a reply
    # short as it dies. Only a reply that names the restarted actor shows restored counters.
    new = wait_until(lambda: (w := endpoint(sqlite_job)["worker_id"]) != old and w, 60, "the restarted actor")

    def served_by_the_new_actor() -> Samples | None:
        try:
            instance, samples = scrape_instance(port)
        except (OSError, http.client.HTTPException):  # the old actor's connection torn down
            return None
        return samples if instance == new else None

    samples = wait_until(served_by_the_new_actor, 60, "a reply from the restarted actor")
    assert samples[("ais_messages_processed_total", ())] == messages


def _scrape_or_none(port: int) -> Samples | None:
    try:
        return scrape(port)
    except (OSError, http.client.HTTPException):
        return None


def test_status_view_reads_the_endpoint(
    sqlite_job: Job, kystverket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from breakwater.cli import main

    port = free_port()
    summary = sqlite_job.ingest(kystverket_path, extra=("--metrics-port", str(port), *QUICK))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: scrape(port)[("ais_messages_processed_total", ())] == summary["messages_decoded"], 30, "counts")
    capsys.readouterr()
    assert main(["status", "--once", "--url", url]) == 0
    view = capsys.readouterr().out
    assert f"{summary['messages_decoded']:,}" in view and "CLOSED" in view
    assert main(["--json", "status", "--once", "--url", url]) == 0
    assert json.loads(capsys.readouterr().out)["ais_messages_processed"] == summary["messages_decoded"]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """A real Prometheus server on loopback, started with deploy/prometheus.yml."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus server is not installed: make test installs Debian's prometheus package")
    processes: list[subprocess.Popen[bytes]] = []

    def start(breakwater_port: int, ray_export_port: int) -> str:
        config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["rule_files"] = [str(ROOT / "deploy" / "alerts.yml")]
        sd_file = tmp_path / "ray-targets.json"
        sd_file.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": [f"127.0.0.1:{ray_export_port}"]}]))
        for job in config["scrape_configs"]:
            job["scrape_interval"] = "1s"
            if job["job_name"] == "breakwater":
                job["static_configs"] = [{"targets": [f"127.0.0.1:{breakwater_port}"]}]
            else:
                job["file_sd_configs"] = [{"files": [str(sd_file)]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return list(json.load(response)["data"]["result"])
    except OSError:
        return []


def value(base: str, promql: str) -> float | None:
    result = query(base, promql)
    return float(result[0]["value"][1]) if result else None


def test_a_real_prometheus_scrapes_a_running_ingest(
    sqlite_job: Job, kystverket_path: Path, amsa_path: Path, prometheus: Any
) -> None:
    port = free_port()
    feed = Feed(read_lines(kystverket_path) + read_lines(amsa_path))
    running = Running(sqlite_job, feed.url, ("--metrics-port", str(port), *QUICK))
    feed.send(0.3)
    wait_until(lambda: _scrape_or_none(port), 60, "the metrics endpoint")
    ray_export_port = ray.nodes()[0]["MetricsExportPort"]
    base = prometheus(port, ray_export_port)
    wait_until(lambda: value(base, 'up{job="breakwater"}') == 1, 60, "Prometheus to scrape Breakwater")
    seen_while_running = wait_until(lambda: value(base, "ais_messages_processed_total"), 60, "a first value")
    feed.close()
    summary = running.join()
    messages = summary["messages_decoded"]
    assert 0 < seen_while_running <= messages
    wait_until(lambda: value(base, "ais_messages_processed_total") == messages, 60, "the final count in Prometheus")
    # The same number through Ray's own per-node export, from this job's metrics actor.
    worker = endpoint(sqlite_job)["worker_id"]
    wait_until(
        lambda: value(base, f'sum(ray_ais_messages_processed_total{{WorkerId="{worker}"}})') == messages,
        90,
        "Ray's export to carry the count",
    )
