"""Losing a worker node loses nothing that was acknowledged (issue 11, "Node-local durability").

A real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head node and a
worker node) runs the real ingest job with Redis cut, and the worker node is killed mid-run,
after batches were acknowledged and while more are in flight. The cluster lives in a process
of its own (`multi_node_driver.py`): a process joins one Ray cluster, and this one belongs to
the session's (`ray_cluster`), which the test leaves alone; the driver builds its cluster
under a private RAY_TMPDIR, on ports Ray picks, and stops only the processes it started.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis

from breakwater.stores.redis import RedisKeys
from tests.conftest import REDIS_URL, scratch_redis_prefix

DRIVER = Path(__file__).with_name("multi_node_driver.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def second_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix for the reference run, deleted afterwards."""
    with scratch_redis_prefix(redis_server) as prefix:
        yield prefix


def run_driver(workdir: Path, capture: Path, prefix: str) -> dict[str, Any]:
    """The multi-node run, in a process of its own with a private Ray temp directory (its
    cluster's address file and sockets never meet another cluster's); its report is the last
    line it prints."""
    ray_tmp = tempfile.mkdtemp(prefix="bwmn", dir="/tmp")  # short: Ray's socket paths must fit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("BREAKWATER_")}
    env.update(RAY_AUTH_MODE="token", RAY_TMPDIR=ray_tmp, PYTHONPATH=str(ROOT))
    try:
        result = subprocess.run(
            [sys.executable, str(DRIVER), str(workdir), str(capture), prefix],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=540,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def live_picture(prefix: str) -> dict[str, Any]:
    """Every vessel's hash and every GEO index entry under `prefix`, without the prefix; a
    hash's `source` (the name of the input, a TCP feed here and a file there) is left out."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = RedisKeys(prefix)
    vessels = {}
    for key in client.scan_iter(keys.pattern(), count=1000):
        data = client.hgetall(key)
        data.pop("source", None)
        vessels[key.removeprefix(prefix)] = data
    geo = {}
    for bucket in range(16):
        members = client.zrange(keys.geo(bucket), 0, -1)
        positions = client.geopos(keys.geo(bucket), *members) if members else []
        geo[bucket] = dict(zip(members, positions, strict=True))
    client.close()
    return {"vessels": vessels, "geo": geo}


def history(database: Path) -> list[tuple[Any, ...]]:
    """The history's rows by identity, each with its count (a row written twice shows as 2)."""
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT mmsi, received_at, digest, count(*) FROM positions GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
    assert rows
    return rows


def test_losing_a_worker_node_mid_ingest_loses_no_acknowledged_record(
    make_job: Any, tmp_path: Path, sqlite_url: str, redis_prefix: str, second_prefix: str, kystverket_path: Path
) -> None:
    """What each assertion would catch:

    - a queue per node (the dead-letters actor or its journal on the worker node): the
      actor's node is checked to be the head before and after the loss. On one machine every
      node shares the disk, so a journal file on the "worker's disk" would survive here; the
      placement check is what fails instead, as the records would on a real cluster;
    - a writer that acknowledged a batch before the queue had journaled it (buffered in the
      writer, sent later): the writer on the lost node takes the buffer with it, the journal
      holds fewer records than the summary says went to the queue, and conservation fails;
    - a lost in-flight batch (a write that was not replayed, a decode output not rebuilt):
      lines read would not add up to records received by each sink, and the job is not ok;
    - a record lost anywhere on its way: Redis after the drain differs from the reference.
    """
    workdir = tmp_path / "multi-node"
    workdir.mkdir()
    report = run_driver(workdir, kystverket_path, redis_prefix)
    head, worker = report["head_node"], report["worker_node"]
    summary = report["summary"]
    print(json.dumps({k: v for k, v in report.items() if k != "summary"}))  # shown with -s: where work ran

    # The work was spread over both nodes (decode tasks ran on each, one writer on each),
    # the worker node was lost mid-run, and its writer came back on the head.
    assert report["decode_tasks_before_loss"].get(worker, 0) > 0
    assert set(report["decode_tasks"]) == {head, worker}
    assert report["acknowledged_before_loss"] >= 300
    assert sorted(report["writer_nodes"]) == sorted([head, worker])
    assert report["writer_nodes_after"] == [head, head]

    # The job finished, honestly, with every line and report accounted for.
    assert report["exit_code"] == 0
    assert summary["ok"], summary["errors"]
    assert summary["lines"] == {"read": 1000, "decoded": 998, "rejected": 2, "pending": 0}
    assert summary["messages_decoded"] == 876
    db, live = summary["sinks"]["db"], summary["sinks"]["redis"]
    # A write replayed after the loss finds what its first attempt wrote: duplicates, once.
    assert db["received"] == db["written"] + db["duplicates"] == 876 and db["dead_letter_queue"] == 0
    assert live["received"] == live["written"] + live["duplicates"] + live["dead_letter_queue"]
    assert live["written"] == 0 and live["dead_letter_queue"] == 871

    # Every record acknowledged as dead-lettered is in the journal on the head.
    assert report["dead_letters_node_before"] == report["dead_letters_node_after"] == head
    assert report["tally_before_drain"] == {"waiting": 871, "dead": 0, "retried_written": 0, "retried_duplicates": 0}
    assert report["tally_after_drain"] == {"waiting": 0, "dead": 0, "retried_written": 871, "retried_duplicates": 0}

    # With Redis back and the queue drained, Redis holds what a run without any fault writes.
    reference = make_job(sqlite_url, REDIS_URL, second_prefix)
    assert reference.ingest(kystverket_path)["ok"]
    drained, expected = live_picture(redis_prefix), live_picture(second_prefix)
    assert len(expected["vessels"]) > 800
    assert drained == expected
    assert history(workdir / "breakwater.sqlite3") == history(Path(sqlite_url.removeprefix("sqlite:///")))
