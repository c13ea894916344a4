"""Sweeps on processes and on Dask give the same table; plan's bisection finds the boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from simhelpers import SCENARIOS

from omnillm_sim.errors import ConfigError, ScenarioError
from omnillm_sim.sim.metrics import Metrics
from omnillm_sim.sim.plan import Target, parse_target, plan
from omnillm_sim.sim.scenario import Scenario, load_scenario
from omnillm_sim.sim.sweep import expand_grid, sweep

GRID = {"workload.rate": ["3/s", "9/s"], "duration": ["40s"]}
SEEDS = [1, 2]


@pytest.fixture(scope="module")
def in_process() -> list[dict[str, Any]]:
    return sweep(SCENARIOS / "steady.toml", GRID, SEEDS, workers=1).table()


def test_sweep_rows_cover_the_grid_in_order(in_process: list[dict[str, Any]]) -> None:
    assert [(r["point"]["workload.rate"], r["seed"]) for r in in_process] == [
        ("3/s", 1), ("3/s", 2), ("9/s", 1), ("9/s", 2)]
    assert in_process[0]["arrivals"] != in_process[1]["arrivals"]  # seeds differ
    assert in_process[2]["arrivals"] > 2 * in_process[0]["arrivals"]  # 3x the rate


def test_process_pool_sweep_equals_in_process(in_process: list[dict[str, Any]]) -> None:
    pooled = sweep(SCENARIOS / "steady.toml", GRID, SEEDS, workers=2)
    assert pooled.executor == "processes"
    assert pooled.table() == in_process


def test_dask_local_cluster_sweep_equals_process_pool(in_process: list[dict[str, Any]]) -> None:
    pytest.importorskip("dask.distributed")
    result = sweep(SCENARIOS / "steady.toml", GRID, SEEDS, dask="local")
    assert result.executor == "dask-local"
    assert result.table() == in_process


def test_dask_scheduler_address_sweep_equals_process_pool(
    in_process: list[dict[str, Any]],
) -> None:
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        result = sweep(SCENARIOS / "steady.toml", GRID, SEEDS, dask=address)
    assert result.executor == f"dask {address}"
    assert result.table() == in_process


def test_bad_grid_values_fail_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        sweep(SCENARIOS / "steady.toml", {"workload.rate": ["3/s", "fast"]}, [1], workers=1)
    assert info.value.key == "workload.rate"


def test_expand_grid_order() -> None:
    assert expand_grid({"a": [1, 2], "b": ["x", "y"]}) == [
        (("a", 1), ("b", "x")), (("a", 1), ("b", "y")), (("a", 2), ("b", "x")),
        (("a", 2), ("b", "y"))]


@pytest.mark.parametrize(
    ("text", "target"),
    [("rejection<=0.01", Target("rejection", "<=", 0.01)),
     ("p99<=20s", Target("p99", "<=", 20.0)),
     ("p95 <= 1.5m", Target("p95", "<=", 90.0)),
     ("error<=2%", Target("error", "<=", 0.02)),
     ("throughput>=5", Target("throughput", ">=", 5.0))],
)
def test_parse_target(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("bad", ["p99", "latency<=3", "p99<=soon", "rejection=0.1", "p99<=-1"])
def test_bad_targets(bad: str) -> None:
    with pytest.raises(ConfigError, match="--target"):
        parse_target(bad)


def _fake_metrics(**values: float) -> Metrics:
    base: dict[str, Any] = {f: 0 for f in Metrics.__slots__}  # type: ignore[attr-defined]
    base.update(rejections_by_reason=(), statuses=(), per_key=())
    base.update(values)
    return Metrics(**base)


def test_traffic_bisection_finds_the_boundary() -> None:
    # A model whose rejection rate crosses 0.01 exactly at 3x the scenario traffic.
    scenario = load_scenario(SCENARIOS / "steady.toml")
    base = scenario.workload.rate

    def runner(sc: Scenario, seed: int) -> Metrics:
        factor = sc.workload.rate / base
        return _fake_metrics(rejection=0.01 * factor / 3, p99=1.0)

    result = plan(scenario, [parse_target("rejection<=0.01")], tolerance=0.001, runner=runner)
    assert result.answer == pytest.approx(3.0, rel=0.001)
    assert result.answer <= 3.0  # the answer itself passes
    passing = [x for x, _, ok in result.points if ok]
    failing = [x for x, _, ok in result.points if not ok]
    assert max(passing) == result.answer and min(failing) > 3.0


def test_traffic_plan_below_one_and_worst_seed_decides() -> None:
    scenario = load_scenario(SCENARIOS / "steady.toml")
    base = scenario.workload.rate

    def runner(sc: Scenario, seed: int) -> Metrics:
        factor = sc.workload.rate / base
        return _fake_metrics(p99=20.0 * factor / 0.4 * (1.1 if seed == 2 else 1.0))

    result = plan(scenario, [parse_target("p99<=20s")], seeds=(1, 2), tolerance=0.001,
                  runner=runner)
    assert result.answer == pytest.approx(0.4 / 1.1, rel=0.002)


def test_key_count_plan_finds_the_smallest_count() -> None:
    scenario = load_scenario(SCENARIOS / "steady.toml")

    def runner(sc: Scenario, seed: int) -> Metrics:
        return _fake_metrics(rejection=1.0 / len(sc.key_labels()))

    result = plan(scenario, [parse_target("rejection<=0.05")], vary="keys", runner=runner)
    assert result.answer == 20
    result = plan(scenario, [parse_target("rejection<=0.5")], vary="keys", runner=runner)
    assert result.answer == 2


def test_plan_reports_an_impossible_target() -> None:
    scenario = load_scenario(SCENARIOS / "steady.toml")
    result = plan(scenario, [parse_target("rejection<=0.01")], max_keys=8, vary="keys",
                  runner=lambda sc, seed: _fake_metrics(rejection=0.5))
    assert result.answer is None and "8 keys" in result.note


def test_real_key_count_plan_on_a_small_scenario() -> None:
    """4 keys x 60 RPM give 4/s; 7/s needs at least ceil(7/1) = 7 keys of 1/s each."""
    scenario = load_scenario(SCENARIOS / "steady.toml", {
        "duration": "2m", "keys.0.rpm": 60, "keys.0.count": 4, "gateway.policy": "safe",
        "budget.limit": "unlimited"})
    result = plan(scenario, [parse_target("rejection<=0.05")], vary="keys")
    assert result.answer is not None and 7 <= result.answer <= 10
