"""One ingest on a two-node Ray cluster that loses its worker node mid-run (issue 11).

`tests/integration/test_multi_node.py` starts this script in a process of its own: a driver
joins one Ray cluster per process, and the test process already belongs to the session's
cluster. The script builds its own cluster (`ray.cluster_utils.Cluster`: a head node and one
worker node, both on this machine, under the private RAY_TMPDIR the test gives it), runs the
real ingest job (`jobs.ingest.main`) on it with Redis cut, removes the worker node while the
job runs, lets the job finish, brings Redis back and drains the queue with the real retry job.
It prints one JSON report as its last line; the test asserts on it. It ends only the Ray
processes its own cluster started.

    RAY_AUTH_MODE=token RAY_TMPDIR=/tmp/bwmn python tests/integration/multi_node_driver.py \\
        WORKDIR CAPTURE REDIS_PREFIX
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from ray._private import services  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_tasks  # noqa: E402

from jobs.fault_proxy import FaultProxy  # noqa: E402
from tests.integration.test_resilience import Feed, wait_until  # noqa: E402

BOUND_S = 180.0  # generous: a loaded 2-core machine runs three Ray nodes' worth of processes
SETTINGS = (
    "--set", "breaker.reset_timeout_s=1",
    "--set", "breaker.failure_threshold=3",
    "--set", "retry.backoff_base_s=0.2",
    "--set", "retry.backoff_max_s=1",
    "--set", "metrics_push_interval_s=0.2",
    "--set", "store_timeout_s=2",
)  # fmt: skip
# One CPU per node, every node on loopback (the head's dashboard gets a free port, never 8265).
LOOPBACK: dict[str, Any] = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
INGEST = (*SETTINGS, "--set", "flush_interval_ms=100", "--batch-lines", "100", "--writers", "2", "--no-scheduler")


class Running:
    """The ingest job on a thread: the main thread keeps steering the cluster."""

    def __init__(self, argv: list[str]) -> None:
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self.thread.start()

    def _run(self, argv: list[str]) -> None:
        from jobs.ingest import main

        try:
            self.code = main(argv)
        except BaseException as e:
            self.error = e

    def join(self) -> int:
        self.thread.join(timeout=BOUND_S)
        assert not self.thread.is_alive(), "the ingest job did not finish after the node was lost"
        if self.error is not None:
            raise self.error
        assert self.code is not None
        return self.code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def decode_tasks_by_node(dashboard: str) -> dict[str, int]:
    """How many decode tasks (attempts included) each node ran, from the state API."""
    filters: list[tuple[str, str, str | bool | int | float]] = [("name", "=", "decode_batch")]
    tasks = list_tasks(address=dashboard, filters=filters, limit=10_000, raise_on_missing_output=False)
    return dict(Counter(str(t.node_id) for t in tasks if t.node_id))


def node_alive(node_id: str) -> bool:
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return any(n["Alive"] for n in nodes if n["NodeID"] == node_id)


def named(namespace: str, prefix: str) -> list[Any]:
    """The job's actors whose name starts with `prefix` (the cluster runs no dashboard, so
    no state API: names come from the GCS)."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace]
    return [ray.get_actor(n, namespace=namespace) for n in sorted(names) if n.startswith(prefix)]


def node_of(actor: Any) -> str:
    """The node an actor runs on, asked of the actor itself (it waits for a restart)."""
    ref = actor.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id())
    return str(ray.get(ref, timeout=BOUND_S))


def processed(namespace: str) -> float:
    """Messages in batches the job has collected: every shard of them written or journaled."""
    try:
        metrics = ray.get_actor("metrics", namespace=namespace)
    except ValueError:
        return 0.0
    counted: Any = ray.get(metrics.counter.remote("ais_messages_processed"), timeout=60)
    return float(counted)


def main(argv: list[str]) -> int:
    workdir, capture, prefix = Path(argv[0]), Path(argv[1]), argv[2]
    lines = capture.read_bytes().splitlines()
    namespace = f"multi-node-{uuid.uuid4().hex[:8]}"
    report: dict[str, Any] = {"namespace": namespace}
    # The head runs the dashboard (on a free port) for the state API, which says where tasks ran.
    port = free_port()
    cluster = Cluster(
        initialize_head=True, head_node_args={**LOOPBACK, "include_dashboard": True, "dashboard_port": port}
    )
    try:
        worker = cluster.add_node(**LOOPBACK)
        cluster.wait_for_nodes()
        # Ray swaps a loopback address for the machine's network one before joining; every
        # node here listens on loopback only, so the address is kept as it is (ray 2.60).
        services.resolve_ip_for_localhost = lambda host: host
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")
        assert cluster.head_node is not None
        report["head_node"] = cluster.head_node.node_id
        report["worker_node"] = worker.node_id
        with FaultProxy(("127.0.0.1", 6379)) as redis_proxy:
            dashboard = f"http://127.0.0.1:{port}"
            report.update(run(cluster, worker, dashboard, workdir, lines, namespace, prefix, redis_proxy))
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    print(json.dumps(report))
    return 0


