"""The arithmetic of the per-stage benchmark (jobs/bench/stages.py): rates, the cores a
target takes, sentences as messages, and the cross-checks of the stages' counts."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.bench.stages import (
    StageResult,
    capacity,
    cores_needed,
    disagreements,
    median_s,
    messages_for_sentences,
    per_item_us,
    rate,
)


def test_a_stage_reports_the_median_pass_in_the_corpus_unit() -> None:
    stage = StageResult("redis", "reports", items=3000, batches=4, seconds=[2.0, 0.5, 1.0])
    s = stage.summary(corpus_messages=2000)
    assert (s["median_s"], s["items_per_s"], s["msgs_per_s"]) == (1.0, 3000.0, 2000.0)
    assert (s["us_per_message"], s["ms_per_batch"]) == (500.0, 250.0)


def test_rates_refuse_what_was_not_timed() -> None:
    assert rate(0, 1.0) == 0.0
    assert per_item_us(1.0, 0) is None
    with pytest.raises(ValueError):
        rate(10, 0.0)
    with pytest.raises(ValueError):
        median_s([])


def test_cores_needed_rounds_up_and_is_at_least_one() -> None:
    assert cores_needed(19_000, 20_000) == 1
    assert cores_needed(190_000, 20_000) == 10
    assert cores_needed(200_001, 20_000) == 11
    assert cores_needed(0, 5.0) == 1
    with pytest.raises(ValueError):
        cores_needed(1, 0)


def test_sentences_become_fewer_messages_by_the_corpus_ratio() -> None:
    # 100 decoded messages from 125 sentences (a quarter of them were two-sentence messages).
    assert messages_for_sentences(19_000, lines_decoded=125, messages_decoded=100) == 15_200
    with pytest.raises(ValueError):
        messages_for_sentences(19_000, lines_decoded=99, messages_decoded=100)


def _stages(**changes: Any) -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {
        "read": {"items": 1000},
        "frame": {"items": 1000, "messages_out": 800},
        "decode": {"items": 800, "messages_decoded": 790, "reports": 790, "reports_for_redis": 700},
        "normalize": {"items": 790, "reports": 790},
        "ray_task": {"items": 800},
        "ray_actor": {"reports": 790},
        "redis": {"reports": 700},
        "postgres": {"reports": 790},
        "sqlite": {"reports": 790},
        "dlq": {"reports": 790},
    }
    for key, value in changes.items():
        stage, count = key.split("__")
        stages[stage][count] = value
    return stages


def test_counts_that_agree_give_no_disagreement() -> None:
    assert disagreements(_stages(), lines=1000) == []


def test_a_stage_that_lost_reports_is_named() -> None:
    assert disagreements(_stages(postgres__reports=789), lines=1000) == [
        "reports: decode=790, normalize=790, ray_actor=790, postgres=789, sqlite=790, dlq=790"
    ]
    assert disagreements(_stages(ray_task__items=799), lines=1000) == [
        "framed messages: frame=800, decode=800, ray_task=799"
    ]
    assert len(disagreements(_stages(read__items=999, redis__reports=1), lines=1000)) == 2


def test_capacity_is_cores_per_stage_per_target() -> None:
    stages = {"decode": {"msgs_per_s": 30_000.0}, "postgres": {"msgs_per_s": 15_000.0}}
    assert capacity(stages, {"world": 18_000, "x10": 180_000}) == {
        "world": {"decode": 1, "postgres": 2},
        "x10": {"decode": 6, "postgres": 12},
    }
