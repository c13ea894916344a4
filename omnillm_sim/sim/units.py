"""Parsing of the human-friendly values in scenario files: durations, rates and money.

One place parses each notation, so every error reads the same:

* durations: ``"30s"``, ``"10m"``, ``"1.5h"``, ``"250ms"``, ``"1d"`` or a plain number of seconds;
* rates: ``"20/s"``, ``"500/min"``, ``"3/h"`` (returned as events per second);
* money: ``"50.00"`` (USD, exact, returned as integer micro-dollars) or ``"unlimited"``.

Each parser returns the value or raises ``ValueError`` with the expected notation; the
scenario loader turns that into a `ScenarioError` naming the file and key.
"""

from __future__ import annotations

import math
import re

from omnillm_sim.money import MicroDollar, usd_to_micro

__all__ = [
    "DURATION_EXPECTED",
    "MONEY_EXPECTED",
    "RATE_EXPECTED",
    "format_duration",
    "parse_duration",
    "parse_money",
    "parse_rate",
]

DURATION_EXPECTED = 'a duration like "30s", "10m" or "250ms"'
RATE_EXPECTED = 'a rate like "20/s" or "500/min"'
MONEY_EXPECTED = 'an amount of USD like "50.00" (or "unlimited")'

_SECONDS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DURATION_RE = re.compile(rf"^\s*({_NUMBER})\s*(ms|s|sec|min|m|h|d)\s*$")
_RATE_RE = re.compile(rf"^\s*({_NUMBER})\s*/\s*(ms|s|sec|min|m|h|d)\s*$")


def _finite_non_negative(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(value)
    return value


def parse_duration(value: object) -> float:
    """Seconds in ``value``: ``"30s"``, ``"10m"``, ``"1h"``, ``"250ms"`` or a number >= 0.

    Raises:
        ValueError: anything else (negative, NaN, a bool, an unknown unit).
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return _finite_non_negative(float(value))
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return _finite_non_negative(float(match.group(1)) * _SECONDS[match.group(3)])
    raise ValueError(value)


def parse_rate(value: object) -> float:
    """Events per second in ``value``: ``"20/s"``, ``"500/min"``, ``"3/h"``.

    Raises:
        ValueError: a string in another form, a negative rate, or a non-string.
    """
    if isinstance(value, str):
        match = _RATE_RE.match(value)
        if match:
            return _finite_non_negative(float(match.group(1)) / _SECONDS[match.group(3)])
    raise ValueError(value)


def parse_money(value: object) -> MicroDollar | None:
    """Micro-dollars in a USD amount (``"50.00"``, ``"$5"``, ``5``); ``None`` for ``"unlimited"``.

    Raises:
        ValueError: not an amount (``usd_to_micro`` rejects it) or a float (ambiguous in TOML).
    """
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    if isinstance(value, bool | float) or not isinstance(value, str | int):
        raise ValueError(value)
    return usd_to_micro(value, name="limit")


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``: ``"90s"``, ``"10m"``, ``"1.5h"``."""
    if seconds >= 3600 and seconds % 360 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 6 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
