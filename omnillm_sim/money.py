"""Money: integer micro-dollars, exact conversions at the edges.

Inside omnillm-sim every amount of money is an ``int`` of micro-dollars (1 USD = 1,000,000).
Floats and strings exist only at the edges: `usd_to_micro` converts in, `micro_to_usd` and
`format_usd` convert out.

The one rounding rule: an amount finer than one micro-dollar is rounded half-to-even by
`usd_to_micro`. Token costs are computed in integers by `omnillm_sim.pricing`, which documents
its own (ceiling) rounding.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

from omnillm_sim.errors import InvalidValueError

__all__ = [
    "MICROS_PER_USD",
    "U64_MAX",
    "MicroDollar",
    "UsdLike",
    "check_micros",
    "format_usd",
    "micro_to_usd",
    "seed_usd_to_micro",
    "usd_to_micro",
]

MicroDollar = int
"""An amount of money in micro-dollars (1 USD = 1,000,000)."""

MICROS_PER_USD = 1_000_000
U64_MAX = 2**64 - 1
"""The seed's ``u64::MAX``: what it uses for "no limit"."""

UsdLike = int | float | str | Decimal
_ONE_MICRO = Decimal("0.000001")
_MAX_USD_DIGITS = 14  # amounts >= 1e14 USD (above the seed's u64 range) are refused


def usd_to_micro(value: UsdLike, *, name: str = "amount") -> MicroDollar:
    """Convert a USD amount to micro-dollars, exactly.

    Accepts ``int``, ``Decimal``, ``str`` (``"0.25"``, ``"$0.25"``, surrounding blanks allowed)
    and ``float``. A float is converted through its shortest repr, so ``2.01`` is 2,010,000
    (the seed's truncating conversion gives 2,009,999). Amounts finer than a micro-dollar round
    half-to-even.

    Raises:
        InvalidValueError: (a ``ValueError``) for NaN, infinities, negative amounts, ``bool``,
            unparsable strings and other types; the message names ``name`` and the value.
    """
    dec = _to_decimal(value, name)
    if not dec.is_finite():
        raise InvalidValueError(name, value, "must be a finite amount of USD")
    if dec < 0:
        raise InvalidValueError(name, value, "must be >= 0 USD")
    if dec.adjusted() >= _MAX_USD_DIGITS:
        raise InvalidValueError(name, value, f"must be < 1e{_MAX_USD_DIGITS} USD")
    # quantize rounds exactly once, at the micro-dollar, whatever the input's precision.
    with localcontext() as ctx:
        ctx.prec = 40
        micros = dec.quantize(_ONE_MICRO, rounding=ROUND_HALF_EVEN).scaleb(6)
    return int(micros)


def _to_decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool):
        raise InvalidValueError(name, value, "must be an amount of USD, not a bool")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise InvalidValueError(name, value, "must be a finite amount of USD")
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("$"):
            text = text[1:].strip()
        if "_" in text or not text.isascii():
            # Decimal() reads "1_000" and Unicode digits ("１２", "١٢"); a money string in a
            # file or option is refused instead of being read as something the user did not mean.
            raise InvalidValueError(
                name, value, 'must be an amount of USD in ASCII digits like "0.25", without "_"'
            )
        try:
            return Decimal(text)
        except InvalidOperation:
            raise InvalidValueError(
                name, value, 'must be an amount of USD like "0.25" or "$0.25"'
            ) from None
    raise InvalidValueError(
        name,
        value,
        f"must be an int, float, Decimal or str amount of USD, not {type(value).__name__}",
    )


def check_micros(value: object, *, name: str = "amount") -> MicroDollar:
    """Return ``value`` if it is a non-negative ``int`` of micro-dollars.

    Raises:
        InvalidValueError: for ``bool``, non-``int`` values and negatives.
    """
    if type(value) is not int:
        raise InvalidValueError(name, value, "must be an int of micro-dollars")
    if value < 0:
        raise InvalidValueError(name, value, "must be >= 0 micro-dollars")
    return value


def micro_to_usd(micros: MicroDollar) -> float:
    """Convert micro-dollars to a float of USD, for display and plotting only."""
    return micros / MICROS_PER_USD


def format_usd(micros: MicroDollar) -> str:
    """Render micro-dollars exactly, with six decimals: ``format_usd(1_234_567) == "$1.234567"``."""
    if type(micros) is not int:
        raise InvalidValueError("micros", micros, "must be an int of micro-dollars")
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}${whole}.{frac:06d}"


def seed_usd_to_micro(usd: float) -> MicroDollar:
    """The seed's conversion ``(usd * 1e6) as u64``: kept for parity tests and the faithful policy.

    It truncates toward zero (``2.01`` -> 2,009,999; ``0.00397`` -> 3,969), maps NaN and
    negatives to 0 and saturates at ``u64::MAX``, like Rust's ``as`` cast.
    """
    scaled = float(usd) * 1_000_000.0
    if math.isnan(scaled) or scaled <= 0.0:
        return 0
    if scaled >= 2.0**64:
        return U64_MAX
    return int(scaled)
