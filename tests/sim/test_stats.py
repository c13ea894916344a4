"""Statistics of replications: t quantiles, intervals, paired differences, MSER-5, coverage.

Reference values come from published Student-t tables; coverage tolerances from the exact
binomial distribution of the number of intervals that cover the true value.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simhelpers import UNLIMITED

from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import Scenario
from omnillm_sim.sim.stats import mean_ci, mser5, paired_ci, t_critical

# Two-sided critical values from a standard t table (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
T_TABLE = [
    (0.95, 1, 12.706), (0.95, 2, 4.303), (0.95, 4, 2.776), (0.95, 9, 2.262),
    (0.95, 19, 2.093), (0.95, 29, 2.045), (0.99, 1, 63.657), (0.99, 5, 4.032),
    (0.99, 10, 3.169), (0.90, 3, 2.353), (0.90, 20, 1.725),
]


@pytest.mark.parametrize(("confidence", "df", "expected"), T_TABLE)
def test_t_critical_matches_published_tables(confidence: float, df: int, expected: float) -> None:
    assert t_critical(confidence, df) == pytest.approx(expected, abs=6e-4)


def test_t_critical_tends_to_the_normal_quantile() -> None:
    assert t_critical(0.95, 10_000) == pytest.approx(1.95996, abs=1e-3)


def test_mean_ci_of_a_textbook_sample() -> None:
    # 5, 7, 9: mean 7, s = 2, half-width t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.968.
    iv = mean_ci([5.0, 7.0, 9.0])
    assert iv.mean == 7.0
    assert iv.half_width == pytest.approx(4.303 * 2 / math.sqrt(3), abs=1e-3)


def test_one_replication_has_no_interval() -> None:
    iv = mean_ci([3.0])
    assert (iv.mean, iv.low, iv.high) == (3.0, -math.inf, math.inf)


FLOATS = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(FLOATS, min_size=2, max_size=30), FLOATS, st.floats(0.01, 100))
def test_intervals_move_and_scale_with_the_data(values: list[float], shift: float,
                                                scale: float) -> None:
    iv = mean_ci(values)
    moved = mean_ci([scale * v + shift for v in values])
    assert iv.low <= iv.mean <= iv.high
    assert moved.mean == pytest.approx(scale * iv.mean + shift, rel=1e-9, abs=1e-6)
    assert moved.half_width == pytest.approx(scale * iv.half_width, rel=1e-6, abs=1e-6)


@given(st.lists(st.tuples(FLOATS, FLOATS), min_size=2, max_size=20), FLOATS)
def test_a_common_offset_cancels_in_paired_differences(pairs: list[tuple[float, float]],
                                                       offset: float) -> None:
    a = [x + offset for x, _ in pairs]
    b = [y + offset for _, y in pairs]
    iv = paired_ci(a, b)
    assert iv.mean == pytest.approx(mean_ci([x - y for x, y in pairs]).mean, abs=1e-6)
    same = paired_ci(a, a)
    assert (same.mean, same.half_width) == (0.0, 0.0)


@given(st.integers(1, 20), st.floats(1, 100), st.integers(20, 60),
       st.lists(st.floats(-0.5, 0.5), min_size=5, max_size=5))
def test_mser5_cuts_exactly_an_initial_level_shift(transient_batches: int, height: float,
                                                   steady_batches: int,
                                                   pattern: list[float]) -> None:
    # Steady state: the same 5 values in every batch, so every batch mean is equal and the
    # only variance left is the transient's; MSER-5 must delete exactly the transient.
    if transient_batches > steady_batches:
        transient_batches = steady_batches
    series = [height + p for _ in range(transient_batches) for p in pattern]
    series += [p for _ in range(steady_batches) for p in pattern]
    assert mser5(series) == 5 * transient_batches


def test_mser5_keeps_a_stationary_series_short_of_half() -> None:
    rng = random.Random(7)
    assert mser5([rng.random() for _ in range(1000)]) <= 500
    assert mser5([1.0] * 7) == 0


def binomial_band(n: int, p: float, alpha: float = 0.001) -> tuple[int, int]:
    """The central 1 - alpha range of Binomial(n, p): counts outside it have probability
    at most alpha/2 on each side."""
    pmf = [math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + k * math.log(p) + (n - k) * math.log1p(-p)) for k in range(n + 1)]
    low, tail = 0, 0.0
    while tail + pmf[low] <= alpha / 2:
        tail += pmf[low]
        low += 1
    high, tail = n, 0.0
    while tail + pmf[high] <= alpha / 2:
        tail += pmf[high]
        high -= 1
    return low, high


def test_t_intervals_of_normal_samples_cover_the_mean_95_percent_of_the_time() -> None:
    rng = random.Random(2024)
    experiments = 2000
    hits = sum(mean_ci([rng.gauss(10.0, 3.0) for _ in range(4)]).contains(10.0)
               for _ in range(experiments))
    low, high = binomial_band(experiments, 0.95)
    assert low <= hits <= high


def erlang_c_wait(c: int, lam: float, mu: float) -> float:
    """Mean wait in queue of M/M/c: C(c, a) / (c mu - lam), a = lam / mu."""
    a = lam / mu
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top) / (c * mu - lam)


def mmc_waits(c: int, lam: float, mu: float, n: int, rng: random.Random) -> list[float]:
    """Waits of n FCFS customers of an M/M/c queue that starts empty (Kiefer-Wolfowitz)."""
    free, t, out = [0.0] * c, 0.0, []
    for _ in range(n):
        t += rng.expovariate(lam)
        start = max(t, heapq.heappop(free))
        out.append(start - t)
        heapq.heappush(free, start + rng.expovariate(mu))
    return out


def coverage(experiments: int, replications: int,
             waits: Callable[[int, int], list[float]], truth: float) -> int:
    """How many of ``experiments`` 95% intervals (each over ``replications`` runs, with one
    MSER-5 cut chosen on the runs' averaged series) contain ``truth``."""
    hits = 0
    for e in range(experiments):
        runs = [waits(e, r) for r in range(replications)]
        size = min(map(len, runs))
        cut = mser5([math.fsum(w[i] for w in runs) / len(runs) for i in range(size)])
        means = [math.fsum(w[cut:]) / len(w[cut:]) for w in runs]
        hits += mean_ci(means).contains(truth)
    return hits


def test_mmc_mean_wait_intervals_cover_erlang_c_short() -> None:
    """M/M/2, ρ = 0.6 (Wq = 0.5625 s): 100 experiments x 10 replications x 3,000 customers.

    Tolerance: the central 99.9% of Binomial(100, 0.95), i.e. a correct 95% interval fails
    this test once in a thousand runs.
    """
    c, lam, mu = 2, 1.2, 1.0
    truth = erlang_c_wait(c, lam, mu)
    hits = coverage(100, 10, lambda e, r: mmc_waits(c, lam, mu, 3000,
                                                    random.Random(f"mmc/{e}/{r}")), truth)
    low, high = binomial_band(100, 0.95)
    assert low <= hits <= high


@pytest.mark.soak
def test_simulator_mmc_mean_wait_intervals_cover_erlang_c_95_pm_3_percent(
    make_scenario: Callable[..., Scenario],
) -> None:
    """The simulator itself (provider concurrency 2, exponential service): 300 experiments x
    5 replications x about 4,000 requests; coverage must be 95% ± 3% (the binomial standard
    error of 300 experiments is 1.3%, so ± 3% is 2.4 of them)."""
    c, lam, mu = 2, 1.2, 1.0
    scenario = make_scenario(
        UNLIMITED, duration=f"{4000 / lam}s", workload={"kind": "poisson", "rate": f"{lam}/s"},
        provider={"concurrency": c, "service": {"dist": "exponential", "mean": 1 / mu}},
    )

    def waits(e: int, r: int) -> list[float]:
        result = run(scenario, seed=100_000 + 10 * e + r, check=False, keep_records=False)
        return list(result.tally.waits)  # in completion order

    experiments = 300
    hits = coverage(experiments, 5, waits, erlang_c_wait(c, lam, mu))
    assert abs(hits / experiments - 0.95) <= 0.03
