"""The breaker actor: one per sink, owning that sink's breaker for the whole cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from breakwater.admin import journal_guard
from breakwater.breaker import BreakerConfig, BreakerState, BreakerView, CircuitBreaker, JournaledBreaker
from breakwater.journal import Snapshots
from breakwater.metrics import MetricsBuffer


class BreakerActor(JournaledBreaker):
    """A journaled breaker with an address; it also publishes its state and trips as
    metrics and lets an operator (with the admin token) force it."""

    def __init__(self, sink: str, config: BreakerConfig, journal_path: Path, metrics: Any) -> None:
        self.metrics = metrics  # a MetricsHandle, or None
        super().__init__(sink, config, Snapshots(journal_path), on_transition=self._on_transition)
        self._publish(trip=False)

    def _on_transition(self, breaker: CircuitBreaker, previous: BreakerState, reason: str) -> None:
        self._publish(trip=breaker.state == BreakerState.OPEN and breaker.forced is None)

    def _publish(self, *, trip: bool) -> None:
        if self.metrics is None:
            return
        buffer = MetricsBuffer()
        buffer.set("circuit_breaker_state", int(self.breaker.state), breaker=self.breaker.sink)
        buffer.inc("circuit_breaker_trips", 1 if trip else 0, breaker=self.breaker.sink)
        self.metrics.push(buffer.drain())

    def force_by_operator(self, state: int | None, token: str | None, requested_by: str) -> BreakerView:
        """Hold the breaker OPEN or CLOSED (None releases it), after the admin token is checked."""
        wanted = None if state is None else BreakerState(state)
        label = "release" if wanted is None else wanted.name
        journal_guard(self.snapshots).check(token, f"force breaker {self.breaker.sink} {label}", requested_by)
        return self.breaker.force(wanted, f"{label} by operator {requested_by}")

    def configure(self, config: BreakerConfig) -> None:
        """New settings from a newer job; the state is kept."""
        self.breaker.config = config

    def status(self) -> dict[str, Any]:
        return self.breaker.status()
