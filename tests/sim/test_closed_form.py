"""Closed-form cross-checks of the simulator: Erlang C, the RPM throughput cap, Little's law.

Tolerances are stated per test and derived from the sampling error of the estimate, not
from the simulator's own output.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from simhelpers import SCENARIOS, UNLIMITED

from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import Scenario, load_scenario
from omnillm_sim.sim.workloads import RequestFactory, open_arrivals


def arrival_times(scenario: Scenario, seed: int) -> list[float]:
    """The open workload's arrival times alone (no gateway), as the engine would draw them."""
    factory = RequestFactory(scenario, random.Random(f"{seed}/requests"))
    return [a.time for a in open_arrivals(scenario, factory, random.Random(f"{seed}/arrivals"))]


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load ``a`` = λ/μ."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_reference_values() -> None:
    # Textbook values: M/M/1 waits with probability ρ; M/M/2 with a = 1 gives 1/3.
    assert erlang_c(1, 0.6) == pytest.approx(0.6)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


def test_mmc_mean_wait_matches_erlang_c(make_scenario: Callable[..., Scenario]) -> None:
    """M/M/2, λ = 1.2/s, μ = 1/s (ρ = 0.6): Wq = C(2, 1.2) / (2μ - λ) = 0.5625 s.

    About 30,000 requests. Tolerance: 4 standard errors from 20 batch means (about ±0.1 s),
    and at most 10% relative error.
    """
    c, lam, mu = 2, 1.2, 1.0
    expected = erlang_c(c, lam / mu) / (c * mu - lam)
    assert expected == pytest.approx(0.5625)
    scenario = make_scenario(
        UNLIMITED,
        duration=f"{30_000 / lam}s",
        workload={"kind": "poisson", "rate": f"{lam}/s"},
        provider={"concurrency": c, "service": {"dist": "exponential", "mean": 1 / mu}},
    )
    result = run(scenario, seed=2, check=False)
    waits = [r.start - r.arrival for r in result.records]
    assert all(r.status == "ok" for r in result.records) and len(waits) > 29_000
    batches = 20
    size = len(waits) // batches
    means = [sum(waits[i * size:(i + 1) * size]) / size for i in range(batches)]
    grand = sum(means) / batches
    se = math.sqrt(sum((m - grand) ** 2 for m in means) / (batches - 1) / batches)
    observed = result.metrics.mean_wait
    assert observed is not None
    assert abs(observed - expected) < 4 * se
    assert abs(observed - expected) / expected < 0.10


@pytest.mark.parametrize("policy", ["omnillm-0.1.5", "safe"])
def test_k_keys_times_rpm_caps_admitted_throughput(
    make_scenario: Callable[..., Scenario], policy: str
) -> None:
    """3 keys x 60 RPM under 10 requests/s for 10 minutes admit 3 x 60 x 10 = 1,800.

    An exact sliding 60 s window admits at most ``rpm`` per key in any 60 s, so 1,800 is the
    ceiling; refills after each window take a fraction of a second at 10 arrivals/s, so the
    count must land within 3% below it.
    """
    k, r, minutes = 3, 60, 10
    scenario = make_scenario(
        {"keys": [{"label": "k", "count": k, "rpm": r, "tpm": 10**9}]},
        duration=f"{minutes}m",
        gateway={"policy": policy},
        workload={"kind": "poisson", "rate": "10/s"},
        provider={"service": "0.1s"},
        requests={"prompt_tokens": 100, "output_tokens": 10, "max_output_tokens": 10},
    )
    m = run(scenario, seed=4).metrics
    ceiling = k * r * minutes
    assert m.arrivals > 5_000  # heavily overloaded
    assert m.admitted <= ceiling
    assert m.admitted >= 0.97 * ceiling
    assert dict(m.rejections_by_reason).keys() <= {"RATE_LIMITED", "NO_KEY"}


