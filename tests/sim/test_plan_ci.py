"""``plan`` decides each point on confidence intervals with sequential replications."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simhelpers import SCENARIOS

from omnillm_sim.cli import main
from omnillm_sim.sim.metrics import Metrics
from omnillm_sim.sim.plan import parse_target, plan
from omnillm_sim.sim.scenario import Scenario, load_scenario

STEADY = load_scenario(SCENARIOS / "steady.toml")


def fake(**values: float) -> Metrics:
    base: dict[str, Any] = {f: 0 for f in Metrics.__slots__}  # type: ignore[attr-defined]
    base.update(rejections_by_reason=(), statuses=(), per_key=())
    base.update(values)
    return Metrics(**base)


def linear_runner(noise: float, calls: list[tuple[float, int]] | None = None) -> Any:
    """Rejection = 0.01 x factor / 3 (crosses 0.01 at x3) plus ± ``noise`` by seed parity."""
    base = STEADY.workload.rate

    def runner(sc: Scenario, seed: int) -> Metrics:
        factor = sc.workload.rate / base
        if calls is not None:
            calls.append((factor, seed))
        return fake(rejection=0.01 * factor / 3 + (noise if seed % 2 else -noise))

    return runner


def test_without_noise_intervals_decide_on_the_first_seeds_and_agree_with_worst_seed() -> None:
    calls: list[tuple[float, int]] = []
    target = [parse_target("rejection<=0.01")]
    ci = plan(STEADY, target, seeds=(1, 2), tolerance=0.001, confidence=0.95,
              runner=linear_runner(0.0, calls))
    worst = plan(STEADY, target, seeds=(1, 2), tolerance=0.001, runner=linear_runner(0.0))
    assert ci.answer == worst.answer
    assert {d.verdict for d in ci.details} == {"meets", "misses"}
    assert all(len(d.seeds) == 2 for d in ci.details)  # zero-width intervals: no more seeds
    assert len(calls) == 2 * len(ci.points)


@settings(max_examples=25, deadline=None)
@given(noise=st.floats(1e-5, 2e-3), confidence=st.sampled_from([0.9, 0.95, 0.99]),
       max_seeds=st.integers(2, 12))
def test_the_answer_is_a_point_whose_interval_clears_every_target(
    noise: float, confidence: float, max_seeds: int
) -> None:
    result = plan(STEADY, [parse_target("rejection<=0.01")], seeds=(1, 2), tolerance=0.01,
                  confidence=confidence, max_seeds=max_seeds, runner=linear_runner(noise))
    for d in result.details:
        assert 2 <= len(d.seeds) <= max_seeds
        assert d.seeds == tuple(range(1, len(d.seeds) + 1))
        iv = d.intervals["rejection"]
        assert d.verdict == ("meets" if iv.high <= 0.01 else
                             "misses" if iv.low > 0.01 else "undecided")
        if d.verdict == "undecided":
            assert len(d.seeds) == max_seeds
    if result.answer is not None:
        at = result.detail(result.answer)
        assert at is not None and at.verdict == "meets"
        assert at.intervals["rejection"].high <= 0.01
        # Noise only makes the planner more careful than the noiseless boundary x3.
        assert result.answer <= 3.0


def test_a_point_on_the_boundary_stays_undecided_and_the_note_says_so() -> None:
    base = STEADY.workload.rate

    def runner(sc: Scenario, seed: int) -> Metrics:
        factor = sc.workload.rate / base
        # Exactly on the bound at x1 whatever the seeds: the interval always straddles it.
        return fake(rejection=0.01 * factor + (1e-3 if seed % 2 else -1e-3))

    result = plan(STEADY, [parse_target("rejection<=0.01")], seeds=(1, 2), start=1.0,
                  tolerance=0.5, confidence=0.95, max_seeds=6, runner=runner)
    at_one = result.detail(1.0)
    assert at_one is not None and at_one.verdict == "undecided" and len(at_one.seeds) == 6
    assert "undecided after 6 seeds at 1" in result.note


def test_plan_command_states_the_answer_with_its_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["plan", str(SCENARIOS / "steady.toml"), "--target", "rejection<=0.05",
                   "--tolerance", "0.5", "--max-factor", "2", "--seeds", "2",
                   "--max-seeds", "4", "--out", str(tmp_path / "p"), "--no-check",
                   "--no-charts"])
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert data["confidence"] == 0.95
    assert all(2 <= len(p["seeds"]) <= 4 for p in data["points"])
    if status == 0:
        assert data["answer"] is not None
        assert f"x{data['answer']:.4g} of traffic" in out and "(95% CI over " in out
        chosen = next(p for p in data["points"] if p["x"] == data["answer"])
        assert chosen["verdict"] == "meets"
        assert chosen["intervals"]["rejection"]["high"] <= 0.05
