"""`Usage` is an immutable named tuple (issue 15: one is made per simulated reply): its checks,
its equality and hash without the wire shape, copy and pickle; and `Rates.omnillm_cost`, now
written out per part, still gives whole micro-dollars on every branch."""

from __future__ import annotations

import copy
import operator
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.errors import InvalidValueError, UnknownModelError
from omnillm_sim.pricing import ModelPrice, PriceTable, PriceTier, Rates, Usage

counts = st.integers(min_value=0, max_value=10**6)
shapes = st.sampled_from([None, "openai", "anthropic"])


@given(i=counts, o=counts, r=counts, w=counts, h=counts,
       a=shapes, b=shapes)
def test_usage_equality_and_hash_ignore_the_shape(
    i: int, o: int, r: int, w: int, h: int, a: str | None, b: str | None
) -> None:
    x, y = Usage(i, o, r, w, h, shape=a), Usage(i, o, r, w, h, shape=b)  # type: ignore[arg-type]
    assert operator.eq(x, y) and operator.ne(x, y) is False and hash(x) == hash(y)
    assert len({x, y}) == 1
    assert operator.ne(x, Usage(i, o + 1, r, w, h))
    assert operator.eq(x, Usage(i + 1, o, r, w, h)) is False
    assert x.shape == a and x.prompt_tokens == i + r + w + h


def test_usage_leaves_other_types_to_their_own_comparison() -> None:
    u = Usage(1, 2)
    assert u.__eq__("1, 2") is NotImplemented and u.__ne__(3) is NotImplemented
    assert (u == 3) is False and (u != 3) is True  # Python's fallback: identity


def test_usage_survives_copy_and_pickle_with_its_shape() -> None:
    u = Usage(1, 2, 3, 4, 5, shape="anthropic")
    for again in (copy.copy(u), copy.deepcopy(u), pickle.loads(pickle.dumps(u))):
        assert again == u and again.shape == "anthropic" and type(again) is Usage


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


@given(usage=st.builds(Usage, counts, counts, counts, counts, counts, shape=shapes),
       rates=st.builds(Rates, input=counts, output=counts,
                       cache_read=st.none() | counts, cache_write=st.none() | counts,
                       cache_write_1h=st.none() | counts))
def test_omnillm_cost_is_whole_micro_dollars_on_every_branch(usage: Usage, rates: Rates) -> None:
    # Each part is floor(tokens x rate / 1e6): an int, never more than the exact product sum.
    cost = rates.omnillm_cost(usage)
    assert type(cost) is int and cost >= 0
    top = max(rates.input, rates.output, rates.cache_read or 0, rates.cache_write or 0,
              rates.cache_write_1h or 0)
    tokens = usage.prompt_tokens + usage.output_tokens
    assert cost * 1_000_000 <= tokens * top


def test_an_openai_row_prices_unshaped_cache_writes_as_input_whole_micro_dollars() -> None:
    # A row with a cached-input rate only (OpenAI's): an unshaped usage pays its cache writes
    # at the input rate and its reads at the cached rate, each part floored to whole micro-$:
    # output 333 x $10/M = 3,330; input + writes (1,001 + 7 + 3) x $2.50/M = 2,527.5 -> 2,527;
    # reads 2,000 x $1.25/M = 2,500.
    rates = Rates(input=2_500_000, output=10_000_000, cache_read=1_250_000)
    cost = rates.omnillm_cost(Usage(1_001, 333, 2_000, 7, 3))
    assert cost == 3_330 + 2_527 + 2_500 and type(cost) is int


rates_st = st.builds(Rates, input=counts, output=counts,
                     cache_read=st.none() | counts, cache_write=st.none() | counts)


@given(usage=st.builds(Usage, counts, counts, counts, counts, counts, shape=shapes),
       base=rates_st, tier=rates_st, start=st.none() | st.integers(0, 3 * 10**6),
       rounding=st.sampled_from(["ceil", "omnillm"]))
def test_a_models_coster_prices_every_usage_as_cost_does(
    usage: Usage, base: Rates, tier: Rates, start: int | None, rounding: str
) -> None:
    """`PriceTable.coster(model)` is `cost(model, ·)` resolved once, with and without a
    long-context tier, under both roundings (and for a fallback-priced model)."""
    tiers = () if start is None else (PriceTier(start=start, rates=tier),)
    price = ModelPrice(model="m", rates=base, tiers=tiers)
    table = PriceTable("t", rounding, {"m": price}, fallback="m")  # type: ignore[arg-type]
    for model in ("m", "unknown-model"):
        assert table.coster(model)(usage) == table.cost(model, usage)


def test_a_coster_for_an_unknown_model_fails_like_cost() -> None:
    table = PriceTable("t", "omnillm", {"m": ModelPrice(model="m", rates=Rates(input=1, output=2))})
    with pytest.raises(UnknownModelError) as from_coster:
        table.coster("nope")
    with pytest.raises(UnknownModelError) as from_cost:
        table.cost("nope", Usage(1, 1))
    assert str(from_coster.value) == str(from_cost.value)
    with pytest.raises(InvalidValueError, match="model"):
        table.coster("")
