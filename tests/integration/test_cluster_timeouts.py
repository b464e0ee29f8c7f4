"""No command waits forever on the cluster: every Ray call has a timeout (ray_timeout_s)."""

from __future__ import annotations

import threading

import pytest
import ray

from actors.handles import DeadLetterHandle
from breakwater.errors import ClusterTimeout


class Unanswering:
    """An actor whose every call blocks: a queue actor wedged on a lock, or a node gone quiet."""

    def stats(self) -> dict[str, int]:
        threading.Event().wait()
        return {}


def test_an_actor_that_does_not_answer_is_a_timeout_not_a_hang(ray_cluster: None) -> None:
    actor = ray.remote(Unanswering).options(num_cpus=0, max_concurrency=2).remote()
    try:
        handle = DeadLetterHandle(actor, timeout_s=0.5)
        expected = r"the dead-letters actor did not answer within 0.5 s \(ray_timeout_s\)"
        with pytest.raises(ClusterTimeout, match=expected):
            handle.stats()
    finally:
        ray.kill(actor)
