"""Every breaker transition and setting, driven by an injected clock: no sleeping."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from breakwater.breaker import (
    BreakerConfig,
    BreakerState,
    CallOutcome,
    CircuitBreaker,
    counts_as_failure,
)
from breakwater.errors import PoisonRecord, StoreUnavailable

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def make(**config: object) -> tuple[CircuitBreaker, Clock, list[tuple[BreakerState, BreakerState, str]]]:
    clock = Clock()
    moves: list[tuple[BreakerState, BreakerState, str]] = []
    breaker = CircuitBreaker(
        "db",
        BreakerConfig(**config),
        clock=clock,
        on_transition=lambda b, previous, reason: moves.append((previous, b.state, reason)),
    )
    return breaker, clock, moves


def fail(breaker: CircuitBreaker, n: int = 1, *, trial: bool = False, duration_s: float = 0.01) -> None:
    for _ in range(n):
        breaker.record([CallOutcome(False, duration_s, breaker.epoch, trial, "ConnectionError: refused")])


def succeed(breaker: CircuitBreaker, n: int = 1, *, trial: bool = False, duration_s: float = 0.01) -> None:
    for _ in range(n):
        breaker.record([CallOutcome(True, duration_s, breaker.epoch, trial)])


def test_defaults() -> None:
    c = BreakerConfig()
    assert (c.failure_threshold, c.success_threshold, c.reset_timeout_s, c.half_open_max_calls) == (5, 2, 30.0, 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_threshold": 0},
        {"success_threshold": 0},
        {"reset_timeout_s": 0},
        {"failure_rate_threshold": 1.5},
        {"window_type": "sliding"},
        {"half_open_max_calls": 0},
        {"failure_rate_threshold": 0.5, "window_size": 5, "minimum_calls": 10},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BreakerConfig(**bad)


def test_consecutive_failures_open_it() -> None:
    breaker, _, moves = make(failure_threshold=3)
    fail(breaker, 2)
    succeed(breaker)  # a success resets the count
    fail(breaker, 2)
    assert breaker.state == CLOSED
    fail(breaker)
    assert breaker.state == OPEN
    assert breaker.trips == 1
    assert moves[-1][:2] == (CLOSED, OPEN) and "3 consecutive failures" in moves[-1][2]


def test_open_becomes_half_open_after_the_reset_timeout() -> None:
    breaker, clock, _ = make(failure_threshold=1, reset_timeout_s=30)
    fail(breaker)
    clock.now += 29.9
    assert breaker.view().state == OPEN
    clock.now += 0.2
    assert breaker.view().state == HALF_OPEN


def test_half_open_closes_after_consecutive_trial_successes() -> None:
    breaker, clock, moves = make(failure_threshold=1, success_threshold=2, half_open_max_calls=1)
    fail(breaker)
    clock.now += 31
    for _ in range(2):
        granted, view = breaker.acquire_trial()
        assert granted and view.state == HALF_OPEN
        succeed(breaker, trial=True)
    assert breaker.state == CLOSED
    assert [(a.name, b.name) for a, b, _ in moves] == [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
    ]


def test_a_failed_trial_opens_it_again_with_a_fresh_timeout() -> None:
    breaker, clock, _ = make(failure_threshold=1, reset_timeout_s=10)
    fail(breaker)
    clock.now += 11
    assert breaker.acquire_trial()[0]
    fail(breaker, trial=True)
    view = breaker.view()
    assert view.state == OPEN and view.retry_at == clock.now + 10
    assert breaker.trips == 2


def test_trial_permits_are_limited_across_all_callers() -> None:
    breaker, clock, _ = make(failure_threshold=1, half_open_max_calls=2)
    fail(breaker)
    clock.now += 31
    grants = [breaker.acquire_trial()[0] for _ in range(5)]
    assert grants == [True, True, False, False, False]
    succeed(breaker, trial=True)  # a permit comes back with its outcome
    assert breaker.acquire_trial()[0] is True


def test_a_permit_never_reported_back_expires() -> None:
    breaker, clock, _ = make(failure_threshold=1, trial_timeout_s=60)
    fail(breaker)
    clock.now += 31
    assert breaker.acquire_trial()[0]
    assert not breaker.acquire_trial()[0]
    clock.now += 61  # its holder died
    assert breaker.acquire_trial()[0]


def test_no_permit_is_given_when_closed_or_open() -> None:
    breaker, _, _ = make(failure_threshold=1)
    assert breaker.acquire_trial() == (False, breaker.view())
    fail(breaker)
    granted, view = breaker.acquire_trial()
    assert not granted and view.state == OPEN


def test_outcomes_from_an_older_epoch_do_not_move_it() -> None:
    breaker, clock, _ = make(failure_threshold=2)
    stale_epoch = breaker.epoch
    fail(breaker, 2)
    clock.now += 31
    breaker.acquire_trial()
    assert breaker.state == HALF_OPEN
    # Late reports of calls made while it was still closed:
    breaker.record([CallOutcome(True, 0.01, stale_epoch)] * 5)
    assert breaker.state == HALF_OPEN


def test_failure_rate_over_a_count_window() -> None:
    breaker, _, _ = make(failure_rate_threshold=0.5, window_type="count", window_size=10, minimum_calls=4)
    fail(breaker)
    succeed(breaker)
    fail(breaker)
    assert breaker.state == CLOSED  # 3 calls: below minimum_calls
    succeed(breaker)  # 4 calls, 50% failed
    assert breaker.state == OPEN


def test_failure_rate_window_forgets_old_calls_by_count() -> None:
    breaker, _, _ = make(failure_rate_threshold=0.5, window_type="count", window_size=4, minimum_calls=4)
    fail(breaker)
    succeed(breaker, 3)
    succeed(breaker, 2)  # the failure has left the 4-call window
    fail(breaker)
    assert breaker.state == CLOSED  # 1 of the last 4


def test_failure_rate_over_a_time_window() -> None:
    breaker, clock, _ = make(failure_rate_threshold=0.6, window_type="time", window_size=10, minimum_calls=3)
    fail(breaker, 2)
    clock.now += 11  # both failures leave the 10 s window
    succeed(breaker, 2)
    fail(breaker, 2)
    assert breaker.state == CLOSED  # 2 of 4 in the window: 50% < 60%
    fail(breaker)
    assert breaker.state == OPEN  # 3 of 5: 60%


def test_slow_calls_count_as_failures() -> None:
    breaker, _, _ = make(failure_threshold=2, slow_call_duration_s=0.5)
    succeed(breaker, 2, duration_s=0.6)
    assert breaker.state == OPEN


def test_errors_that_do_not_count() -> None:
    assert counts_as_failure(StoreUnavailable("db", "connection refused"))
    assert counts_as_failure(ConnectionError("refused"))
    assert not counts_as_failure(PoisonRecord("db", "check constraint violated"))


def test_forced_open_stays_open_until_released() -> None:
    breaker, clock, moves = make()
    breaker.force(OPEN, "maintenance by alice")
    clock.now += 3600
    view = breaker.view()
    assert view.state == OPEN and view.forced
    assert breaker.acquire_trial()[0] is False
    breaker.force(None, "release by alice")
    assert breaker.view().state == CLOSED and not breaker.view().forced
    assert "maintenance by alice" in moves[0][2]


def test_forced_closed_ignores_failures() -> None:
    breaker, _, _ = make(failure_threshold=1)
    breaker.force(CLOSED, "known flaky, keep writing")
    fail(breaker, 10)
    assert breaker.state == CLOSED


def test_half_open_cannot_be_forced() -> None:
    breaker, _, _ = make()
    with pytest.raises(ValueError):
        breaker.force(HALF_OPEN, "no")


def test_each_state_change_is_logged_once_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    breaker, clock, _ = make(failure_threshold=2)
    with caplog.at_level(logging.WARNING, logger="breakwater.breaker"):
        fail(breaker, 5)  # opens once; the later failures are not logged again
        clock.now += 31
        breaker.view()
        breaker.view()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "breaker db: CLOSED -> OPEN (2 consecutive failures, last: ConnectionError: refused)",
        "breaker db: OPEN -> HALF_OPEN (30 s reset timeout passed)",
    ]


def test_snapshot_and_restore_keep_the_state_and_start_a_new_epoch() -> None:
    breaker, clock, _ = make(failure_threshold=1)
    fail(breaker)
    saved = breaker.snapshot()
    restored = CircuitBreaker("db", BreakerConfig(failure_threshold=1), clock=clock)
    restored.restore(saved)
    assert restored.state == OPEN
    assert restored.epoch == breaker.epoch + 1
    assert restored.view().retry_at == breaker.view().retry_at
    clock.now += 31
    assert restored.view().state == HALF_OPEN
