"""Properties over random small scenarios: the checker never fires, and the safe policy never
overshoots its budget, whatever the keys, limits, traffic and faults."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import scenario_from_dict


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.integers(1, 4))
    data: dict[str, Any] = {
        "duration": f"{draw(st.integers(5, 40))}s",
        "gateway": {
            "policy": draw(st.sampled_from(["omnillm-0.1.5", "safe"])),
            "breaker_threshold": draw(st.integers(1, 5)),
            "breaker_cooldown": f"{draw(st.integers(1, 20))}s",
            "request_timeout": f"{draw(st.integers(2, 60))}s",
        },
        "keys": [{"label": "k", "count": keys, "rpm": draw(st.integers(1, 60)),
                  "tpm": draw(st.integers(500, 20_000))}],
        "budget": {"limit": draw(st.sampled_from(["0.01", "0.05", "0.50", "unlimited"]))},
        "requests": {
            "model": draw(st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"])),
            "prompt_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 3000))},
            "output_tokens": {"dist": "uniform", "low": 1, "high": draw(st.integers(1, 2000))},
            "max_output_tokens": draw(st.integers(1, 2048)),
            "stream_fraction": draw(st.sampled_from([0.0, 0.5])),
            "cancel_rate": draw(st.sampled_from([0.0, 0.2])),
        },
        "workload": {"kind": "poisson", "rate": f"{draw(st.integers(1, 20))}/s"},
        "provider": {
            "ttft": "0.2s",
            "tokens_per_second": draw(st.sampled_from([20, 100, 1000])),
            "concurrency": draw(st.integers(0, 3)),
            "rpm": draw(st.sampled_from([None, 5, 30])),
        },
    }
    if data["provider"]["rpm"] is None:
        del data["provider"]["rpm"]
    if draw(st.booleans()):
        data["faults"] = [{
            "key": "k" if keys == 1 else "k-1",
            "status": draw(st.sampled_from([401, 403, 429, 500, 503, 400])),
            "rate": draw(st.sampled_from([0.3, 1.0])),
            "start": f"{draw(st.integers(0, 10))}s",
            "end": f"{draw(st.integers(11, 30))}s",
        }]
    return data


@settings(max_examples=80)
@given(scenarios(), st.integers(0, 1000))
def test_random_scenarios_keep_every_invariant(data: dict[str, Any], seed: int) -> None:
    scenario = scenario_from_dict(data, source="hypothesis")
    result = run(scenario, seed)  # raises InvariantViolation on any violation
    assert result.budget.open_count == 0
    assert len(result.records) == result.metrics.arrivals
    assert sorted(r.id for r in result.records) == list(range(1, len(result.records) + 1))
    if scenario.gateway.policy == "safe" and scenario.budget.limit is not None:
        assert result.budget.peak_used <= scenario.budget.limit
