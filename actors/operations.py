"""Operations on a running cluster, through its named actors (see breakwater.operations)."""

from __future__ import annotations

from typing import Any

import ray

from actors.handles import Services, call
from actors.session import init_ray
from breakwater.config import Settings
from breakwater.drain import Drain
from breakwater.errors import NotRunningError
from breakwater.gate import gates_for
from breakwater.operations import FORCE_STATES
from breakwater.stores import open_sinks


class ClusterOperations:
    def __init__(self, settings: Settings, address: str) -> None:
        """Joins the cluster at `address` (never one nobody named); ConfigError when it is not
        there or refuses us, NotRunningError when it has no Breakwater actors."""
        init_ray(address, log_to_driver=False, timeout_s=settings.ray_timeout_s)
        self.services = Services.find(settings)

    def close(self) -> None:
        pass

    def dlq_stats(self) -> dict[str, Any]:
        return self.services.dead_letters.stats()

    def dlq_peek(self, n: int, sink: str | None = None, dead: bool = False) -> list[dict[str, Any]]:
        return self.services.dead_letters.peek(n, sink, "dead" if dead else "waiting")

    def drain(self, *, force: bool = False, sink: str | None = None) -> dict[str, int]:
        """Through the cluster's scheduler; without one, in this process through the actors."""
        if self.services.scheduler is not None:
            return self.services.drain_now(force=force, sink=sink)
        settings = self.services.settings
        gates = gates_for(self.services.breakers)
        sinks = {s.name: s for s in open_sinks(settings) if s.name in gates}
        try:
            return dict(
                Drain(self.services.dead_letters, sinks, gates, settings.retry).run(force=force, only_sink=sink)
            )
        finally:
            for s in sinks.values():
                s.close()

    def dlq_admin(self, operation: str, token: str | None, requested_by: str, sink: str | None = None) -> int:
        return self.services.dead_letters.admin(operation, token, _via_ray(requested_by), sink)

    def breakers(self) -> list[dict[str, Any]]:
        return [handle.status() for handle in self.services.breakers.values()]

    def force_breaker(self, sink: str, state: str, token: str | None, requested_by: str) -> dict[str, Any]:
        handle = self.services.breakers.get(sink)
        if handle is None:
            raise NotRunningError(f"no breaker for sink {sink!r} on this cluster")
        forced = FORCE_STATES[state]
        wanted = None if forced is None else int(forced)
        ref = handle.actor.force_by_operator.remote(wanted, token, _via_ray(requested_by))
        call(ref, handle.timeout_s, f"breaker-{sink}")
        return handle.status()


def _via_ray(requested_by: str) -> str:
    """Who asked, with the Ray job of the driver that sent the call: the actor logs both."""
    return f"{requested_by} via Ray job {ray.get_runtime_context().get_job_id()}"
