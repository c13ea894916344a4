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
    assert set(reps["metrics"]) == {*SCALAR_METRICS, "mean_latency_after_warmup"}
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
    assert set(SCALAR_METRICS) <= set(data["runs"]["safe"]["replications"]["metrics"])


def test_mser5_cuts_a_start_up_burst_and_the_spend_chart_shows_it(
    tmp_path: Path, csv_trace: Callable[..., Path],
) -> None:
    # 50 requests at t=0 queue on one provider slot (service 1 s: latencies 1..50 s), then
    # 200 requests 10 s apart each take exactly 1 s. The burst is the warm-up: MSER-5 must
    # cut exactly those 50 (the steady batch means are all exactly 1 s).
    rows = [(0.0, 100, 10)] * 50 + [(100.0 + 10 * i, 100, 10) for i in range(200)]
    trace = csv_trace(rows)
    scenario = tmp_path / "burst.toml"
    scenario.write_text(f"""
duration = "1h"
[[keys]]
label = "k"
rpm = 1000000
tpm = 1000000000
[gateway]
request_timeout = "1h"
[provider]
concurrency = 1
service = "1s"
[workload]
kind = "trace"
[workload.trace]
path = "{trace}"
format = "csv"
[workload.trace.columns]
time = "t"
prompt_tokens = "prompt"
output_tokens = "output"
""", encoding="utf-8")
    out = tmp_path / "r"
    assert main(["run", str(scenario), "--out", str(out), "--seeds", "2"]) == 0
    data = json.loads((out / "summary.json").read_text())
    assert data["warmup"]["cut_requests"] == 50
    assert data["warmup"]["mean_latency_after_cut"] == 1.0
    assert data["warmup"]["mean_latency_all"] == pytest.approx((sum(range(1, 51)) + 200) / 250)
    after = data["replications"]["metrics"]["mean_latency_after_warmup"]
    assert after["mean"] == 1.0
    assert "MSER-5 cuts the first 50 requests" in (out / "summary.md").read_text()


def test_sweep_points_share_seeds_and_report_paired_differences(tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert main(["sweep", str(SCENARIOS / "steady.toml"), "--grid",
                 "gateway.policy=omnillm-0.1.5,safe", "--grid", "duration=30s", "--seeds", "3",
                 "--workers", "1", "--no-check", "--out", str(out)]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    by_seed: dict[int, set[int]] = {}
    for row in rows:
        by_seed.setdefault(row["seed"], set()).add(row["arrivals"])
    assert all(len(arrivals) == 1 for arrivals in by_seed.values())  # common random numbers
    md = (out / "sweep.md").read_text()
    assert "Paired differences from `gateway.policy=omnillm-0.1.5, duration=30s`" in md
    assert " ± " in md
