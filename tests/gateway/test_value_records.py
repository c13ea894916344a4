"""The per-request records are immutable named tuples (issue 15: a frozen dataclass cost
several times as much to build): they keep the checks, keyword-only construction, equality
and immutability of the dataclasses they replaced, and survive copy and pickle."""

from __future__ import annotations

import copy
import operator
import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.errors import InvalidValueError
from omnillm_sim.estimate import EstimateRequest
from omnillm_sim.gateway import Gateway, GatewayConfig, KeyConfig, Outcome, Request, ok, timeout
from omnillm_sim.keypool import KeyPool, OmnillmStrategy
from omnillm_sim.pricing import Usage, catalogue
from omnillm_sim.sim.distributions import Distribution

counts = st.integers(min_value=0, max_value=10**6)


@pytest.mark.parametrize(
    "record",
    [
        Request(id=7, model="gpt-4o", prompt_tokens=3, max_output_tokens=9, stream=True),
        EstimateRequest(model="gpt-4o", prompt_bytes=40, messages=2, thinking_tokens=5),
        Usage(1, 2, 3, 4, 5, shape="anthropic"),
        Outcome("http_error", status=429, retry_after="7"),
    ],
)
def test_records_survive_copy_and_pickle(record: object) -> None:
    # Request and EstimateRequest take keywords only: a named tuple's default copy and pickle
    # call the constructor with positional arguments, which they refuse.
    for again in (copy.copy(record), copy.deepcopy(record), pickle.loads(pickle.dumps(record))):
        assert again == record and type(again) is type(record)
        assert repr(again) == repr(record)


def test_keyword_only_records_still_refuse_positional_arguments() -> None:
    with pytest.raises(TypeError):
        Request(1, "m", 1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        EstimateRequest("m", 10)  # type: ignore[misc]


@given(i=counts, o=counts, r=counts, w=counts, h=counts,
       a=st.sampled_from([None, "openai", "anthropic"]),
       b=st.sampled_from([None, "openai", "anthropic"]))
def test_usage_equality_and_hash_ignore_the_shape(
    i: int, o: int, r: int, w: int, h: int, a: str | None, b: str | None
) -> None:
    x, y = Usage(i, o, r, w, h, shape=a), Usage(i, o, r, w, h, shape=b)  # type: ignore[arg-type]
    assert operator.eq(x, y) and operator.ne(x, y) is False and hash(x) == hash(y)
    assert len({x, y}) == 1
    assert operator.ne(x, Usage(i, o + 1, r, w, h))
    assert operator.eq(x, Usage(i + 1, o, r, w, h)) is False
    assert x.shape == a and x.prompt_tokens == i + r + w + h


def test_usage_keeps_its_checks_in_every_position() -> None:
    for position in range(5):
        counts_ = [1, 1, 1, 1, 1]
        counts_[position] = -1
        with pytest.raises(InvalidValueError, match=r"_tokens\(=-1\)"):
            Usage(*counts_)
    with pytest.raises(InvalidValueError, match="shape"):
        Usage(1, 1, shape="gemini")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        Usage(True, 1)


def test_ok_checks_its_usage_although_it_skips_the_generic_checks() -> None:
    assert ok(Usage(3, 4)) == Outcome("ok", Usage(3, 4))
    assert ok(Usage(3, 4)).kind == "ok" and ok(Usage(3, 4)).cost is None
    with pytest.raises(InvalidValueError, match="usage"):
        ok((3, 4, 0, 0, 0, None))  # type: ignore[arg-type]  # a tuple is not a Usage
    with pytest.raises(InvalidValueError, match="usage"):
        ok(None)  # type: ignore[arg-type]
    assert timeout() == Outcome("timeout") and timeout() is timeout()  # immutable: shared


def test_records_refuse_assignment() -> None:
    gw = Gateway(GatewayConfig(keys=(KeyConfig(label="a"),)), budget=BudgetTracker("1.00"),
                 prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=random.Random(0))
    adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=10), 0.0)
    settlement = gw.finish(adm, ok(Usage(10, 1)), 1.0)  # type: ignore[arg-type]
    for record in (adm, settlement, adm.estimate, Usage(1, 1), EstimateRequest(model="m")):
        with pytest.raises(AttributeError):
            record.cost = 1  # type: ignore[misc,union-attr]
        with pytest.raises(AttributeError):
            record.anything = 1  # type: ignore[union-attr]  # no __dict__ either


@given(seed=st.integers(0, 2**32), mean=st.floats(0.0, 1e4), cv=st.floats(0.0, 3.0),
       low=st.floats(0.0, 100.0), width=st.floats(0.0, 100.0))
def test_a_sampler_draws_what_the_distribution_says(
    seed: int, mean: float, cv: float, low: float, width: float
) -> None:
    # Against `random`'s own calls with the parameters worked out here: a lognormal of mean m
    # and coefficient of variation c has sigma^2 = ln(1 + c^2) and mu = ln(m) - sigma^2 / 2.
    import math

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


def test_a_new_random_stream_for_the_omnillm_strategy_takes_effect() -> None:
    def picks(strategy: OmnillmStrategy) -> list[int | None]:
        pool = KeyPool([KeyConfig(label=str(i)) for i in range(10)], strategy="omnillm",
                       rng=random.Random(0))
        pool.strategy = strategy
        return [pool.select(1, float(t)) for t in range(20)]

    swapped = OmnillmStrategy(rng=random.Random(1))
    swapped.rng = random.Random(2)
    assert picks(swapped) == picks(OmnillmStrategy(rng=random.Random(2)))
    assert picks(swapped) != picks(OmnillmStrategy(rng=random.Random(1)))


def test_the_pools_rate_in_selection_is_read_at_each_selection() -> None:
    pool = KeyPool([KeyConfig(label="a", rpm=1)], strategy="least-loaded", rng=random.Random(0))
    assert pool.select(1, 0.0) == 0
    assert pool.keys[0].rpm.try_acquire(0.0)  # the window is full now
    assert pool.select(1, 1.0) == 0  # the faithful pool does not look at the window
    pool.rate_in_selection = True
    assert pool.select(1, 2.0) is None
    pool.rate_in_selection = False
    assert pool.select(1, 3.0) == 0
