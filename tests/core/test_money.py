from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.errors import InvalidValueError, OmniLLMError
from omnillm_sim.money import (
    U64_MAX,
    check_micros,
    format_usd,
    micro_to_usd,
    seed_usd_to_micro,
    usd_to_micro,
)


@given(st.integers(min_value=0, max_value=10**19))
def test_decimal_micros_round_trip_exactly(k: int) -> None:
    assert usd_to_micro(Decimal(k) / 10**6) == k


@given(st.integers(min_value=0, max_value=10**19))
def test_string_micros_round_trip_exactly(k: int) -> None:
    whole, frac = divmod(k, 10**6)
    assert usd_to_micro(f"{whole}.{frac:06d}") == k
    assert usd_to_micro(format_usd(k)) == k


@given(st.integers(min_value=0, max_value=10**12))
def test_float_with_six_decimals_converts_exactly(k: int) -> None:
    # A float that prints with at most 6 decimals is the amount its repr shows.
    value = float(f"{k // 10**6}.{k % 10**6:06d}")
    assert usd_to_micro(value) == k


@pytest.mark.parametrize(
    ("value", "exact", "seed"),
    [
        (2.01, 2_010_000, 2_009_999),
        (0.00397, 3_970, 3_969),
        (0.000249, 249, 248),
        (50.0, 50_000_000, 50_000_000),
        (0.1, 100_000, 100_000),
    ],
)
def test_exact_and_seed_conversions_differ_where_the_seed_truncates(
    value: float, exact: int, seed: int
) -> None:
    # Independent reason: the decimal literal is the amount a user meant; the seed computes
    # value * 1e6 in binary floating point and truncates toward zero.
    assert usd_to_micro(value) == exact
    assert seed_usd_to_micro(value) == seed
    assert int(value * 1e6) == seed


def test_seed_conversion_truncation_rate_on_five_decimal_amounts() -> None:
    # DESIGN.md: about 1.2% of amounts with 5 decimal places differ.
    amounts = [n / 100_000 for n in range(100_000)]
    differ = sum(usd_to_micro(a) != seed_usd_to_micro(a) for a in amounts)
    assert 0.005 < differ / len(amounts) < 0.02


@pytest.mark.parametrize(
    ("value", "expected"),
    [(float("nan"), 0), (-1.0, 0), (float("inf"), U64_MAX), (1e14, U64_MAX), (0.0, 0)],
)
def test_seed_conversion_edges_match_rust_as_cast(value: float, expected: int) -> None:
    assert seed_usd_to_micro(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.25", 250_000),
        ("$0.25", 250_000),
        (" $ 1.5 ", 1_500_000),
        (3, 3_000_000),
        (Decimal("0.0000005"), 0),  # half-even: 0.5 micro rounds to 0
        (Decimal("0.0000015"), 2),  # 1.5 micro rounds to 2
        (Decimal("0.00000150000000000000000000000000001"), 2),
        ("1e-3", 1_000),
    ],
)
def test_accepted_inputs(value: object, expected: int) -> None:
    assert usd_to_micro(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (float("-inf"), "finite"),
        ("nan", "finite"),
        ("Infinity", "finite"),
        (-0.01, ">= 0"),
        ("-1", ">= 0"),
        (Decimal("-5"), ">= 0"),
        (True, "bool"),
        (False, "bool"),
        ("abc", "like"),
        ("", "like"),
        ("1.2.3", "like"),
        (None, "NoneType"),
        ([1], "list"),
        ("1e20", "< 1e14"),
        ("1_000", "ASCII digits"),  # Decimal() would read 1000
        ("$1_000.50", "ASCII digits"),
        ("\uff11\uff12", "ASCII digits"),  # full-width 12
        ("\u0661\u0662", "ASCII digits"),  # Arabic-Indic 12
        ("2\u00b2", "ASCII digits"),  # superscript two
    ],
)
def test_rejected_inputs_name_the_value(value: object, fragment: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        usd_to_micro(value, name="limit")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"limit(={value!r})")
    assert fragment in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, OmniLLMError)


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "$0.000000"), (1_234_567, "$1.234567"), (-1, "-$0.000001"), (10**6, "$1.000000")],
)
def test_format_usd(micros: int, text: str) -> None:
    assert format_usd(micros) == text


def test_micro_to_usd_and_check_micros() -> None:
    assert micro_to_usd(500_000) == 0.5
    assert check_micros(5) == 5
    for bad in (-1, 1.0, True, "1"):
        with pytest.raises(InvalidValueError):
            check_micros(bad)
