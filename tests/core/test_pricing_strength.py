"""Price tables on hand-built rates where every token category has its own rate, so a cost
formula that mixes two categories up gives a different number (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnillm_sim.errors import ConfigError, InvalidValueError, UnknownModelError
from omnillm_sim.pricing import (
    ModelPrice,
    PriceTable,
    PriceTier,
    Rates,
    Usage,
    catalogue,
    current_table,
    load_overrides,
)

# Rates in µ$ per million tokens, pairwise different; token counts pairwise different primes.
ALL = Rates(input=1, output=2, cache_read=3, cache_write=5, cache_write_1h=7)
USAGE = Usage(input_tokens=11, output_tokens=13, cache_read_tokens=17, cache_write_tokens=19,
              cache_write_1h_tokens=23)  # fmt: skip


def test_usage_prompt_tokens_adds_every_input_side_count() -> None:
    assert USAGE.prompt_tokens == 11 + 17 + 19 + 23
    assert Usage(5, 100).prompt_tokens == 5


@pytest.mark.parametrize(
    ("rates", "numerator"),
    [
        (ALL, 11 * 1 + 17 * 3 + 19 * 5 + 23 * 7 + 13 * 2),
        # No cache rates: every input-side token at the input rate.
        (Rates(input=1, output=2), (11 + 17 + 19 + 23) * 1 + 13 * 2),
        # A 5-minute write rate but no 1-hour one: 1-hour writes at the 5-minute rate.
        (Rates(input=1, output=2, cache_write=5), (11 + 17) * 1 + (19 + 23) * 5 + 13 * 2),
        (Rates(input=1, output=2, cache_read=3), (11 + 19 + 23) * 1 + 17 * 3 + 13 * 2),
    ],
)
def test_exact_cost_numerator_charges_each_category_at_its_rate(
    rates: Rates, numerator: int
) -> None:
    assert rates.exact_cost_numerator(USAGE) == numerator


def test_max_input_side_is_the_highest_input_side_rate() -> None:
    assert ALL.max_input_side == 7
    assert Rates(input=4, output=99).max_input_side == 4
    assert Rates(input=4, output=99, cache_read=1).max_input_side == 4
    assert Rates(input=4, output=99, cache_write=6).max_input_side == 6


# omnillm floors each component: tokens x rate // 10**6. With 1.5 µ$ per token on one side and
# 0.5 on another, one token costs 1 + 0, where the exact total (2) is more.
M = 1_000_000


@pytest.mark.parametrize(
    ("rates", "usage", "expected"),
    [
        # Claude style (read and write known): input + reads + writes + 1h writes + output.
        (
            Rates(input=3 * M, output=15 * M, cache_read=M // 2, cache_write=5 * M // 4,
                  cache_write_1h=2 * M),
            Usage(10, 3, 4, 8, 2),
            30 + 2 + 10 + 4 + 45,
        ),
        # Claude style without a 1h rate: 1h writes at the 5-minute write rate.
        (
            Rates(input=3 * M, output=15 * M, cache_read=M // 2, cache_write=5 * M // 4),
            Usage(10, 3, 4, 8, 2),
            30 + 2 + 10 + 2 + 45,
        ),
        # OpenAI style (only a read rate): writes are input, reads at the read rate.
        (Rates(input=3 * M, output=15 * M, cache_read=M // 2), Usage(10, 3, 5, 8, 2), 60 + 2 + 45),
        # No cache rates: every input-side token at the input rate.
        (Rates(input=3 * M, output=15 * M), Usage(10, 3, 5, 8, 2), 75 + 45),
        # Flooring per component: 1 x 1.5 -> 1 and 1 x 0.5 -> 0.
        (Rates(input=3 * M // 2, output=M // 2), Usage(1, 1), 1),
        (Rates(input=3 * M // 2, output=M // 2, cache_read=M // 2, cache_write=M),
         Usage(1, 1, 1, 0), 1),
    ],
)  # fmt: skip
def test_omnillm_cost_per_component(rates: Rates, usage: Usage, expected: int) -> None:
    assert rates.omnillm_cost(usage) == expected


# -- tiers -------------------------------------------------------------------------------------

BASE = Rates(input=1 * M, output=2 * M)
MID = Rates(input=3 * M, output=4 * M, cache_write=9 * M)
TOP = Rates(input=5 * M, output=6 * M)
TIERED = ModelPrice(model="t", rates=BASE, tiers=(PriceTier(100, MID), PriceTier(200, TOP)))


@pytest.mark.parametrize(
    ("prompt", "rates"), [(0, BASE), (100, BASE), (101, MID), (200, MID), (201, TOP)]
)
def test_a_tier_applies_strictly_above_its_start(prompt: int, rates: Rates) -> None:
    assert TIERED.rates_for(prompt) is rates


@pytest.mark.parametrize(
    ("bound", "worst"), [(100, (1 * M, 2 * M)), (101, (9 * M, 4 * M)), (201, (9 * M, 6 * M))]
)
def test_worst_rates_over_every_tier_a_prompt_can_reach(bound: int, worst: tuple[int, int]) -> None:
    assert TIERED.worst_rates(bound) == worst


def test_the_whole_request_pays_the_tier_of_its_prompt() -> None:
    table = PriceTable(name="t", rounding="ceil", entries={"t": TIERED})
    assert table.cost("t", Usage(100, 10)) == 100 * 1 + 10 * 2
    assert table.cost("t", Usage(101, 10)) == 101 * 3 + 10 * 4
    assert table.cost("t", Usage(50, 10, cache_read_tokens=51)) == 101 * 3 + 10 * 4


# -- tables ------------------------------------------------------------------------------------


def test_ceil_rounding_rounds_each_request_up_once() -> None:
    table = PriceTable(name="t", rounding="ceil", entries={"m": ModelPrice(model="m", rates=ALL)})
    assert table.cost("m", Usage(1, 0)) == 1  # 1 µ$/M for one token: 10**-6 µ$, rounded up
    assert table.cost("m", Usage(0, 0)) == 0
    exact = PriceTable(
        name="t",
        rounding="ceil",
        entries={"m": ModelPrice(model="m", rates=Rates(input=M, output=M))},
    )
    assert exact.cost("m", Usage(7, 5)) == 12  # exact: no rounding up
    omnillm = PriceTable(
        name="t", rounding="omnillm", entries={"m": ModelPrice(model="m", rates=ALL)}
    )
    assert omnillm.cost("m", Usage(1, 0)) == 0  # omnillm floors


def test_lookup_order_entries_then_prefixes_then_resolver_then_fallback() -> None:
    calls: list[str] = []

    def resolver(model: str) -> ModelPrice | None:
        calls.append(model)
        return ModelPrice(model=model, rates=Rates(input=3, output=3)) if model == "r" else None

    exact = ModelPrice(model="ab", rates=Rates(input=1, output=1))
    short = ModelPrice(model="a", rates=Rates(input=2, output=2))
    longer = ModelPrice(model="ab", rates=Rates(input=4, output=4))
    table = PriceTable(
        name="t", rounding="ceil", entries={"ab": exact}, prefixes=(short, longer),
        resolver=resolver, fallback="ab",
    )  # fmt: skip
    assert table.price("ab") is exact
    assert table.price("abc") is short  # the first matching prefix, not the longest
    assert table.price("r").rates.input == 3
    fallback = table.price("zzz")
    assert fallback.rates is exact.rates and fallback.source == "fallback ab"
    assert table.price("r") is table.price("r")
    assert calls.count("r") == 1  # prices are cached per model
    assert table.known_models() == ["ab", "a", "ab"]


def test_unknown_models_and_bad_names() -> None:
    table = PriceTable(name="t", rounding="ceil")
    with pytest.raises(UnknownModelError) as info:
        table.price("x")
    assert "x" in str(info.value) and "--prices FILE" in str(info.value)
    for bad in ("", "   ", None, 3):
        with pytest.raises(InvalidValueError) as bad_info:
            table.price(bad)  # type: ignore[arg-type]
        assert bad_info.value.parameter == "model"
    with pytest.raises(UnknownModelError):
        PriceTable(name="t", rounding="ceil", fallback="nothing")  # fails at construction
    with pytest.raises(InvalidValueError) as rounding:
        PriceTable(name="t", rounding="floor")  # type: ignore[arg-type]
    assert rounding.value.parameter == "rounding"


def test_overrides_and_fallback_copies_leave_the_original_alone() -> None:
    table = catalogue("omnillm-0.1.5")
    mine = ModelPrice(model="gpt-4o", rates=Rates(input=1, output=1))
    over = table.with_overrides({"gpt-4o": mine})
    assert over.price("gpt-4o") is mine
    assert table.price("gpt-4o").rates.input == 5 * M
    loose = table.with_fallback("gpt-4o")
    assert loose.price("unheard-of").rates.input == 5 * M
    assert table.with_fallback(None).fallback is None
    with pytest.raises(UnknownModelError):
        table.price("unheard-of")
    with pytest.raises(ConfigError) as info:
        catalogue("cheapest")
    assert info.value.parameter == "catalogue"


@pytest.mark.parametrize(
    ("name", "field"), [("input_tokens", 0), ("output_tokens", 1), ("cache_read_tokens", 2),
                        ("cache_write_tokens", 3), ("cache_write_1h_tokens", 4)]
)  # fmt: skip
@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_usage_names_the_bad_count(name: str, field: int, bad: object) -> None:
    counts: list[object] = [0, 0, 0, 0, 0]
    counts[field] = bad
    with pytest.raises(InvalidValueError) as info:
        Usage(*counts)  # type: ignore[arg-type]
    assert info.value.parameter == name


@pytest.mark.parametrize(
    ("name", "value"),
    [("input", -1), ("output", 1.5), ("cache_read", -1), ("cache_write", True),
     ("cache_write_1h", -2)],
)  # fmt: skip
def test_rates_name_the_bad_rate(name: str, value: object) -> None:
    kwargs: dict[str, object] = {"input": 1, "output": 1, name: value}
    with pytest.raises(InvalidValueError) as info:
        Rates(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == name


def test_overrides_file_with_every_rate(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."m"]\ninput = "1.5"\noutput = "2"\ncache_read = "0.25"\n'
        'cache_write = "3"\ncache_write_1h = "4.000001"\n'
    )
    price = load_overrides(path)["m"]
    assert price.rates == Rates(
        input=1_500_000, output=2_000_000, cache_read=250_000, cache_write=3_000_000,
        cache_write_1h=4_000_001,
    )  # fmt: skip
    assert price.source == f"override {path}"
    assert load_overrides(_write(tmp_path, "")) == {}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "parameter"),
    [
        ("models = 3\n", "models"),
        ('[models]\nm = "x"\n', "models.m"),
        ('[models."m"]\ninput = "1"\n', "models.m.output"),
        ('[models."m"]\noutput = "1"\n', "models.m.input"),
        ('[models."m"]\ninput = "1"\noutput = "-1"\n', "models.m.output"),
        ('[models."m"]\ninput = "1"\noutput = "1"\nbatch = "1"\n', "models.m.batch"),
        ("other = 1\n", "other"),
        ("not toml [", "prices file"),
    ],
)
def test_overrides_file_errors_name_the_key(tmp_path: Path, text: str, parameter: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_overrides(path)
    assert info.value.parameter == parameter


def test_missing_overrides_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot be read"):
        load_overrides(tmp_path / "absent.toml")


# omnillm 0.1.5's prefix table, from the reference (section 6), in USD per million tokens:
# (prefix, input, output, cache_read, cache_write_5m, cache_write_1h). OpenAI's "cached input"
# rate is our cache_read.
OMNILLM_REFERENCE = [
    ("gpt-5.5", "5.00", "30.00", "0.50", None, None),
    ("gpt-5.4-mini", "0.75", "4.50", "0.075", None, None),
    ("gpt-5.4", "2.50", "15.00", "0.25", None, None),
    ("gpt-4o-mini", "0.15", "0.60", None, None, None),
    ("gpt-4o", "5.00", "15.00", None, None, None),
    ("claude-opus-4", "5.00", "25.00", "0.50", "6.25", "10.00"),
    ("claude-sonnet-4", "3.00", "15.00", "0.30", "3.75", "6.00"),
    ("claude-3-5-sonnet", "3.00", "15.00", "0.30", "3.75", "6.00"),
    ("claude-haiku-4", "1.00", "5.00", "0.10", "1.25", "2.00"),
    ("claude-3-haiku", "0.25", "1.25", "0.03", "0.30", "0.50"),
]


def _micros(usd: str | None) -> int | None:
    return None if usd is None else round(float(usd) * 1_000_000)


@pytest.mark.parametrize("row", OMNILLM_REFERENCE, ids=lambda row: row[0])
def test_omnillm_table_is_the_reference_table(row: tuple[str, ...]) -> None:
    prefix, inp, out, read, write, write_1h = row
    table = catalogue("omnillm-0.1.5")
    for model in (prefix, f"{prefix}-20260101"):  # a prefix matches dated names too
        rates = table.price(model).rates
        assert (rates.input, rates.output, rates.cache_read) == (
            _micros(inp), _micros(out), _micros(read),
        )  # fmt: skip
        assert (rates.cache_write, rates.cache_write_1h) == (_micros(write), _micros(write_1h))
    assert [p.model for p in table.prefixes] == [r[0] for r in OMNILLM_REFERENCE]


def test_price_records_are_frozen_and_keyword_only() -> None:
    rates = Rates(input=1, output=2)
    price = ModelPrice(model="m", rates=rates)
    table = PriceTable(name="t", rounding="ceil")
    records = [
        (Usage(1, 2), "input_tokens"),
        (rates, "input"),
        (PriceTier(1, rates), "start"),
        (price, "model"),
        (table, "name"),
    ]
    for record, field in records:
        with pytest.raises(AttributeError):
            setattr(record, field, 1)
    with pytest.raises(TypeError):
        Rates(1, 2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ModelPrice("m", rates)  # type: ignore[misc]


def test_current_rates_are_genai_prices_own_figures() -> None:
    from datetime import UTC, datetime

    from genai_prices import data_snapshot

    when = datetime(2026, 1, 1, tzinfo=UTC)
    model = "claude-sonnet-4-5"
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
    theirs = info.get_prices(when)
    rates = current_table(when).price(model).rates
    pairs = [
        (rates.cache_read, "cache_read_mtok"),
        (rates.cache_write, "cache_write_mtok"),
        (rates.cache_write_1h, "cache_write_1h_mtok"),
    ]
    for ours, field in pairs:
        value = getattr(theirs, field, None)
        assert value is not None, field  # the premise: this model has every cache rate
        value = getattr(value, "base", value)  # below its long-context tier
        assert ours == int(value * 1_000_000), field
