"""Edges of the money functions that mutation testing found unguarded (issue 13)."""

import math
from decimal import Decimal

import pytest

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.money import U64_MAX, check_micros, format_usd, seed_usd_to_micro, usd_to_micro


def test_u64_max_is_rusts_u64_max() -> None:
    # The literal from Rust's documentation of u64::MAX, not a value computed like the module.
    assert U64_MAX == 18_446_744_073_709_551_615


def test_the_money_cap_is_exactly_1e14_usd() -> None:
    just_below = Decimal("99999999999999.999999")
    assert usd_to_micro(just_below) == 99_999_999_999_999_999_999
    for at_cap in ("100000000000000", 10**14, Decimal("1E+14"), 1e14):
        with pytest.raises(InvalidValueError, match=r"must be < 1e14 USD"):
            usd_to_micro(at_cap)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused_as_such(value: float) -> None:
    with pytest.raises(InvalidValueError, match=r"must be a finite amount of USD$"):
        usd_to_micro(value)


def test_very_long_decimals_round_once_at_the_micro_dollar() -> None:
    # 45 significant digits: more than Decimal's default precision of 28.
    text = "12345678901234.5678905" + "0" * 20 + "1"
    assert usd_to_micro(text) == 12_345_678_901_234_567_891  # ...5678905|...1 rounds up


def test_check_micros_accepts_zero_and_refuses_negatives() -> None:
    assert check_micros(0) == 0
    assert check_micros(7) == 7
    with pytest.raises(InvalidValueError, match=r"must be >= 0 micro-dollars$"):
        check_micros(-1)


@pytest.mark.parametrize("value", [1.0, True, "1", Decimal(1)])
def test_format_usd_refuses_what_is_not_an_int(value: object) -> None:
    with pytest.raises(InvalidValueError, match=r"must be an int of micro-dollars$"):
        format_usd(value)  # type: ignore[arg-type]


def test_format_usd_of_a_negative_amount() -> None:
    assert format_usd(-1) == "-$0.000001"
    assert format_usd(0) == "$0.000000"


def test_seed_conversion_of_one_micro_dollar() -> None:
    assert 0.000001 * 1e6 == 1.0  # the premise: the product is exact
    assert seed_usd_to_micro(0.000001) == 1
    assert seed_usd_to_micro(0.0000015) == 1  # truncates
    assert seed_usd_to_micro(0.0) == 0
    assert seed_usd_to_micro(-0.0) == 0


def test_seed_conversion_saturates_from_exactly_2_pow_64() -> None:
    at = 2.0**64 / 1e6
    assert at * 1e6 == 2.0**64  # the premise: this amount scales to exactly 2^64
    assert seed_usd_to_micro(at) == U64_MAX  # Rust's `2^64 as u64` saturates
    below = at
    while below * 1e6 >= 2.0**64:
        below = math.nextafter(below, 0.0)
    # Below 2^64 Rust's cast is the float's integer value, which is less than u64::MAX.
    assert seed_usd_to_micro(below) == int(below * 1e6) < U64_MAX
    # Between 2^64 and 2^65 it still saturates.
    assert seed_usd_to_micro(3.0 * 2.0**63 / 1e6) == U64_MAX
