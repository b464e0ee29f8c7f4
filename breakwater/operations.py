"""Operating Breakwater: the dead-letter queue, the breakers, the retry drain.

Two backends do the same things. `actors.operations.ClusterOperations` talks to the named
actors of a running cluster. `LocalOperations` below works on the journal file directly,
with no Ray at all: it is what the retry job and the CLI use when the cluster that wrote
the journal is gone (a local run's cluster ends with its job). Destructive operations need
the admin token in both.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Protocol

from breakwater.admin import journal_guard
from breakwater.breaker import BreakerState, CircuitBreaker, JournaledBreaker
from breakwater.config import Settings
from breakwater.dead_letters import DEAD, WAITING
from breakwater.deployment import deployment_queue
from breakwater.drain import Drain
from breakwater.gate import gates_for
from breakwater.journal import Snapshots
from breakwater.stores import open_sinks, sink_names

log = logging.getLogger("breakwater.operations")

FORCE_STATES: dict[str, BreakerState | None] = {
    "open": BreakerState.OPEN,
    "closed": BreakerState.CLOSED,
    "release": None,
}


class Operations(Protocol):
    def dlq_stats(self) -> dict[str, Any]: ...

    def dlq_peek(self, n: int, sink: str | None = None, dead: bool = False) -> list[dict[str, Any]]: ...

    def drain(self, *, force: bool = False, sink: str | None = None) -> dict[str, int]: ...

    def dlq_admin(self, operation: str, token: str | None, requested_by: str, sink: str | None = None) -> int: ...

    def breakers(self) -> list[dict[str, Any]]: ...

    def force_breaker(self, sink: str, state: str, token: str | None, requested_by: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalOperations:
    """Operations on the journal file, in this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue = deployment_queue(settings)
        self.snapshots = Snapshots(settings.dlq.path)

    def close(self) -> None:
        self.queue.close()
        self.snapshots.close()

    def dlq_stats(self) -> dict[str, Any]:
        return self.queue.stats().as_dict()

    def dlq_peek(self, n: int, sink: str | None = None, dead: bool = False) -> list[dict[str, Any]]:
        return [x.as_dict() for x in self.queue.peek(n, sink=sink, status=DEAD if dead else WAITING)]

    def drain(self, *, force: bool = False, sink: str | None = None) -> dict[str, int]:
        breakers = {
            name: JournaledBreaker(name, self.settings.breaker, self.snapshots) for name in sink_names(self.settings)
        }
        gates = gates_for(breakers)
        sinks = {s.name: s for s in open_sinks(self.settings)}
        try:
            report: Counter[str] = Drain(self.queue, sinks, gates, self.settings.retry).run(force=force, only_sink=sink)
        finally:
            for s in sinks.values():
                s.close()
        return dict(report)

    def dlq_admin(self, operation: str, token: str | None, requested_by: str, sink: str | None = None) -> int:
        if operation not in ("clear", "clear_dead", "redrive"):
            raise ValueError(f"unknown dead-letter operation {operation!r}")
        journal_guard(self.snapshots).check(
            token, f"dead-letter {operation}" + (f" of {sink}" if sink else ""), requested_by
        )
        return int(getattr(self.queue, operation)(sink))

    def breakers(self) -> list[dict[str, Any]]:
        """As the journal holds them; looking changes nothing (no epoch, no save)."""
        found = []
        for name in sink_names(self.settings):
            breaker = CircuitBreaker(name, self.settings.breaker)
            saved = self.snapshots.load("breaker", name)
            if saved is not None:
                breaker.restore(saved, restarted=False)
            found.append(breaker.status())
        return found

    def force_breaker(self, sink: str, state: str, token: str | None, requested_by: str) -> dict[str, Any]:
        journal_guard(self.snapshots).check(token, f"force breaker {sink} {state}", requested_by)
        journaled = JournaledBreaker(sink, self.settings.breaker, self.snapshots)
        journaled.breaker.force(FORCE_STATES[state], f"forced {state} by {requested_by}")
        return journaled.breaker.status()
