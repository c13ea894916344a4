"""The simulator shows the crate's edges (issue 12): stream quirks, retry-after headers and
the budget limit as omnillm sees it, from scenario files on disk and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from simhelpers import SCENARIOS, merge

from omnillm_sim.errors import ScenarioError
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import load_scenario, scenario_from_dict

CLI = [sys.executable, "-m", "omnillm_sim.cli"]

BASE: dict[str, Any] = {
    "seed": 3,
    "duration": "2m",
    "keys": [{"label": "k", "count": 2}],
    "requests": {"model": "gpt-4o", "prompt_tokens": {"dist": "constant", "mean": 100},
                 "output_tokens": {"dist": "constant", "mean": 100}, "max_output_tokens": 1024},
    "workload": {"kind": "poisson", "rate": "2/s"},
}


def test_stream_cancel_scenario_report_answers_its_question(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [*CLI, "run", str(SCENARIOS / "stream-cancel.toml"), "--set", "duration=3m",
         "--no-charts", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = (out / "summary.md").read_text()
    assert "how long until leaked reservations or one wrapped counter stop" in report
    assert "settled twice" in report and "never settled" in report
    assert "refused for BUDGET by a counter corrupted by double settles" in report
    assert "no violation" in report


def test_stream_quirks_are_findings_of_the_faithful_policy_only() -> None:
    spec = merge(BASE, {"requests": {"stream_fraction": 1.0}, "budget": {"limit": "5.00"},
                        "provider": {"abandon_rate": 0.1, "late_cancel_rate": 0.1}})
    scenario = scenario_from_dict(spec)
    faithful = run(scenario)
    stats = faithful.gateway_stats
    assert stats["leaked"] > 0 and stats["double_settled"] > 0
    # the leaked estimates are still reserved: the open count is exactly the leaks
    assert faithful.budget.open_count == stats["leaked"]
    assert faithful.budget.open_reserved == stats["leaked_reserved"]
    assert any("never settled" in f for f in faithful.findings)
    safe = run(scenario.with_policy("safe"))
    assert safe.budget.open_count == 0 and not safe.findings
    assert safe.gateway_stats["leaked"] == 0 and safe.gateway_stats["double_settled"] == 0


def test_odd_retry_after_headers_cool_faithful_keys_for_sixty_seconds() -> None:
    # the provider allows 30 requests per minute per key: 429s with a retry-after header
    spec = merge(BASE, {"provider": {"rpm": 30}, "duration": "5m"})

    def no_key(odd: float, policy: str) -> int:
        scenario = scenario_from_dict(merge(spec, {"provider": {"odd_retry_after": odd}}))
        result = run(scenario.with_policy(policy))
        return dict(result.metrics.rejections_by_reason).get("NO_KEY", 0)

    # whole seconds: both policies wait what the provider asked; "12.3": omnillm waits 60 s
    assert no_key(1.0, "omnillm-0.1.5") > no_key(0.0, "omnillm-0.1.5")
    assert no_key(1.0, "safe") <= no_key(0.0, "safe")


def test_report_names_the_limit_as_omnillm_sees_it() -> None:
    scenario = scenario_from_dict(merge(BASE, {"budget": {"limit": "0.0157"}}))
    faithful = run(scenario)
    assert faithful.budget.limit == 15_699
    assert any("budget limit as omnillm sees it: $0.015699" in f for f in faithful.findings)
    safe = run(scenario.with_policy("safe"))
    assert safe.budget.limit == 15_700 and not safe.findings


@pytest.mark.parametrize("key", ["abandon_rate", "late_cancel_rate", "odd_retry_after"])
def test_new_provider_keys_are_checked(key: str) -> None:
    with pytest.raises(ScenarioError, match=f"provider.{key}: expected a fraction in"):
        scenario_from_dict(merge(BASE, {"provider": {key: 1.5}}))


def test_stream_cancel_scenario_loads() -> None:
    scenario = load_scenario(SCENARIOS / "stream-cancel.toml")
    assert scenario.provider.abandon_rate > 0 and scenario.provider.late_cancel_rate > 0
