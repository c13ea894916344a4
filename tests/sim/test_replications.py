"""Multi-seed runs (means and intervals of every metric) and common random numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from simhelpers import SCENARIOS, UNLIMITED

from omnillm_sim.cli import main
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import Scenario, load_scenario
from omnillm_sim.sim.stats import SCALAR_METRICS


def test_run_over_seeds_reports_every_metric_with_its_interval(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(["run", str(SCENARIOS / "steady.toml"), "--seeds", "3", "--seed", "5",
                 "--set", "duration=40s", "--no-check", "--out", str(out)]) == 0
    data = json.loads((out / "summary.json").read_text())
    reps = data["replications"]
    assert reps["seeds"] == [5, 6, 7] and reps["confidence"] == 0.95
    scenario = load_scenario(SCENARIOS / "steady.toml", {"duration": "40s"})
    singles = [run(scenario, seed, check=False).metrics for seed in (5, 6, 7)]
    assert set(reps["metrics"]) == set(SCALAR_METRICS)
    for name in SCALAR_METRICS:
        values = [float(getattr(m, name)) for m in singles]
        mean = sum(values) / 3
        entry = reps["metrics"][name]
        assert entry["mean"] == pytest.approx(mean, rel=1e-6, abs=1e-6)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        # t(0.975, 2) = 4.303 (t table)
        assert entry["half_width"] == pytest.approx(4.303 * sd / math.sqrt(3), rel=1e-3,
                                                    abs=1e-6)
    assert (out / "replications.png").stat().st_size > 0
    assert "## Replications" in (out / "summary.md").read_text()


def test_policies_on_one_seed_see_the_same_arrivals_and_service_draws(
    make_scenario: Callable[..., Scenario],
) -> None:
    scenario = make_scenario(UNLIMITED, duration="60s",
                             workload={"kind": "poisson", "rate": "5/s"},
                             requests={"prompt_tokens": {"dist": "exponential", "mean": 500}})
    for seed in (1, 2, 3):
        a = run(scenario.with_policy("omnillm-0.1.5"), seed)
        b = run(scenario.with_policy("safe"), seed)
        assert [(r.id, r.arrival, r.prompt_tokens) for r in a.records] == \
            [(r.id, r.arrival, r.prompt_tokens) for r in b.records]
        # Nothing is refused and the provider has no queue: each request's latency is its
        # own service draw, identical under both policies.
        assert [r.end - r.arrival for r in a.records] == [r.end - r.arrival for r in b.records]


def test_compare_over_seeds_reports_paired_differences(tmp_path: Path) -> None:
    out = tmp_path / "c"
    assert main(["compare", str(SCENARIOS / "steady.toml"), "--seeds", "3", "--set",
                 "duration=30s", "--no-check", "--no-charts", "--out", str(out)]) == 0
    data = json.loads((out / "summary.json").read_text())
    paired = data["paired_differences"]
    assert paired["baseline"] == "omnillm-0.1.5"
    arrivals = paired["safe"]["metrics"]["arrivals"]
    # Common random numbers: the same arrivals under both policies on every seed.
    assert (arrivals["mean"], arrivals["half_width"]) == (0.0, 0.0)
    assert set(data["runs"]["safe"]["replications"]["metrics"]) == set(SCALAR_METRICS)
