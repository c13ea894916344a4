"""Exact timelines of the engine and provider model, determinism, and the invariant checker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from simhelpers import SCENARIOS, UNLIMITED, merge, trace_workload

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.errors import InvariantViolation
from omnillm_sim.report.summary import run_dict, to_json_bytes
from omnillm_sim.sim.checker import InvariantChecker
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import Scenario, load_scenario

Make = Callable[..., Scenario]
Trace = Callable[..., Path]


def timeline(result: object) -> list[tuple[float, str, float | None, float | None]]:
    return [(r.arrival, r.status, r.start, r.end) for r in result.records]  # type: ignore[attr-defined]


def test_provider_slots_queue_requests_exactly(make_scenario: Make, csv_trace: Trace) -> None:
    # One slot, 10 s each: arrivals at 0, 1, 2 start at 0, 10, 20 and end at 10, 20, 30.
    trace = csv_trace([(0.0, 100, 10), (1.0, 100, 10), (2.0, 100, 10)])
    scenario = make_scenario(UNLIMITED, workload=trace_workload(trace),
                             provider={"concurrency": 1, "service": "10s"})
    assert timeline(run(scenario)) == [
        (0.0, "ok", 0.0, 10.0), (1.0, "ok", 10.0, 20.0), (2.0, "ok", 20.0, 30.0)]


def test_latency_is_ttft_plus_tokens_over_speed(make_scenario: Make, csv_trace: Trace) -> None:
    # 0.5 s to first token + 200 tokens / 50 tok/s = 4.5 s; output capped at max_output 100.
    trace = csv_trace([(0.0, 10, 200), (1.0, 10, 50)])
    scenario = make_scenario(
        UNLIMITED, workload=trace_workload(trace),
        provider={"ttft": "0.5s", "tokens_per_second": 50, "jitter": 0.0},
        requests={"max_output_tokens": 100},
    )
    result = run(scenario)
    assert timeline(result) == [(0.0, "ok", 0.0, 2.5), (1.0, "ok", 1.0, 2.5)]
    assert [r.output_tokens for r in result.records] == [100, 50]


def test_request_timeout_cuts_long_requests(make_scenario: Make, csv_trace: Trace) -> None:
    trace = csv_trace([(0.0, 10, 10), (5.0, 10, 10)])
    scenario = make_scenario(
        merge(UNLIMITED, {"gateway": {"request_timeout": "30s"}}),
        workload=trace_workload(trace), provider={"concurrency": 1, "service": "20s"},
    )
    # The second request queues until 20 s and would end at 40 s > 5 + 30: it times out at 35.
    assert timeline(run(scenario)) == [(0.0, "ok", 0.0, 20.0), (5.0, "timeout", 20.0, 35.0)]


def test_a_slot_freed_at_a_waiting_requests_deadline_times_it_out(
    make_scenario: Make, csv_trace: Trace
) -> None:
    """One slot, a 10 s timeout, service = output tokens at 1 token/s. A runs 0-9; D (at 1)
    runs 9-10; B (at 2) runs 10-12, ending exactly at its deadline (ok, not cut). C (at 2,
    behind B) has waited until its own deadline, 12, when B's reply frees the slot: C times
    out there without starting. The queue's timer fired at 11 (D's old expiry) and was set
    again for 12 after B's reply was scheduled, so B's reply comes first and frees a slot at
    C's deadline: the freed slot must not start a request whose time is up."""
    trace = csv_trace([(0.0, 10, 9), (1.0, 10, 1), (2.0, 10, 2), (2.0, 10, 5)])
    scenario = make_scenario(
        merge(UNLIMITED, {"gateway": {"request_timeout": "10s"}}),
        workload=trace_workload(trace),
        provider={"concurrency": 1, "ttft": "0s", "tokens_per_second": 1, "jitter": 0.0},
    )
    assert timeline(run(scenario)) == [
        (0.0, "ok", 0.0, 9.0), (1.0, "ok", 9.0, 10.0), (2.0, "ok", 10.0, 12.0),
        (2.0, "timeout", None, 12.0)]


