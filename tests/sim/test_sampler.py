"""`Distribution.sampler` (issue 15: the request factory builds its samplers once) draws what
`random`'s own calls give, with each kind's parameters worked out here independently."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.sim.distributions import Distribution
from omnillm_sim.sim.scenario import scenario_from_dict
from omnillm_sim.sim.workloads import RequestFactory, _poisson_times, open_arrivals


@given(seed=st.integers(0, 2**32), mean=st.floats(0.0, 1e4), cv=st.floats(0.0, 3.0),
       low=st.floats(0.0, 100.0), width=st.floats(0.0, 100.0))
def test_a_sampler_draws_what_the_distribution_says(
    seed: int, mean: float, cv: float, low: float, width: float
) -> None:
    # Against `random`'s own calls with the parameters worked out here: a lognormal of mean m
    # and coefficient of variation c has sigma^2 = ln(1 + c^2) and mu = ln(m) - sigma^2 / 2.
    def expected(kind: str, rng: random.Random) -> float:
        if kind == "constant" or (kind != "uniform" and mean == 0):
            return mean  # no draw
        if kind == "uniform":
            return rng.uniform(low, low + width)
        if kind == "exponential":
            return rng.expovariate(1.0 / mean)
        sigma2 = math.log1p(cv * cv)  # ln(1 + c^2), accurate for small c
        return rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))

    for kind in ("constant", "uniform", "exponential", "lognormal"):
        dist = Distribution(kind=kind, mean=mean, cv=cv, low=low, high=low + width)
        ours, theirs = random.Random(seed), random.Random(seed)
        draw = dist.sampler(ours)
        got = [draw() for _ in range(3)]
        want = [expected(kind, theirs) for _ in range(3)]
        assert got == pytest.approx(want, rel=1e-12, abs=0.0), kind
        assert ours.getstate() == theirs.getstate(), kind  # the same number of draws
        assert dist.sample(ours) == pytest.approx(expected(kind, theirs), rel=1e-12, abs=0.0)


@given(rate=st.floats(0.05, 50.0), horizon=st.floats(0.5, 50.0), seed=st.integers(0, 10**6),
       cap=st.none() | st.integers(1, 40))
def test_poisson_arrival_times_are_cumulative_expovariate_draws(
    rate: float, horizon: float, seed: int, cap: int | None
) -> None:
    """The open workload's Poisson times are the running sum of ``rng.expovariate(rate)``
    draws below the horizon (what the benchmark's SimPy baseline draws from the same stream),
    and ``max_requests`` stops them; the diurnal workload thins the same kind of stream."""
    rng = random.Random(seed)
    expected: list[float] = []
    t = 0.0
    while cap is None or len(expected) < cap:
        t += rng.expovariate(rate)
        if t >= horizon:
            break
        expected.append(t)
    data: dict[str, object] = {
        "duration": f"{horizon!r}s", "workload": {"kind": "poisson", "rate": f"{rate!r}/s"},
    }
    if cap is not None:
        data["max_requests"] = cap
    scenario = scenario_from_dict(data, source="test.toml")
    factory = RequestFactory(scenario, random.Random(1))
    times = [a.time for a in open_arrivals(scenario, factory, random.Random(seed))]
    assert times == expected
    assert list(_poisson_times(rate, horizon, random.Random(seed)))[: len(expected)] == expected
