"""`breakwater status`: the live numbers an operator watches, from the metrics endpoint.

It reads `/metrics/prometheus/summary` (the same totals Prometheus scrapes) and shows
throughput (from the change between two reads), breakers, the dead-letter queue and latency.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from breakwater.errors import NotRunningError

STATE_NAMES = {0: "CLOSED", 1: "HALF_OPEN", 2: "OPEN"}


def fetch(url: str, token: str | None, timeout_s: float = 5.0) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + "/metrics/prometheus/summary")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return dict(json.load(response))
    except OSError as e:
        raise NotRunningError(f"no metrics endpoint answers at {url}: {e}") from e


def _value(summary: dict[str, Any], name: str) -> float:
    value = summary.get(name, 0)
    if isinstance(value, list):
        return float(sum(v["value"] for v in value))
    return float(value or 0)


def status_view(summary: dict[str, Any], rate_per_s: float | None) -> Group:
    """The numbers as rich tables (also what `--once` prints)."""
    top = Table(title="Breakwater", show_header=False)
    top.add_row("messages processed", f"{_value(summary, 'ais_messages_processed'):,.0f}")
    top.add_row("throughput", "-" if rate_per_s is None else f"{rate_per_s:,.0f} msg/s")
    top.add_row("lines rejected", f"{_value(summary, 'ais_lines_rejected'):,.0f}")
    top.add_row(
        "failed: db / redis",
        f"{_value(summary, 'ais_messages_failed_db'):,.0f} / {_value(summary, 'ais_messages_failed_redis'):,.0f}",
    )
    top.add_row(
        "latency p50 / p95 / p99",
        " / ".join(f"{_value(summary, f'ais_latency_p{q}_ms'):,.1f} ms" for q in (50, 95, 99)),
    )
    top.add_row(
        "DLQ waiting / dead", f"{_value(summary, 'ais_dlq_size'):,.0f} / {_value(summary, 'ais_dlq_dead'):,.0f}"
    )
    top.add_row("DLQ oldest", f"{_value(summary, 'ais_dlq_oldest_age_seconds'):,.0f} s")
    top.add_row("batches in flight", f"{_value(summary, 'ais_batches_in_flight'):,.0f}")
    top.add_row("feed connections", f"{_value(summary, 'ais_active_connections'):,.0f}")
    breakers = Table(title="Breakers")
    breakers.add_column("sink")
    breakers.add_column("state")
    breakers.add_column("trips")
    trips = {e.get("breaker"): e["value"] for e in summary.get("circuit_breaker_trips", []) if isinstance(e, dict)}
    for entry in summary.get("circuit_breaker_state", []):
        if isinstance(entry, dict):
            name = entry.get("breaker", "?")
            breakers.add_row(name, STATE_NAMES.get(int(entry["value"]), "?"), f"{trips.get(name, 0):,.0f}")
    return Group(top, breakers)


def watch(url: str, token: str | None, *, once: bool, interval_s: float, as_json: bool) -> int:
    console = Console()
    previous = fetch(url, token)
    if once:
        if as_json:
            print(json.dumps(previous, indent=2))
        else:
            console.print(status_view(previous, None))
        return 0
    before = time.monotonic()
    with Live(status_view(previous, None), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval_s)
                current = fetch(url, token)
                now = time.monotonic()
                done = _value(current, "ais_messages_processed") - _value(previous, "ais_messages_processed")
                live.update(status_view(current, done / (now - before)))
                previous, before = current, now
        except KeyboardInterrupt:
            return 0


# -- `breakwater sources`: every live feed, from the same endpoint --------------------------

SOURCE_COLUMNS = (
    *("source", "state", "last_line_age_s", "lines", "messages", "rejected_lines", "reject_ratio"),
    *("fused_copies", "duplicate_ratio", "reconnects", "silences", "dropped"),
)
_SOURCE_METRICS = {
    "ais_source_up": "up",
    "ais_source_last_line_age_seconds": "last_line_age_s",
    "ais_source_lines": "lines",
    "ais_source_messages": "messages",
    "ais_source_rejected_lines": "rejected_lines",
    "ais_source_reconnects": "reconnects",
    "ais_source_silences": "silences",
    "ais_source_dropped": "dropped",
    "ais_fused_copies": "fused_copies",
}


def source_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per live feed: its state (`up` or `down`), its totals, and two ratios: of its
    lines, the rejected ones; of its messages, the other receivers' copies that fusion kept as
    receptions (a feed that only repeats another's reports is near 1)."""
    rows: dict[str, dict[str, Any]] = {}
    for metric, column in _SOURCE_METRICS.items():
        for entry in summary.get(metric, []):
            if isinstance(entry, dict) and "source" in entry:
                rows.setdefault(entry["source"], {})[column] = entry["value"]
    out = []
    for name, row in sorted(rows.items()):
        if "up" not in row:  # a file's fused copies: not a live feed
            continue
        lines, messages = row.get("lines", 0), row.get("messages", 0)
        out.append(
            {
                "source": name,
                "state": "up" if row["up"] else "down",
                "last_line_age_s": row.get("last_line_age_s"),
                **{c: int(row.get(c, 0)) for c in ("lines", "messages", "rejected_lines", "fused_copies")},
                "reject_ratio": round(row.get("rejected_lines", 0) / lines, 4) if lines else None,
                "duplicate_ratio": round(row.get("fused_copies", 0) / messages, 4) if messages else None,
                **{c: int(row.get(c, 0)) for c in ("reconnects", "silences", "dropped")},
            }
        )
    return out


RECEIVER_COLUMNS = ("receiver", "state", "checks", "failed", "failed_ratio", "failures", "demotions", "restorations")


def receiver_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per receiver (tag block station, else source) the writers have checked: its
    state (`demoted` while any writer has it demoted, with how many: each writer judges the
    share of reports it sees; else `trusted`), its checks and failed checks since the job
    started, by check, and how often it was demoted and restored (breakwater.plausibility)."""
    rows: dict[str, dict[str, Any]] = {}

    def entries(metric: str) -> list[dict[str, Any]]:
        return [e for e in summary.get(metric, []) if isinstance(e, dict) and "receiver" in e]

    for e in entries("ais_receiver_checks"):
        rows.setdefault(e["receiver"], {})["checks"] = int(e["value"])
    for e in entries("ais_receiver_failed_checks"):
        row = rows.setdefault(e["receiver"], {})
        row.setdefault("failures", {})[e.get("check", "?")] = int(e["value"])
    for metric, column in (("ais_receiver_demotions", "demotions"), ("ais_receiver_restorations", "restorations")):
        for e in entries(metric):
            rows.setdefault(e["receiver"], {})[column] = int(e["value"])
    out = []
    for name, row in sorted(rows.items()):
        checks, failures = row.get("checks", 0), row.get("failures", {})
        failed = sum(failures.values())
        demoted_in = row.get("demotions", 0) - row.get("restorations", 0)
        out.append(
            {
                "receiver": name,
                "state": f"demoted ({demoted_in} writer{'s' if demoted_in > 1 else ''})" if demoted_in else "trusted",
                "checks": checks,
                "failed": failed,
                "failed_ratio": round(failed / checks, 4) if checks else None,
                "failures": dict(sorted(failures.items())),
                "demotions": row.get("demotions", 0),
                "restorations": row.get("restorations", 0),
            }
        )
    return out