def test_littles_law_on_a_steady_run() -> None:
    """L = λW on the steady scenario (3 minutes).

    L is the time average of requests in flight from the engine's 0.25 s samples; λ and W come
    from the per-request records. The sample average is a Riemann estimate of the integral, so
    they agree within 3%; the engine's exact integral agrees with λW to rounding.
    """
    scenario = load_scenario(SCENARIOS / "steady.toml",
                             {"duration": "3m", "sample_interval": "0.25s"})
    result = run(scenario)
    admitted = [r for r in result.records if r.decision == "admitted"]
    assert all(r.end is not None for r in admitted)
    horizon = result.end_time
    lam = len(admitted) / horizon
    w = sum(r.end - r.arrival for r in admitted) / len(admitted)  # type: ignore[operator]
    samples = [s for s in result.samples if s.time <= horizon]
    sampled_l = sum(sum(s.inflight) for s in samples) / len(samples)
    assert sampled_l == pytest.approx(lam * w, rel=0.03)
    assert result.metrics.mean_in_system == pytest.approx(lam * w, rel=1e-9)
    assert lam * w > 10  # a busy system, not a trivial one


def test_closed_loop_obeys_the_interactive_response_time_law(
    make_scenario: Callable[..., Scenario],
) -> None:
    """N clients with think time Z and response time R: throughput X = N / (R + Z).

    20 clients, exponential think time of mean 4 s, constant 1 s service, 30 minutes. X is
    measured from the records, R from the latencies; equality holds up to the requests cut
    off at the end (under 1%).
    """
    scenario = make_scenario(
        UNLIMITED,
        duration="30m",
        workload={"kind": "closed", "clients": 20, "think_time": {"dist": "exponential",
                                                                  "mean": "4s"}},
        provider={"service": "1s"},
    )
    result = run(scenario, seed=3)
    m = result.metrics
    assert m.p50 == pytest.approx(1.0) and m.max_latency == pytest.approx(1.0)
    x = m.ok / result.end_time
    assert x == pytest.approx(20 / (1.0 + 4.0), rel=0.02)


def test_poisson_arrival_count(make_scenario: Callable[..., Scenario]) -> None:
    """Arrivals of a 5/s Poisson process over 20 minutes: 6,000 ± 4 sd (sd = sqrt(6000))."""
    scenario = make_scenario(UNLIMITED, duration="20m",
                             workload={"kind": "poisson", "rate": "5/s"},
                             provider={"service": "0.01s"})
    n = len(arrival_times(scenario, 9))
    assert abs(n - 6_000) < 4 * math.sqrt(6_000)


def test_bursty_mean_rate_is_the_time_weighted_rate(
    make_scenario: Callable[..., Scenario],
) -> None:
    """An MMPP spends calm/(calm+burst) of the time calm: mean rate = (2x60 + 20x20)/80 = 6.5/s.

    Over 2 hours (90 switches) the count's relative sd is about 6%; allow 20%.
    """
    scenario = make_scenario(
        UNLIMITED, duration="2h",
        workload={"kind": "bursty", "rate": "2/s", "burst_rate": "20/s",
                  "calm_time": "60s", "burst_time": "20s"},
        provider={"service": "0.01s"},
    )
    n = len(arrival_times(scenario, 1))
    assert n / 7200 == pytest.approx(6.5, rel=0.2)


def test_diurnal_rate_follows_the_sine(make_scenario: Callable[..., Scenario]) -> None:
    """rate 4/s, amplitude 0.5, period 10 min: the first half-period averages 4(1 + 1/π)/s,
    the second 4(1 - 1/π)/s (integral of the sine); 10 periods, tolerance 5 sd."""
    scenario = make_scenario(
        UNLIMITED, duration="100m",
        workload={"kind": "diurnal", "rate": "4/s", "amplitude": 0.5, "period": "10m"},
        provider={"service": "0.01s"},
    )
    times = arrival_times(scenario, 5)
    first = sum(1 for t in times if (t % 600) < 300)
    second = len(times) - first
    expected_first = 4 * (1 + 1 / math.pi) * 3000
    expected_second = 4 * (1 - 1 / math.pi) * 3000
    assert abs(first - expected_first) < 5 * math.sqrt(expected_first)
    assert abs(second - expected_second) < 5 * math.sqrt(expected_second)
