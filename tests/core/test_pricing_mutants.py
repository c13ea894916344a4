"""Pricing: behaviours the mutation run (`make mutate MODULE=pricing`) found untested: which
count a bad `Usage` names, dated prices (``as_of``), price-table equality, and genai-prices
rows with a missing or zero rate (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import data_snapshot, types

from omnillm_sim.errors import InvalidValueError, UnknownModelError
from omnillm_sim.pricing import Usage, catalogue, current_table

MILLION = 1_000_000


@pytest.mark.parametrize("shape", ["openai", "anthropic", None])
@pytest.mark.parametrize(
    ("counts", "parameter"),
    [
        ((-1, 0, 0, 0, 0), "input_tokens"),
        ((0, -1, 0, 0, 0), "output_tokens"),
        ((0, 0, -1, 0, 0), "cache_read_tokens"),
        ((0, 0, 0, -1, 0), "cache_write_tokens"),
        ((0, 0, 0, 0, -1), "cache_write_1h_tokens"),
        ((0, 1.5, 0, 0, 0), "output_tokens"),
    ],
)
def test_a_bad_count_of_a_shaped_usage_is_named_not_its_valid_shape(
    counts: tuple[int, ...], parameter: str, shape: str | None
) -> None:
    with pytest.raises(InvalidValueError) as info:
        Usage(*counts, shape=shape)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


# -- dated prices: OpenAI cut o3 from $10 / $40 to $2 / $8 per million tokens on 2025-06-10 ----


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (datetime(2025, 6, 1, tzinfo=UTC), 10 * MILLION + 40 * MILLION),
        (datetime(2025, 7, 1, tzinfo=UTC), 2 * MILLION + 8 * MILLION),
    ],
)
def test_current_table_prices_as_of_the_date_it_is_given(as_of: datetime, expected: int) -> None:
    assert current_table(as_of=as_of).cost("o3", Usage(MILLION, MILLION)) == expected


def test_current_table_without_a_date_prices_as_of_now() -> None:
    """Today (any day after the cut) o3 costs $2 / $8 per million, as with a date after it."""
    after_the_cut = current_table(as_of=datetime(2025, 7, 1, tzinfo=UTC))
    usage = Usage(MILLION, MILLION)
    assert current_table().cost("o3", usage) == after_the_cut.cost("o3", usage)


# -- equality ----------------------------------------------------------------------------------


def test_a_price_lookup_does_not_change_what_a_table_equals() -> None:
    used, fresh = catalogue("omnillm-0.1.5"), catalogue("omnillm-0.1.5")
    assert used.cost("gpt-4o", Usage(1_000, 0)) == 5_000
    assert used == fresh
    assert used != catalogue("omnillm-0.1.5", fallback="gpt-4o")


# -- genai-prices rows with a zero or missing rate (a catalogue of our own) -------------------


@pytest.fixture
def acme() -> Iterator[None]:
    """genai-prices' own hook for custom data: a provider with a free model and a model with
    an output rate but no input rate."""

    def model(name: str, **prices: Decimal) -> types.ModelInfo:
        return types.ModelInfo(
            id=name, match=types.ClauseEquals(equals=name), prices=types.ModelPrice(**prices)
        )

    provider = types.Provider(
        id="acme",
        name="Acme",
        api_pattern=r"https://acme\.example",
        model_match=types.ClauseStartsWith(starts_with="acme-"),
        models=[
            model("acme-free", input_mtok=Decimal(0), output_mtok=Decimal(0)),
            model("acme-half", input_mtok=Decimal("0.5"), output_mtok=Decimal(0)),
            model("acme-no-input", output_mtok=Decimal(2)),
        ],
    )
    data_snapshot.set_custom_snapshot(
        data_snapshot.DataSnapshot(providers=[provider], from_auto_update=False)
    )
    try:
        yield
    finally:
        data_snapshot.set_custom_snapshot(None)


@pytest.mark.usefixtures("acme")
def test_a_model_priced_at_zero_costs_nothing() -> None:
    table = current_table(as_of=datetime(2026, 1, 1, tzinfo=UTC))
    assert table.cost("acme-free", Usage(MILLION, MILLION)) == 0
    # $0.50 per million input tokens, free output: 1M in, 1M out -> $0.50
    assert table.cost("acme-half", Usage(MILLION, MILLION)) == 500_000


@pytest.mark.usefixtures("acme")
def test_a_model_without_an_input_rate_is_unknown_not_free() -> None:
    """Pricing its input at $0 would undercount: the table refuses it, as any unknown model."""
    table = current_table(as_of=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(UnknownModelError):
        table.price("acme-no-input")