def test_fault_windows_and_provider_rate_limit(make_scenario: Make, csv_trace: Trace) -> None:
    trace = csv_trace([(0.0, 10, 10), (12.0, 10, 10), (25.0, 10, 10), (26.0, 10, 10),
                       (27.0, 10, 10)])
    scenario = make_scenario(
        UNLIMITED, workload=trace_workload(trace),
        provider={"service": "1s", "error_latency": "0.5s", "rpm": 3},
        faults=[{"key": "k", "status": 503, "start": "10s", "end": "20s"}],
    )
    result = run(scenario)
    # 503 inside [10, 20); the provider's own RPM of 3 (counting requests it received at 0,
    # 25, 26) answers the 27 s request with 429 and retry-after = 60 - 27 = 33 s.
    assert timeline(result) == [
        (0.0, "ok", 0.0, 1.0), (12.0, "http_503", None, 12.5), (25.0, "ok", 25.0, 26.0),
        (26.0, "ok", 26.0, 27.0), (27.0, "http_429", None, 27.5)]
    status = result.gateway_stats
    assert status["failed"] == 2
    # The faithful gateway cools the key for the provider's retry-after (33 s), so at 27.5 s
    # it is unavailable until 60.5 s.
    last = result.samples[-1]
    assert last.time < 60.5 and last.key_states == ("cooling",)


def test_401_kills_the_key_and_later_requests_find_no_key(
    make_scenario: Make, csv_trace: Trace
) -> None:
    trace = csv_trace([(0.0, 10, 10), (5.0, 10, 10), (10.0, 10, 10)])
    scenario = make_scenario(UNLIMITED, workload=trace_workload(trace),
                             provider={"service": "1s", "error_latency": "0.5s"},
                             faults=[{"key": "k", "status": 401, "start": "4s"}])
    result = run(scenario)
    assert [(r.status, r.reason) for r in result.records] == [
        ("ok", None), ("http_401", None), ("rejected", "NO_KEY")]
    assert result.samples[-1].key_states == ("dead",)


def test_budget_rejections_and_spend_are_exact(make_scenario: Make, csv_trace: Trace) -> None:
    # gpt-4o on the omnillm-0.1.5 table: $5/M input, $15/M output. The faithful estimate of a
    # 100-token prompt (400 bytes) with max_output 100 is (100 + 100) x 5 = 1,000 µ$; the
    # actual cost of 100 + 20 tokens is 500 + 300 = 800 µ$. A 2,000 µ$ budget admits two.
    trace = csv_trace([(0.0, 100, 20), (0.1, 100, 20), (0.2, 100, 20), (5.0, 100, 20)])
    scenario = make_scenario(UNLIMITED, workload=trace_workload(trace),
                             budget={"limit": "0.002"}, provider={"service": "1s"},
                             requests={"max_output_tokens": 100})
    result = run(scenario)
    assert [(r.status, r.estimate, r.actual) for r in result.records] == [
        ("ok", 1000, 800), ("ok", 1000, 800), ("rejected", None, None), ("rejected", None, None)]
    assert [r.reason for r in result.records][2:] == ["BUDGET", "BUDGET"]
    assert result.budget.spent == 1600 and result.budget.open_count == 0


def test_same_seed_gives_identical_summary_and_other_seeds_differ() -> None:
    scenario = load_scenario(SCENARIOS / "steady.toml", {"duration": "2m"})
    first = to_json_bytes(run_dict(run(scenario, 5)))
    again = to_json_bytes(run_dict(run(scenario, 5)))
    other = to_json_bytes(run_dict(run(scenario, 6)))
    assert first == again
    assert first != other


