"""Argument checks shared by the core: one place that words every "bad value" message.

Each check returns the value it accepted, so constructors can write
``self._limit = positive_int("limit", limit)``. Messages follow one pattern,
``rpm(=0) must be > 0``, and carry the value's ``source`` when it came from a file or option.
"""

from __future__ import annotations

import math

from omnillm_sim.errors import InvalidValueError

__all__ = [
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]


def _int(name: str, value: object, source: str) -> int:
    if type(value) is not int:  # bool is an int subclass, and never a count
        raise InvalidValueError(name, value, "must be an integer", source=source)
    return value


def _float(name: str, value: object, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError(name, value, "must be a number", source=source)
    as_float = float(value)
    if not math.isfinite(as_float):
        raise InvalidValueError(name, value, "must be finite", source=source)
    return as_float


def non_negative_int(name: str, value: object, *, source: str = "") -> int:
    """Return ``value`` if it is an ``int`` >= 0 (token counts, attempt caps)."""
    if type(value) is int and value >= 0:  # the common case, on hot paths
        return value
    checked = _int(name, value, source)
    if checked < 0:
        raise InvalidValueError(name, value, "must be >= 0", source=source)
    return checked


def positive_int(name: str, value: object, *, source: str = "") -> int:
    """Return ``value`` if it is an ``int`` > 0 (limits, thresholds)."""
    checked = _int(name, value, source)
    if checked <= 0:
        raise InvalidValueError(name, value, "must be > 0", source=source)
    return checked


def non_negative_float(name: str, value: object, *, source: str = "") -> float:
    """Return ``value`` as a float if it is a finite number >= 0 (times, durations)."""
    checked = _float(name, value, source)
    if checked < 0:
        raise InvalidValueError(name, value, "must be >= 0", source=source)
    return checked


def positive_float(name: str, value: object, *, source: str = "") -> float:
    """Return ``value`` as a float if it is a finite number > 0 (windows, rates, cooldowns)."""
    checked = _float(name, value, source)
    if checked <= 0:
        raise InvalidValueError(name, value, "must be > 0", source=source)
    return checked
