"""Integration fixtures: one real local Ray cluster for the session (token auth on), and a
private namespace, journal and metrics port for every test."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    # address="local": never join a cluster a crashed run left behind (RAY_NOTES).
    # The node address is loopback, so everything the tests talk to is on 127.0.0.1.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()


def cluster_address() -> str:
    """The session cluster's address: operations reach only a cluster they name."""
    import ray

    return str(ray.get_runtime_context().gcs_address)


class Job:
    """Runs the ingest and retry jobs in this process against the session's cluster, each
    test in its own Ray namespace with its own dead-letter journal."""

    def __init__(
        self, tmp_path: Path, database_url: str, redis_url: str | None = None, redis_prefix: str | None = None
    ) -> None:
        self.tmp_path = tmp_path
        self.namespace = f"test-{uuid.uuid4().hex[:8]}"
        self.dlq_path: Path | None = tmp_path / "dead-letters.sqlite3"  # None: the per-deployment default
        self.database_url = database_url
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self.runs = 0

    def settings_args(self, *extra: str) -> list[str]:
        args = [
            *self._journal_flags(),
            "--database-url",
            self.database_url,
            "--namespace",
            self.namespace,
            "--metrics-port",
            "0",
            "--address",
            cluster_address(),
        ]
        if self.redis_url:
            args += ["--redis-url", self.redis_url, "--redis-prefix", self.redis_prefix or ""]
        return [*args, *extra]

    def cli_flags(self) -> list[str]:
        """The `breakwater` command's flags that reach this job's stores and cluster."""
        flags = ["--database-url", self.database_url, *self._journal_flags()]
        flags += ["--namespace", self.namespace, "--address", cluster_address()]
        if self.redis_url:
            flags += ["--redis-url", self.redis_url, "--redis-prefix", self.redis_prefix or ""]
        return flags

    def _journal_flags(self) -> list[str]:
        return [] if self.dlq_path is None else ["--dlq-path", str(self.dlq_path)]

    def ingest(self, *sources: Path | str, extra: tuple[str, ...] = (), expect: int = 0) -> dict[str, Any]:
        from jobs.ingest import main

        self.runs += 1
        out = self.tmp_path / f"summary-{self.runs}.json"
        code = main([*map(str, sources), "--summary-json", str(out), "--no-progress", *self.settings_args(*extra)])
        assert code == expect, f"ingest exited {code}"
        return dict(json.loads(out.read_text())) if out.exists() else {}

    def retry(self, *extra: str) -> int:
        from jobs.retry_dlq import main

        return main(self.settings_args(*extra))

    def settings(self) -> Any:
        from breakwater.config import load_settings

        overrides: dict[str, Any] = {
            "database_url": self.database_url,
            "namespace": self.namespace,
            "ray_address": cluster_address(),
        }
        if self.dlq_path is not None:
            overrides["dlq"] = {"path": self.dlq_path}
        if self.redis_url:
            overrides.update(redis_url=self.redis_url, redis_prefix=self.redis_prefix or "")
        return load_settings(overrides)

    def queue(self) -> Any:
        """This job's dead-letter queue, as its deployment sees it."""
        from breakwater.deployment import deployment_queue

        return deployment_queue(self.settings())

    def client(self) -> Any:
        from breakwater import Client

        return Client(self.settings())

    def cleanup(self) -> None:
        import ray

        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["namespace"] == self.namespace:
                ray.kill(ray.get_actor(actor["name"], namespace=self.namespace), no_restart=True)


@pytest.fixture
def sqlite_job(ray_cluster: None, tmp_path: Path, sqlite_url: str) -> Iterator[Job]:
    job = Job(tmp_path, sqlite_url)
    yield job
    job.cleanup()


@pytest.fixture
def make_job(ray_cluster: None, tmp_path: Path) -> Iterator[Any]:
    jobs: list[Job] = []

    def make(database_url: str, redis_url: str | None = None, redis_prefix: str | None = None) -> Job:
        job = Job(tmp_path, database_url, redis_url, redis_prefix)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        job.cleanup()
