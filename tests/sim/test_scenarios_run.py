"""Every shipped scenario runs under both policies with the invariant checker on."""

from __future__ import annotations

from pathlib import Path

import pytest
from simhelpers import SCENARIOS

from omnillm_sim.report.summary import run_markdown
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import load_scenario

ALL = sorted(SCENARIOS.glob("*.toml"))


def test_the_required_scenarios_exist() -> None:
    names = {p.stem for p in ALL}
    assert {"steady", "burst", "key-outage", "budget-exhaustion", "underestimate",
            "azure-conv-replay"} <= names


@pytest.mark.parametrize("policy", ["omnillm-0.1.5", "safe"])
@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_scenario_runs_without_violation(path: Path, policy: str) -> None:
    scenario = load_scenario(path).with_policy(policy)
    if scenario.workload.trace is not None and not scenario.workload.trace.path.exists():
        pytest.skip(f"trace {scenario.workload.trace.path} not present")
    result = run(scenario)  # the checker raises InvariantViolation on any violation
    assert result.checked and result.events > 0
    # omnillm never settles a stream its client dropped: those stay open (stream-cancel)
    assert result.budget.open_count == result.gateway_stats["leaked"]
    if policy != "safe" and result.gateway_stats["leaked"] + result.gateway_stats["double_settled"]:
        assert any("reference 8." in finding for finding in result.findings)
        return  # a counter corrupted by double settles has no overshoot bound (issue 12)
    m = result.metrics
    assert m.arrivals > 100
    if path.stem == "azure-conv-replay":
        assert m.arrivals == 19_366  # the whole trace (README of ../shared/data)
    if policy == "safe":
        # Upper-bound estimates: no actual cost exceeds its estimate, so no overshoot.
        assert result.budget.underestimated == 0 and m.overshoot == 0 and not result.findings
    else:
        # The only allowed deviation is the documented overshoot, and only with an underestimate.
        for finding in result.findings:
            assert finding.startswith("budget overshoot")
        assert (m.overshoot > 0) == bool(result.findings)
        assert m.overshoot <= result.budget.underestimated  # invariant I3


def test_underestimate_faithful_overshoots_and_safe_does_not() -> None:
    scenario = load_scenario(SCENARIOS / "underestimate.toml")
    faithful = run(scenario.with_policy("omnillm-0.1.5"))
    safe = run(scenario.with_policy("safe"))
    limit = scenario.budget.limit
    assert limit is not None
    assert faithful.budget.spent > limit and faithful.metrics.overshoot > 0
    assert safe.budget.spent <= limit and safe.metrics.overshoot == 0
    report = run_markdown(faithful)
    assert "finding: budget overshoot" in report
    assert "overshoot (peak used - limit)" in report


def test_key_outage_kills_key_2_and_moves_its_load() -> None:
    result = run(load_scenario(SCENARIOS / "key-outage.toml"))
    statuses = dict(result.metrics.statuses)
    # Requests already sent to key-2 when the first 401 returns also fail with 401.
    assert statuses.get("http_503", 0) > 0 and 1 <= statuses.get("http_401", 0) <= 5
    assert result.gateway_stats["keys_dead"] == 1
    index = result.key_labels.index("key-2")
    assert result.samples[-1].key_states[index] == "dead"
    assert all(s.inflight[index] == 0 for s in result.samples if s.time > 5 * 60 + 10)


def test_budget_exhaustion_rejects_with_budget_after_the_money_is_gone() -> None:
    result = run(load_scenario(SCENARIOS / "budget-exhaustion.toml"))
    rejected = [r for r in result.records if r.reason == "BUDGET"]
    assert len(rejected) > 100
    first = min(r.arrival for r in rejected)
    assert 60 < first < 600
    late = [r for r in result.records if r.arrival > first + 60]
    assert late and all(r.decision == "rejected" for r in late)
