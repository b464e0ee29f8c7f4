"""Two deployments on one machine, same OS user: each keeps its own dead letters and breakers,
and no operation writes one deployment's records into the other's stores.

Seen before: deployment A ingested while its Redis was cut, deployment B (other database and
Redis prefix) ingested cleanly, and B's `retry_dlq --force` wrote A's dead letters into B's
Redis; a newcomer's `dlq stats` showed another deployment's records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from breakwater.deployment import Deployment
from breakwater.errors import ConfigError
from jobs.fault_proxy import FaultProxy
from tests.conftest import REDIS_URL, read_lines
from tests.integration.conftest import Job
from tests.integration.test_resilience import (  # noqa: F401  (redis_proxy is a fixture)
    FAST,
    FAST_SETTINGS,
    Feed,
    Running,
    assert_redis_matches_sql,
    processed,
    proxied,
    redis_latest,
    redis_proxy,
    wait_until,
)


def _job(make_job: Any, tmp_path: Path, name: str, redis_url: str, prefix: str) -> Job:
    job: Job = make_job(f"sqlite:///{tmp_path / f'{name}.sqlite3'}", redis_url, prefix)
    return job


@pytest.mark.parametrize("journal", ["per-deployment", "shared-file"])
def test_two_deployments_each_with_its_own_outage_and_retry_end_correct(
    make_job: Any,
    tmp_path: Path,
    kystverket_path: Path,
    redis_prefix: str,
    redis_proxy: FaultProxy,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    journal: str,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the OS user's default journal folder
    a = _job(make_job, tmp_path, "a", proxied(REDIS_URL, redis_proxy), f"{redis_prefix}a:")
    b = _job(make_job, tmp_path, "b", REDIS_URL, f"{redis_prefix}b:")
    if journal == "shared-file":
        b.dlq_path = a.dlq_path  # one journal file named by both: records still know their stores
    else:
        a.dlq_path = b.dlq_path = None  # type: ignore[assignment]  # the default: per deployment
    # A's Redis goes away a third of the way through its feed, for the rest of it.
    feed = Feed(read_lines(kystverket_path))
    running = Running(a, feed.url, FAST)
    feed.send(0.3)
    wait_until(lambda: processed(a) > 0, 180, "A's first messages")
    redis_proxy.set_mode("reset")
    feed.close()
    summary_a = running.join()
    assert summary_a["ok"], summary_a["errors"]
    assert summary_a["sinks"]["redis"]["dlq_waiting"] == summary_a["sinks"]["redis"]["dead_letter_queue"] > 0
    summary_b = b.ingest(kystverket_path, extra=FAST)
    assert summary_b["sinks"]["redis"]["dead_letter_queue"] == 0
    a_keys, b_keys = redis_latest(a.redis_prefix or ""), redis_latest(b.redis_prefix or "")

    # B's retry drains B's queue: A's records are not B's to write.
    assert b.retry("--force", *FAST_SETTINGS) == 0
    assert redis_latest(b.redis_prefix or "") == b_keys
    assert redis_latest(a.redis_prefix or "") == a_keys
    queue_a, queue_b = a.queue(), b.queue()
    waiting_a = queue_a.stats().waiting
    assert waiting_a == summary_a["sinks"]["redis"]["dlq_waiting"]
    assert queue_b.stats().waiting == 0
    if journal == "per-deployment":
        assert a.settings().dlq.path != b.settings().dlq.path
        assert a.settings().dlq.path.parent.name == Deployment.of(a.settings()).slug
    else:
        assert queue_b.stats().other_deployments == waiting_a  # seen as someone else's, never drained

    # A recovers and drains its own: A's Redis as if it had never been away, B's untouched.
    redis_proxy.set_mode("up")
    assert a.retry("--force", *FAST_SETTINGS) == 0
    assert queue_a.stats().waiting == 0
    assert_redis_matches_sql(a.redis_prefix or "", a.database_url)
    assert_redis_matches_sql(b.redis_prefix or "", b.database_url)
    assert redis_latest(b.redis_prefix or "") == b_keys
    queue_a.close()
    queue_b.close()


def test_a_command_that_reaches_another_deployments_actors_refuses_naming_the_difference(
    make_job: Any, tmp_path: Path, kystverket_path: Path, redis_prefix: str
) -> None:
    a = _job(make_job, tmp_path, "a", REDIS_URL, f"{redis_prefix}a:")
    a.ingest(kystverket_path, extra=FAST)
    # B: other stores, but (by mistake) A's namespace on the same cluster.
    b = _job(make_job, tmp_path, "b", REDIS_URL, f"{redis_prefix}b:")
    b.namespace = a.namespace
    difference = r"BREAKWATER_NAMESPACE .*other stores .*prefix='" + redis_prefix + "b:' here"
    with pytest.raises(ConfigError, match=difference):
        b.client().dlq_stats()
    assert b.retry("--force") == 2  # one line, exit 2, nothing drained
    b.ingest(kystverket_path, extra=FAST, expect=2)  # refused before reading a line
