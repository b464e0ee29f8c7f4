"""Circuit breaker: stop calling a sink that is failing, try it again carefully, close when it heals.

One `CircuitBreaker` per sink is owned by one Ray actor for the whole cluster
(`actors/breaker.py`); writers keep a cached `BreakerView` of it and report outcomes in
batches (`breakwater.gate.SinkGate`), so the closed and open paths cost no Ray call per batch.

States and what moves them (every transition bumps `epoch` and is logged once, with why):

    CLOSED --(failure_threshold consecutive failures, or failure rate over the window)--> OPEN
    OPEN --(reset_timeout_s elapsed)--> HALF_OPEN
    HALF_OPEN --(success_threshold consecutive trial successes)--> CLOSED
    HALF_OPEN --(a trial fails)--> OPEN

In HALF_OPEN at most `half_open_max_calls` trial permits are out at once, across the whole
cluster, so a recovering sink sees a trickle, not a stampede. A call slower than
`slow_call_duration_s` counts as a failure. Outcomes of calls made under an older epoch are
ignored for transitions: a late report from before the breaker opened cannot close it.
An operator can force the breaker open or closed; it then stays there until released.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from breakwater.errors import PoisonRecord, StoreError

if TYPE_CHECKING:
    from breakwater.journal import Snapshots

log = logging.getLogger("breakwater.breaker")


class BreakerState(IntEnum):
    """Values are those of the `circuit_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class BreakerConfig(BaseModel):
    """Settings of one breaker; the defaults suit a database a few milliseconds away."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(5, ge=1, description="consecutive failures that open it")
    success_threshold: int = Field(2, ge=1, description="consecutive trial successes that close it")
    reset_timeout_s: float = Field(30.0, gt=0, description="how long it stays open before a trial")
    failure_rate_threshold: float | None = Field(
        None, gt=0, le=1, description="open when this share of the window failed (rate mode)"
    )
    window_type: Literal["count", "time"] = Field("count", description="sliding window kind")
    window_size: int = Field(20, ge=1, description="calls (count window) or seconds (time window)")
    minimum_calls: int = Field(10, ge=1, description="calls in the window before a rate counts")
    slow_call_duration_s: float | None = Field(None, gt=0, description="a call slower than this counts as a failure")
    half_open_max_calls: int = Field(1, ge=1, description="trial permits out at once")
    trial_timeout_s: float = Field(120.0, gt=0, description="a trial permit not reported back by then is taken back")

    @model_validator(mode="after")
    def _window_fits_minimum(self) -> BreakerConfig:
        if (
            self.failure_rate_threshold is not None
            and self.window_type == "count"
            and self.minimum_calls > self.window_size
        ):
            raise ValueError(
                f"minimum_calls ({self.minimum_calls}) cannot exceed a count window_size "
                f"({self.window_size}): the rate would never be judged"
            )
        return self


@dataclass(frozen=True, slots=True)
class BreakerView:
    """What a writer caches: enough to decide without asking the breaker's actor."""

    sink: str
    state: BreakerState
    epoch: int
    retry_at: float  # wall time when an OPEN breaker will hand out trial permits
    forced: bool = False


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """One call to a sink, as a writer reports it."""

    ok: bool
    duration_s: float
    epoch: int
    trial: bool = False
    error: str = ""  # "ErrorClass: message" of a failure


def counts_as_failure(error: BaseException) -> bool:
    """Whether an error says the sink is unhealthy.

    A record the sink refuses (a constraint it violates, a value it cannot store) says
    nothing about the sink's health: it goes to the dead-letter store, and the breaker
    stays as it is. Everything else (connection refused, timeouts, server errors) counts.
    """
    if isinstance(error, PoisonRecord):
        return False
    if isinstance(error, StoreError):
        return error.transient
    return True


class CircuitBreaker:
    """The state machine of one sink's breaker. Time comes from `clock` (wall seconds), so
    tests drive every transition without sleeping and a restored breaker keeps its timers."""

    def __init__(
        self,
        sink: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_transition: Callable[[CircuitBreaker, BreakerState, str], None] | None = None,
    ) -> None:
        self.sink = sink
        self.config = config or BreakerConfig()
        self.clock = clock
        self.on_transition = on_transition
        self.state = BreakerState.CLOSED
        self.epoch = 0
        self.opened_at = 0.0
        self.forced: BreakerState | None = None
        self.trips = 0
        self._consecutive_failures = 0
        self._trial_successes = 0
        self._permits: deque[float] = deque()  # grant times of trial permits still out
        self._window: deque[tuple[float, bool]] = deque()

    # -- reading -------------------------------------------------------------------------

    def view(self) -> BreakerView:
        self._advance()
        return BreakerView(
            self.sink,
            self.state,
            self.epoch,
            self.opened_at + self.config.reset_timeout_s,
            self.forced is not None,
        )

    def status(self) -> dict[str, Any]:
        """What an operator sees of the breaker (`breakwater breakers`)."""
        view = self.view()
        return {
            "sink": view.sink,
            "state": view.state.name,
            "epoch": view.epoch,
            "forced": view.forced,
            "retry_at": view.retry_at if view.state != BreakerState.CLOSED else None,
            "trips": self.trips,
            "config": self.config.model_dump(),
        }

    def _advance(self) -> None:
        """OPEN turns HALF_OPEN once the reset timeout has passed (lazily, when asked)."""
        if (
            self.state == BreakerState.OPEN
            and self.forced is None
            and self.clock() >= self.opened_at + self.config.reset_timeout_s
        ):
            self._move(BreakerState.HALF_OPEN, f"{self.config.reset_timeout_s:g} s reset timeout passed")

    # -- trials --------------------------------------------------------------------------

    def acquire_trial(self) -> tuple[bool, BreakerView]:
        """A trial permit in HALF_OPEN, if fewer than `half_open_max_calls` are out.

        In any other state no permit is given; the returned view tells the caller what to do
        instead (call normally when CLOSED, divert when OPEN)."""
        self._advance()
        if self.state != BreakerState.HALF_OPEN:
            return False, self.view()
        now = self.clock()
        while self._permits and now - self._permits[0] > self.config.trial_timeout_s:
            self._permits.popleft()  # its holder died or hung: take the permit back
        if len(self._permits) >= self.config.half_open_max_calls:
            return False, self.view()
        self._permits.append(now)
        return True, self.view()

    # -- outcomes ------------------------------------------------------------------------

    def record(self, outcomes: list[CallOutcome]) -> BreakerView:
        """Apply a writer's reported outcomes, in the order the calls finished."""
        for outcome in outcomes:
            self._record_one(outcome)
        return self.view()

    def _is_failure(self, outcome: CallOutcome) -> bool:
        slow = self.config.slow_call_duration_s
        return not outcome.ok or (slow is not None and outcome.duration_s > slow)

    def _record_one(self, outcome: CallOutcome) -> None:
        self._advance()
        failed = self._is_failure(outcome)
        if outcome.trial:
            if self._permits:
                self._permits.popleft()
            if self.state != BreakerState.HALF_OPEN or outcome.epoch != self.epoch:
                return
            if failed:
                self._open(f"trial call failed: {outcome.error or 'slower than allowed'}")
                return
            self._trial_successes += 1
            if self._trial_successes >= self.config.success_threshold:
                self._move(BreakerState.CLOSED, f"{self._trial_successes} trial calls succeeded")
            return
        if self.state != BreakerState.CLOSED or outcome.epoch != self.epoch or self.forced is not None:
            return  # a call made before the last transition says nothing about now
        if self.config.failure_rate_threshold is None:
            self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
            if self._consecutive_failures >= self.config.failure_threshold:
                self._open(
                    f"{self._consecutive_failures} consecutive failures, last: {outcome.error or 'slower than allowed'}"
                )
            return
        self._judge_rate(failed, outcome.error)

    def _judge_rate(self, failed: bool, error: str) -> None:
        now = self.clock()
        self._window.append((now, failed))
        if self.config.window_type == "count":
            while len(self._window) > self.config.window_size:
                self._window.popleft()
        else:
            while self._window and now - self._window[0][0] > self.config.window_size:
                self._window.popleft()
        calls = len(self._window)
        if calls < self.config.minimum_calls:
            return
        rate = sum(1 for _, f in self._window if f) / calls
        if rate >= (self.config.failure_rate_threshold or 1.0):
            self._open(f"{rate:.0%} of the last {calls} calls failed, last: {error or 'slow'}")

    # -- operator ------------------------------------------------------------------------

    def force(self, state: BreakerState | None, reason: str) -> BreakerView:
        """Hold the breaker OPEN or CLOSED until released with `force(None, ...)`."""
        if state == BreakerState.HALF_OPEN:
            raise ValueError("a breaker can be forced OPEN or CLOSED, not HALF_OPEN")
        self.forced = state
        target = state if state is not None else BreakerState.CLOSED
        if target == BreakerState.OPEN:
            self.opened_at = self.clock()
        self._move(target, reason, force_log=True)
        return self.view()

    # -- transitions ---------------------------------------------------------------------

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock()
        self.trips += 1
        self._move(BreakerState.OPEN, reason)

    def _move(self, state: BreakerState, reason: str, *, force_log: bool = False) -> None:
        if state == self.state and not force_log:
            return
        previous = self.state
        self.state = state
        self.epoch += 1
        self._consecutive_failures = 0
        self._trial_successes = 0
        self._permits.clear()
        self._window.clear()
        log.warning("breaker %s: %s -> %s (%s)", self.sink, previous.name, state.name, reason)
        if self.on_transition is not None:
            self.on_transition(self, previous, reason)

    # -- persistence ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What survives a restart of the owning actor (trial permits do not: they expire)."""
        return {
            "state": int(self.state),
            "epoch": self.epoch,
            "opened_at": self.opened_at,
            "forced": None if self.forced is None else int(self.forced),
            "trips": self.trips,
        }

    def restore(self, snapshot: dict[str, Any], *, restarted: bool = True) -> None:
        """Take the state of a snapshot. A breaker that restarts from it starts a new epoch
        (views cached before the restart are stale); one only looked at (`restarted=False`,
        an operator's `breakers`) keeps the saved epoch and changes nothing."""
        self.state = BreakerState(snapshot["state"])
        self.epoch = int(snapshot["epoch"]) + (1 if restarted else 0)
        self.opened_at = float(snapshot["opened_at"])
        forced = snapshot.get("forced")
        self.forced = None if forced is None else BreakerState(forced)
        self.trips = int(snapshot.get("trips", 0))
        if restarted:
            log.warning("breaker %s: restored as %s (epoch %d)", self.sink, self.state.name, self.epoch)


class JournaledBreaker:
    """A breaker whose state lives in the journal: restored when it is created, saved at every
    transition. The breaker actor is one (a restarted actor comes back OPEN, not silently
    CLOSED); so is the retry job run without a cluster, which starts from the state the
    cluster's actor left. `view`, `acquire_trial` and `record` make it a gate's link."""

    def __init__(
        self,
        sink: str,
        config: BreakerConfig,
        snapshots: Snapshots,
        *,
        on_transition: Callable[[CircuitBreaker, BreakerState, str], None] | None = None,
    ) -> None:
        self.snapshots = snapshots
        self._listener = on_transition
        self.breaker = CircuitBreaker(sink, config, on_transition=self._moved)
        saved = snapshots.load("breaker", sink)
        if saved is not None:
            self.breaker.restore(saved)
            self._save()

    def _moved(self, breaker: CircuitBreaker, previous: BreakerState, reason: str) -> None:
        self._save()
        if self._listener is not None:
            self._listener(breaker, previous, reason)

    def _save(self) -> None:
        self.snapshots.save("breaker", self.breaker.sink, self.breaker.snapshot())

    def view(self) -> BreakerView:
        return self.breaker.view()

    def acquire_trial(self) -> tuple[bool, BreakerView]:
        return self.breaker.acquire_trial()

    def record(self, outcomes: list[CallOutcome]) -> BreakerView:
        return self.breaker.record(outcomes)
