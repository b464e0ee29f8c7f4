"""The writer's side of the breaker (no Ray call on the closed and open paths) and the
shard writer's routing of failures to the dead-letter queue."""

from __future__ import annotations

from pathlib import Path

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, BreakerState, CircuitBreaker
from breakwater.dead_letters import DEAD, WAITING, DeadLetterConfig, DeadLetterQueue
from breakwater.gate import SinkGate, Verdict
from breakwater.writer import ShardWriter
from tests.unit.fakes import Clock, CountingLink, MemorySink, batch_of, position


def gate_with(config: BreakerConfig, clock: Clock) -> tuple[SinkGate, CountingLink, CircuitBreaker]:
    breaker = CircuitBreaker("db", config, clock=clock)
    link = CountingLink(breaker)
    return SinkGate(link, report_interval_s=1.0, view_ttl_s=5.0, clock=clock), link, breaker


def test_closed_path_costs_no_call_per_batch_and_reports_in_batches() -> None:
    clock = Clock()
    gate, link, _ = gate_with(BreakerConfig(), clock)
    start = link.total
    for _ in range(100):
        decision = gate.decide()
        assert decision.verdict == Verdict.CALL
        gate.record(decision, ok=True, duration_s=0.001)
    assert link.total == start  # nothing reported yet: within the report interval
    clock.advance(1.1)
    gate.record(gate.decide(), ok=True, duration_s=0.001)
    assert link.calls["record"] == 1  # one report carrying 101 outcomes


def test_a_failure_is_reported_at_once_and_the_reply_opens_the_gate() -> None:
    clock = Clock()
    gate, link, breaker = gate_with(BreakerConfig(failure_threshold=2), clock)
    for _ in range(2):
        decision = gate.decide()
        gate.record(decision, ok=False, duration_s=0.01, error="refused")
    assert link.calls["record"] == 2
    assert breaker.state == BreakerState.OPEN
    assert gate.view.state == BreakerState.OPEN


def test_open_path_diverts_without_any_call_until_the_retry_time() -> None:
    clock = Clock()
    gate, link, _breaker = gate_with(BreakerConfig(failure_threshold=1, reset_timeout_s=30), clock)
    gate.record(gate.decide(), ok=False, duration_s=0.01)
    before = link.total
    for _ in range(1000):
        assert gate.decide().verdict == Verdict.DIVERT
    assert link.total == before
    clock.advance(31)
    decision = gate.decide()
    assert decision.verdict == Verdict.TRIAL
    assert link.calls["acquire_trial"] == 1


def test_only_the_permit_holder_tries_the_sink() -> None:
    clock = Clock()
    config = BreakerConfig(failure_threshold=1, reset_timeout_s=10, half_open_max_calls=1)
    breaker = CircuitBreaker("db", config, clock=clock)
    gates = [SinkGate(CountingLink(breaker), clock=clock) for _ in range(4)]  # four writers
    gates[0].record(gates[0].decide(), ok=False, duration_s=0.01)
    clock.advance(11)
    verdicts = [g.decide().verdict for g in gates]
    assert verdicts.count(Verdict.TRIAL) == 1
    assert verdicts.count(Verdict.DIVERT) == 3


def test_a_stale_view_is_refreshed_so_an_operators_force_reaches_every_writer() -> None:
    clock = Clock()
    gate, _link, breaker = gate_with(BreakerConfig(), clock)
    breaker.force(BreakerState.OPEN, "maintenance")
    assert gate.decide().verdict == Verdict.CALL  # the cached view is still fresh
    clock.advance(6)
    assert gate.decide().verdict == Verdict.DIVERT


def make_writer(tmp_path: Path, clock: Clock, config: BreakerConfig | None = None):  # type: ignore[no-untyped-def]
    sink = MemorySink("db")
    breaker = CircuitBreaker("db", config or BreakerConfig(failure_threshold=2), clock=clock)
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"), clock=clock)
    writer = ShardWriter([sink], {"db": SinkGate(breaker, clock=clock)}, queue, job_id="job-1", clock=clock)
    return writer, sink, breaker, queue


def test_writes_are_counted_written_or_duplicate(tmp_path: Path) -> None:
    writer, sink, _, _ = make_writer(tmp_path, Clock())
    rows = [position(257000001, 1000 + i, i) for i in range(10)]
    first = writer.write(batch_of(rows), "b1")
    again = writer.write(batch_of(rows), "b2")
    assert first.counts[acc.sink("db", acc.OUTCOME_WRITTEN)] == 10
    assert again.counts[acc.sink("db", acc.OUTCOME_DUPLICATE)] == 10
    assert len(sink.rows) == 10


def test_a_down_sink_sends_the_batch_to_the_queue_then_the_open_breaker_diverts(tmp_path: Path) -> None:
    writer, sink, breaker, queue = make_writer(tmp_path, Clock())
    sink.down = True
    reports = [writer.write(batch_of([position(257000001, 1000 + i, i)]), f"b{i}") for i in range(5)]
    assert breaker.state == BreakerState.OPEN
    assert sink.calls == 2  # after two failures, nothing touches the sink
    assert sum(r.counts[acc.sink("db", acc.OUTCOME_DLQ)] for r in reports) == 5
    assert queue.stats().waiting == 5
    errors = queue.stats().by_error
    assert errors == {"StoreUnavailable": 2, "BreakerOpen": 3}


def test_poison_rows_are_isolated_and_the_rest_is_written(tmp_path: Path) -> None:
    writer, sink, breaker, queue = make_writer(tmp_path, Clock())
    sink.poison = {257000003}
    rows = [position(257000000 + i, 1000 + i, i) for i in range(8)]
    report = writer.write(batch_of(rows), "b1")
    assert report.counts[acc.sink("db", acc.OUTCOME_WRITTEN)] == 7
    assert report.counts[acc.sink("db", acc.OUTCOME_DLQ)] == 1
    assert len(sink.rows) == 7
    dead = queue.peek(10, status=DEAD)
    assert [x.row[0] for x in dead] == [257000003]
    assert queue.peek(10, status=WAITING) == []
    assert breaker.state == BreakerState.CLOSED  # bad data says nothing about the sink
