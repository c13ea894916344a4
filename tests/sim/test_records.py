"""Runs without per-request records: the same metrics, bounded memory, and the option's plumbing."""

from __future__ import annotations

import math
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from simhelpers import SCENARIOS

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.cli import main
from omnillm_sim.errors import InvariantViolation, ScenarioError
from omnillm_sim.report.summary import run_dict, to_json_bytes
from omnillm_sim.report.writer import write_run_report
from omnillm_sim.sim.checker import InvariantChecker
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.metrics import RunResult
from omnillm_sim.sim.scenario import Scenario, load_scenario

Make = Callable[..., Scenario]

CASES = [
    ("steady.toml", {"duration": "2m"}),
    ("budget-exhaustion.toml", {"duration": "3m", "budget.limit": "6.00"}),
    ("key-outage.toml", {"duration": "3m"}),
    ("underestimate.toml", {"duration": "2m"}),
    ("underestimate.toml", {"duration": "2m", "gateway.policy": "safe"}),
    ("burst.toml", {"duration": "2m", "requests.stream_fraction": 0.5,
                    "requests.cancel_rate": 0.2}),
]


def _nearest_rank(values: list[float], q: float) -> float | None:
    """The textbook nearest-rank percentile, written independently of the code under test."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(q / 100 * len(ordered)) - 1]


def _from_records(result: RunResult) -> dict[str, Any]:
    """The aggregates recomputed from the per-request records alone."""
    records = result.records
    admitted = [r for r in records if r.decision == "admitted"]
    ok = [r for r in admitted if r.status == "ok"]
    latencies = [r.end - r.arrival for r in ok]
    waits = [r.start - r.arrival for r in admitted if r.start is not None]
    return {
        "arrivals": len(records),
        "admitted": len(admitted),
        "ok": len(ok),
        "rejections_by_reason": tuple(sorted(Counter(r.reason for r in records
                                                     if r.reason).items())),
        "statuses": tuple(sorted(Counter(r.status for r in records).items())),
        "p50": _nearest_rank(latencies, 50),
        "p99": _nearest_rank(latencies, 99),
        "max_latency": max(latencies) if latencies else None,
        "mean_latency": math.fsum(latencies) / len(latencies) if latencies else None,
        "mean_wait": math.fsum(waits) / len(waits) if waits else None,
        "per_key_counts": tuple(
            (label, sum(1 for r in admitted if r.key == label),
             sum(1 for r in ok if r.key == label))
            for label in result.key_labels
        ),
    }


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=[f"{n}-{i}" for i, (n, _) in
                                                            enumerate(CASES)])
def test_metrics_without_records_equal_metrics_recomputed_from_records(
    name: str, overrides: dict[str, object]
) -> None:
    scenario = load_scenario(SCENARIOS / name, overrides)
    with_records = run(scenario)
    without = run(scenario, keep_records=False)
    assert without.records == () and without.budget_steps == ()
    assert len(with_records.records) == with_records.metrics.arrivals > 0
    # Exactly equal, not approximately: both come from the same events.
    assert without.metrics == with_records.metrics
    assert to_json_bytes(run_dict(without)) == to_json_bytes(run_dict(with_records))
    expected = _from_records(with_records)
    m = without.metrics
    got = {
        "arrivals": m.arrivals, "admitted": m.admitted, "ok": m.ok,
        "rejections_by_reason": m.rejections_by_reason, "statuses": m.statuses,
        "p50": m.p50, "p99": m.p99, "max_latency": m.max_latency,
        "mean_latency": m.mean_latency, "mean_wait": m.mean_wait,
        "per_key_counts": tuple((label, n, k) for label, n, k, _ in m.per_key),
    }
    assert got == expected


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=[f"{n}-{i}" for i, (n, _) in
                                                            enumerate(CASES)])
def test_time_in_system_integrals_equal_the_requests_own_times(
    name: str, overrides: dict[str, object]
) -> None:
    """The integral of requests in flight over time is the sum of each request's time in the
    system (arrival to reply), in total and per key: two ways of counting the same area."""
    result = run(load_scenario(SCENARIOS / name, overrides), check=False)
    admitted = [r for r in result.records if r.decision == "admitted"]
    assert admitted and all(r.end is not None for r in admitted)
    total = math.fsum(r.end - r.arrival for r in admitted)  # type: ignore[operator]
    assert result.inflight_area == pytest.approx(total, rel=1e-9)
    for label, area in zip(result.key_labels, result.key_busy_area, strict=True):
        own = math.fsum(r.end - r.arrival for r in admitted if r.key == label)  # type: ignore[operator]
        assert area == pytest.approx(own, rel=1e-9, abs=1e-9), label
    assert sum(1 for a in result.key_busy_area if a > 0) > 1  # several keys carried load


def test_records_false_in_the_scenario_file_and_on_the_command_line(
    make_scenario: Make, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"duration": "20s", "workload": {"kind": "poisson", "rate": "5/s"}}
    assert make_scenario(base).records is True
    off = make_scenario(base, records=False)
    assert off.records is False
    result = run(off)
    assert result.records == () and result.metrics.arrivals > 0
    assert run(off, keep_records=True).records  # the run argument wins over the file
    with pytest.raises(ScenarioError, match=r"records: expected true or false, got 'no'"):
        make_scenario(base, records="no")
    # Reports (charts included) are written from a run without records.
    paths = write_run_report(result, tmp_path / "r")
    assert sorted(p.name for p in paths if p.suffix == ".png") == [
        "keys.png", "latency_cdf.png", "rejections.png", "spend.png"]
    assert main(["run", str(SCENARIOS / "steady.toml"), "--set", "duration=30s",
                 "--no-records", "--no-charts", "--out", str(tmp_path / "cli")]) == 0
    assert "requests" in capsys.readouterr().out


def _peak_bytes(scenario: Scenario, **kwargs: Any) -> int:
    tracemalloc.start()
    try:
        run(scenario, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_without_records_grows_by_a_few_floats_per_request(make_scenario: Make) -> None:
    def scenario(seconds: int) -> Scenario:
        return make_scenario({
            "duration": f"{seconds}s", "workload": {"kind": "poisson", "rate": "100/s"},
            "keys": [{"label": "k", "rpm": 10**6, "tpm": 10**9}],
            "provider": {"service": "1s"},
        })

    small, large = scenario(20), scenario(100)  # about 2,000 and 10,000 requests
    extra = 8_000
    per_request_off = (_peak_bytes(large, keep_records=False, check=True)
                       - _peak_bytes(small, keep_records=False, check=True)) / extra
    per_request_on = (_peak_bytes(large) - _peak_bytes(small)) / extra
    # Two floats in arrays (16 bytes, plus the arrays' spare capacity) versus a record tuple
    # and two budget steps (hundreds of bytes).
    assert per_request_off < 64, per_request_off
    assert per_request_on > 3 * per_request_off, (per_request_on, per_request_off)


def test_checker_catches_a_second_admission_of_the_same_request() -> None:
    budget = BudgetTracker("1.00")
    checker = InvariantChecker(budget, {})
    budget.try_reserve(10)
    checker.admitted(4, 10)
    budget.settle(10, 10)
    checker.settled(4, 10)
    with pytest.raises(InvariantViolation, match="request 4 admitted twice"):
        checker.admitted(4, 10)
    with pytest.raises(InvariantViolation, match="request 3 admitted twice"):
        checker.admitted(3, 10)  # ids come in arrival order: 3 cannot come after 4


def _key(label: str, inflight: int, rpm_used: int) -> SimpleNamespace:
    status = SimpleNamespace(label=label, inflight_tokens=inflight, rpm_used=rpm_used)
    return SimpleNamespace(
        label=label,
        cap=SimpleNamespace(inflight=inflight),
        rpm=SimpleNamespace(count=lambda now: rpm_used),
        status=lambda now: status,
    )


@pytest.mark.parametrize(("inflight", "rpm_used", "invariant"),
                         [(101, 0, "K1"), (-1, 0, "K1"), (50, 11, "K2")])
@pytest.mark.parametrize("about", [1, None])
def test_checker_reads_the_keys_a_gateway_call_touched(inflight: int, rpm_used: int,
                                                       invariant: str, about: int | None) -> None:
    budget = BudgetTracker("1.00")
    keys = [_key("a", 10, 1), _key("b", inflight, rpm_used)]
    checker = InvariantChecker(budget, {"a": (10, 100), "b": (10, 100)}, keys)
    checker.check(1, 0.0)  # no gateway call since the last check: keys are not read
    checker.touched(0)  # a call about key "a" reads key "a" only (only it can have changed)
    checker.check(2, 0.5)
    checker.touched(about)  # about key "b", or about no one key (then every key)
    with pytest.raises(InvariantViolation) as info:
        checker.check(3, 1.0)
    assert info.value.invariant == invariant and "key b" in str(info.value)
