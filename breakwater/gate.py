"""A writer's side of a shared circuit breaker: decide locally, report in batches.

The breaker of a sink lives in one actor for the whole cluster. Asking it before every
batch would cost a Ray call (about a millisecond) per batch per sink, so each writer keeps a
`BreakerView` and decides from it:

- CLOSED: call the sink. Outcomes are buffered and reported every `report_interval_s`, or at
  once on a failure (so the breaker opens promptly). The reply refreshes the view.
- OPEN, before its retry time: divert to the dead-letter queue without asking anyone.
- OPEN after its retry time, or HALF_OPEN: ask the breaker for a trial permit (one call);
  only the holder of a permit calls the sink, and reports the outcome at once.

A view older than `view_ttl_s` is refreshed on the next decision, which bounds how long an
operator's forced state or another writer's trip takes to reach this writer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from breakwater.breaker import BreakerState, BreakerView, CallOutcome


class BreakerLink(Protocol):
    """How a writer reaches a sink's breaker: the breaker itself in-process, or its actor."""

    def view(self) -> BreakerView: ...

    def acquire_trial(self) -> tuple[bool, BreakerView]: ...

    def record(self, outcomes: list[CallOutcome]) -> BreakerView: ...


class Verdict(Enum):
    CALL = "call"
    TRIAL = "trial"
    DIVERT = "divert"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    view: BreakerView


class SinkGate:
    def __init__(
        self,
        link: BreakerLink,
        *,
        report_interval_s: float = 1.0,
        view_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.report_interval_s = report_interval_s
        self.view_ttl_s = view_ttl_s
        self.clock = clock
        self._buffer: list[CallOutcome] = []
        self._set_view(link.view())
        self._last_report = self.clock()

    @property
    def view(self) -> BreakerView:
        return self._view

    def _set_view(self, view: BreakerView) -> None:
        self._view = view
        self._viewed_at = self.clock()

    def decide(self) -> Decision:
        """What to do with the next batch. No Ray call unless a trial may be due or the
        view is stale."""
        now = self.clock()
        if now - self._viewed_at > self.view_ttl_s:
            self.flush()  # reporting refreshes the view too
            if now - self._viewed_at > self.view_ttl_s:
                self._set_view(self.link.view())
        view = self._view
        if view.state == BreakerState.CLOSED:
            return Decision(Verdict.CALL, view)
        if view.state == BreakerState.OPEN and (view.forced or now < view.retry_at):
            return Decision(Verdict.DIVERT, view)
        granted, view = self.link.acquire_trial()
        self._set_view(view)
        if granted:
            return Decision(Verdict.TRIAL, view)
        return Decision(Verdict.CALL if view.state == BreakerState.CLOSED else Verdict.DIVERT, view)

    def record(self, decision: Decision, *, ok: bool, duration_s: float, error: str = "") -> None:
        """Report one call's outcome; failures and trials go out at once, the rest in batches."""
        trial = decision.verdict == Verdict.TRIAL
        self._buffer.append(CallOutcome(ok, duration_s, decision.view.epoch, trial, error))
        if trial or not ok or self.clock() - self._last_report >= self.report_interval_s:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        outcomes, self._buffer = self._buffer, []
        self._set_view(self.link.record(outcomes))
        self._last_report = self.clock()


def gates_for(links: Mapping[str, BreakerLink], *, report_interval_s: float = 1.0) -> dict[str, SinkGate]:
    """One gate per sink, over that sink's breaker link."""
    return {sink: SinkGate(link, report_interval_s=report_interval_s) for sink, link in links.items()}