def test_both_policies_see_the_same_arrivals() -> None:
    scenario = load_scenario(SCENARIOS / "underestimate.toml", {"duration": "1m"})
    faithful = run(scenario.with_policy("omnillm-0.1.5"))
    safe = run(scenario.with_policy("safe"))
    key = [(r.id, r.arrival, r.prompt_tokens) for r in faithful.records]
    assert key == [(r.id, r.arrival, r.prompt_tokens) for r in safe.records]


def test_checker_reports_event_time_and_state_of_a_violation() -> None:
    budget = BudgetTracker("1.00")
    checker = InvariantChecker(budget, {"k": (10, 1000)})
    checker.admitted(1, 500)
    budget.try_reserve(500)  # what the engine saw
    checker.check(1, 0.5)
    budget.try_reserve(700)  # a reservation the engine never saw: the ledgers disagree
    with pytest.raises(InvariantViolation) as info:
        checker.check(2, 1.25)
    assert info.value.invariant == "I1"
    assert "event #2 at t=1.250000s" in str(info.value)
    assert "used=1200" in str(info.value)


def test_checker_flags_overshoot_without_underestimate_as_i2() -> None:
    budget = BudgetTracker.from_micros(1000)
    checker = InvariantChecker(budget, {})
    budget.try_reserve(1000)
    checker.admitted(1, 1000)
    budget.settle(1000, 1500)
    checker.settled(1, 1500)
    checker.check(1, 1.0)  # actual > estimate: overshoot allowed, recorded as a finding
    assert len(checker.findings) == 1 and "overshoot" in checker.findings[0]
    budget2 = BudgetTracker.from_micros(1000)
    checker2 = InvariantChecker(budget2, {})
    budget2.try_reserve(1000)
    checker2.admitted(1, 1000)
    budget2.settle(1000, 1000)
    checker2.settled(1, 1000)
    budget2._used = 1001  # a broken tracker: above the limit with no underestimate
    budget2._spent = 1001
    checker2._charged = 1001
    with pytest.raises(InvariantViolation) as info:
        checker2.check(7, 3.0)
    assert info.value.invariant == "I2"


def test_checker_catches_an_admission_that_never_ends() -> None:
    budget = BudgetTracker("1.00")
    checker = InvariantChecker(budget, {})
    checker.admitted(1, 10)
    budget.try_reserve(10)
    with pytest.raises(InvariantViolation, match="I4"):
        checker.at_end(9, 2.0)
    with pytest.raises(InvariantViolation, match="I4"):
        checker.settled(2, 0)


def test_a_violation_stops_the_run(make_scenario: Make, csv_trace: Trace,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    trace = csv_trace([(0.0, 100, 20), (1.0, 100, 20)])
    scenario = make_scenario(UNLIMITED, workload=trace_workload(trace),
                             provider={"service": "5s"})
    from omnillm_sim import gateway

    real_finish = gateway.Gateway.finish

    def leaky_finish(self: gateway.Gateway, admission: object, outcome: object, now: float):
        settlement = real_finish(self, admission, outcome, now)  # type: ignore[arg-type]
        self.budget.try_reserve(1)  # corrupt the budget behind the engine's back
        return settlement

    monkeypatch.setattr(gateway.Gateway, "finish", leaky_finish)
    with pytest.raises(InvariantViolation) as info:
        run(scenario)
    assert info.value.invariant == "I1"
    assert "at t=5.000000s" in str(info.value)
    run(scenario, check=False)  # the same run without the checker completes


def test_checker_flags_a_spurious_budget_refusal_as_i5() -> None:
    budget = BudgetTracker.from_micros(1000)
    checker = InvariantChecker(budget, {})
    budget.try_reserve(600)
    checker.admitted(1, 600)
    checker.refused(2, 500)  # 600 + 500 > 1000: a legitimate refusal
    checker.check(1, 1.0)
    checker.refused(3, 400)  # 600 + 400 <= 1000: the gateway should have admitted it
    with pytest.raises(InvariantViolation) as info:
        checker.check(2, 2.0)
    assert info.value.invariant == "I5" and "request 3" in str(info.value)
