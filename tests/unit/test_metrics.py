"""Metric deltas, totals, Prometheus text and JSON, and the HTTP endpoint."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from breakwater.metrics import CATALOG, MetricsAggregator, MetricsBuffer
from breakwater.metrics_http import INSTANCE_HEADER, MetricsServer
from breakwater.status import RECEIVER_COLUMNS, SOURCE_COLUMNS, receiver_rows, source_rows
from tests.unit.fakes import Clock


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def aggregator_with_data(clock: Clock) -> MetricsAggregator:
    agg = MetricsAggregator(clock)
    for _ in range(3):  # three processes ship their deltas
        b = MetricsBuffer(clock)
        b.inc("ais_messages_processed", 100)
        b.inc("ais_lines_rejected", 2, reason="not_ais")
        b.set("circuit_breaker_state", 2, breaker="redis")
        b.observe("ais_end_to_end_latency_seconds", 0.2, 100)
        agg.apply(b.drain())
    return agg


def test_deltas_add_up_and_render_in_the_prometheus_format() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    agg = aggregator_with_data(Clock())
    registry = CollectorRegistry()
    registry.register(agg)  # type: ignore[arg-type]
    values = samples(generate_latest(registry).decode())
    assert values[("ais_messages_processed_total", ())] == 300
    assert values[("ais_lines_rejected_total", (("reason", "not_ais"),))] == 6
    assert values[("circuit_breaker_state", (("breaker", "redis"),))] == 2
    assert values[("ais_end_to_end_latency_seconds_count", ())] == 300
    assert values[("ais_end_to_end_latency_seconds_bucket", (("le", "0.25"),))] == 300
    assert values[("ais_end_to_end_latency_seconds_bucket", (("le", "0.1"),))] == 0
    assert values[("ais_latency_p99_ms", ())] == pytest.approx(200.0)


def test_every_unlabelled_catalog_metric_is_always_exported() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(MetricsAggregator())  # type: ignore[arg-type]
    names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {d.name for d in CATALOG.values() if not d.labels} <= names


def test_latency_percentiles_are_weighted_and_forget_old_samples() -> None:
    clock = Clock()
    agg = MetricsAggregator(clock)
    b = MetricsBuffer(clock)
    b.observe("ais_end_to_end_latency_seconds", 0.010, 90)
    b.observe("ais_end_to_end_latency_seconds", 1.000, 10)
    agg.apply(b.drain())
    p = agg.percentiles()
    assert p["ais_latency_p50_ms"] == pytest.approx(10.0)
    assert p["ais_latency_p95_ms"] == pytest.approx(1000.0)
    clock.advance(61)
    assert agg.percentiles()["ais_latency_p99_ms"] == 0.0


def test_snapshot_restores_counters_and_histograms() -> None:
    agg = aggregator_with_data(Clock())
    restored = MetricsAggregator()
    restored.restore(json.loads(json.dumps(agg.snapshot())))
    assert restored.counter("ais_messages_processed") == 300
    assert restored.counter("ais_lines_rejected", reason="not_ais") == 6
    assert restored.histograms == agg.histograms


def test_endpoint_serves_text_and_json_and_requires_the_token() -> None:
    agg = aggregator_with_data(Clock())
    server = MetricsServer(agg, "127.0.0.1", 0, token="s3cret").start()
    host, port = server.address
    base = f"http://{host}:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/metrics/prometheus", timeout=5)
        assert refused.value.code == 401

        def get(path: str) -> bytes:
            request = urllib.request.Request(base + path, headers={"Authorization": "Bearer s3cret"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return bytes(response.read())

        assert samples(get("/metrics/prometheus").decode())[("ais_messages_processed_total", ())] == 300
        summary = json.loads(get("/metrics/prometheus/summary"))
        assert summary["ais_messages_processed"] == 300
        assert summary["circuit_breaker_state"] == [{"breaker": "redis", "value": 2.0}]
        with pytest.raises(urllib.error.HTTPError) as missing:
            get("/nothing")
        assert missing.value.code == 404
    finally:
        server.stop()


def test_every_reply_names_the_process_that_served_it() -> None:
    """A restarted metrics actor answers with a new name, so its replies can be told from the
    old process's last ones."""
    named = MetricsServer(MetricsAggregator(), "127.0.0.1", 0, instance="worker-2").start()
    unnamed = MetricsServer(MetricsAggregator(), "127.0.0.1", 0).start()
    try:
        for server, want in ((named, "worker-2"), (unnamed, f"pid-{os.getpid()}")):
            host, port = server.address
            for path in ("/metrics/prometheus", "/metrics/prometheus/summary"):
                with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
                    assert response.headers[INSTANCE_HEADER] == want
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(f"http://{host}:{port}/nothing", timeout=5)
            assert missing.value.headers[INSTANCE_HEADER] == want
    finally:
        named.stop()
        unnamed.stop()


def test_sources_shows_each_live_feed_with_its_ratios_and_leaves_files_out() -> None:
    summary = {
        "ais_source_up": [{"source": "north", "value": 1.0}, {"source": "east", "value": 0.0}],
        "ais_source_lines": [{"source": "north", "value": 1000.0}, {"source": "east", "value": 500.0}],
        "ais_source_messages": [{"source": "north", "value": 876.0}, {"source": "east", "value": 400.0}],
        "ais_source_rejected_lines": [{"source": "north", "value": 2.0}],
        "ais_fused_copies": [{"source": "east", "value": 100.0}, {"source": "data/a.nmea", "value": 7.0}],
        "ais_source_reconnects": [{"source": "east", "value": 3.0}],
    }
    rows = source_rows(summary)
    assert [r["source"] for r in rows] == ["east", "north"]
    east, north = rows
    assert (east["state"], east["duplicate_ratio"], east["reconnects"], east["fused_copies"]) == ("down", 0.25, 3, 100)
    assert (north["state"], north["reject_ratio"], north["duplicate_ratio"], north["silences"]) == ("up", 0.002, 0.0, 0)
    assert set(north) == set(SOURCE_COLUMNS)


def test_sources_shows_each_receiver_trusted_or_demoted_in_how_many_writers() -> None:
    summary = {
        "ais_receiver_checks": [{"receiver": "2573105", "value": 900.0}, {"receiver": "skewed", "value": 40.0}],
        "ais_receiver_failed_checks": [
            {"receiver": "skewed", "check": "clock_ahead", "value": 38.0},
            {"receiver": "skewed", "check": "too_fast", "value": 1.0},
            {"receiver": "2573105", "check": "too_fast", "value": 2.0},
        ],
        "ais_receiver_demotions": [{"receiver": "skewed", "value": 2.0}, {"receiver": "2573105", "value": 1.0}],
        "ais_receiver_restorations": [{"receiver": "2573105", "value": 1.0}],
    }
    trusted, skewed = receiver_rows(summary)
    assert trusted == {
        "receiver": "2573105",
        "state": "trusted",
        "checks": 900,
        "failed": 2,
        "failed_ratio": 0.0022,
        "failures": {"too_fast": 2},
        "demotions": 1,
        "restorations": 1,
    }
    assert (skewed["state"], skewed["failed"], skewed["failures"]) == (
        "demoted (2 writers)",
        39,
        {"clock_ahead": 38, "too_fast": 1},
    )
    assert set(skewed) == set(RECEIVER_COLUMNS)