def run(
    cluster: Cluster,
    worker: Any,
    dashboard: str,
    workdir: Path,
    lines: list[bytes],
    namespace: str,
    prefix: str,
    proxy: FaultProxy,
) -> dict[str, Any]:
    settings_args = [
        "--dlq-path", str(workdir / "head-disk" / "dead-letters.sqlite3"),
        "--database-url", f"sqlite:///{workdir / 'breakwater.sqlite3'}",
        "--redis-url", f"redis://127.0.0.1:{proxy.port}/0",
        "--redis-prefix", prefix,
        "--namespace", namespace,
        "--metrics-port", "0",
        "--address", cluster.address,
    ]  # fmt: skip
    (workdir / "head-disk").mkdir(exist_ok=True)
    summary_path = workdir / "summary.json"
    # Until the worker node is lost, the head's only CPU is held: every decode task runs on
    # the worker node, so the shard objects that writers are given live in its object store
    # and the node's loss takes them with it (Ray must rebuild them from their lineage).
    # The two writers are spread over the two nodes (SPREAD): one of them is lost with the node.
    placeholder: Any = ray.remote(_Placeholder)
    busy_head = placeholder.options(
        num_cpus=1, resources={"node:__internal_head__": 0.001}, namespace=namespace
    ).remote()
    ray.get(busy_head.ready.remote(), timeout=BOUND_S)
    feed = Feed(lines)
    running = Running([feed.url, "--summary-json", str(summary_path), "--no-progress", *settings_args, *INGEST])
    writers = wait_until(
        lambda: len(named(namespace, "writer-")) == 2 and named(namespace, "writer-"), BOUND_S, "two writers"
    )
    writer_nodes = [node_of(w) for w in writers]
    dead_letters_before = node_of(named(namespace, "dead-letters")[0])
    proxy.set_mode("reset")  # Redis is cut from the first line on: its records go to the queue
    feed.send(0.5)
    acknowledged = wait_until(
        lambda: processed(namespace) >= 300 and processed(namespace), BOUND_S, "300 messages acknowledged"
    )
    decode_before_loss = wait_until(
        lambda: worker.node_id in (tasks := decode_tasks_by_node(dashboard)) and tasks,
        BOUND_S,
        "decode tasks on the worker",
    )
    feed.send(0.75)  # more batches, in flight (decoding on the worker, writing) as the node goes
    cluster.remove_node(worker, allow_graceful=False)
    ray.kill(busy_head)  # the head's CPU back, for the decode tasks from here on
    wait_until(lambda: not node_alive(worker.node_id), BOUND_S, "the node's loss")

    def moved() -> list[str] | None:
        nodes = [node_of(w) for w in writers]
        return nodes if worker.node_id not in nodes else None

    writer_nodes_after = wait_until(moved, BOUND_S, "the lost node's writers to restart on the head")
    feed.close()
    code = running.join()
    summary = json.loads(summary_path.read_text())
    dead_letters_after = node_of(named(namespace, "dead-letters")[0])
    queue_before_drain = _tally(settings_args, summary["job_id"])
    proxy.set_mode("up")
    drains = 0

    def drained() -> bool:
        nonlocal drains
        from jobs.retry_dlq import main as retry

        drains += 1
        assert retry([*settings_args, "--force", *SETTINGS]) == 0
        return _tally(settings_args, summary["job_id"])["waiting"] == 0

    wait_until(drained, BOUND_S, "the dead-letter queue to drain")
    return {
        "exit_code": code,
        "summary": summary,
        "writer_nodes": writer_nodes,
        "writer_nodes_after": writer_nodes_after,
        "dead_letters_node_before": dead_letters_before,
        "dead_letters_node_after": dead_letters_after,
        "acknowledged_before_loss": acknowledged,
        "decode_tasks_before_loss": decode_before_loss,
        "decode_tasks": decode_tasks_by_node(dashboard),
        "tally_before_drain": queue_before_drain,
        "tally_after_drain": _tally(settings_args, summary["job_id"]),
        "drain_runs": drains,
        "journal": settings_args[1],
    }


class _Placeholder:
    def ready(self) -> bool:
        return True


def _tally(settings_args: list[str], job_id: str) -> dict[str, int]:
    """The journal's own count of the job's Redis records, read from the file on the head."""
    from breakwater.config import load_settings
    from breakwater.deployment import deployment_queue

    flags = dict(zip(settings_args[::2], settings_args[1::2], strict=True))
    settings = load_settings(
        {
            "dlq": {"path": flags["--dlq-path"]},
            "database_url": flags["--database-url"],
            "redis_url": flags["--redis-url"],
            "redis_prefix": flags["--redis-prefix"],
            "namespace": flags["--namespace"],
        }
    )
    queue = deployment_queue(settings)
    try:
        t = queue.job_tally(job_id).get("redis")
    finally:
        queue.close()
    if t is None:
        return {"waiting": 0, "dead": 0, "retried_written": 0, "retried_duplicates": 0}
    return {
        "waiting": t.waiting,
        "dead": t.dead,
        "retried_written": t.retried_written,
        "retried_duplicates": t.retried_duplicates,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
