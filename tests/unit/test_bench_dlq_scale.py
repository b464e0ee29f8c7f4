"""The dlq-scale benchmark in a short form, so it cannot rot: it runs, and what it reports
is about the queue sizes it says."""

from __future__ import annotations

from pathlib import Path

from jobs.bench.__main__ import console_report
from jobs.bench.dlq_scale import scenario_dlq_scale


def test_the_dlq_scale_scenario_measures_at_both_sizes(tmp_path: Path) -> None:
    result = scenario_dlq_scale(tmp_path, records=30_000)
    assert (result["at_10k"]["waiting"], result["at_n"]["waiting"]) == (10_000, 30_000)
    for size in ("at_10k", "at_n"):
        assert set(result[size]) == {
            "waiting", "enqueue_records_per_s", "drain_records_per_s", "stats_ms", "is_full_ms", "scan_stats_ms"
        }  # fmt: skip
        assert result[size]["enqueue_records_per_s"] > 0 and result[size]["drain_records_per_s"] > 0
    report = console_report({"dlq_scale": result})
    assert "at 30,000" in report and "ratio at N / at 10k" in report
