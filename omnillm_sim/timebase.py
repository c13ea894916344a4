"""Time inside the gateway's limiters, breakers and cooldowns: integer microseconds.

Every public method of the core takes ``now`` as float seconds (what SimPy, a test or a real
service has). Inside, `to_micros` converts it once to an ``int`` of microseconds, and every
comparison of two times is an integer comparison. So any pair of times written with up to 6
decimals compares exactly: 295.343 is exactly 60 s after 235.343 (in floats,
``295.343 - 235.343 > 60.0``). omnillm's RPM window compares nanosecond ``Instant`` values,
which agree with microseconds on such times.

omnillm's 429 and breaker deadlines run on a wall clock in whole milliseconds
(``now_millis() + delay.as_millis() as u64``; `inner.rs` 113-118, `pool.rs` 98 and 112), and a
key is available again once ``now_millis() >= until``. `millisecond_deadline` reproduces that
in microseconds: the deadline is a whole millisecond, so ``now_us >= deadline_us`` is the
crate's ``now_ms >= until_ms``.
"""

from __future__ import annotations

from omnillm_sim.errors import InvalidValueError

__all__ = [
    "MICROS_PER_SECOND",
    "millisecond_deadline",
    "to_micros",
    "to_seconds",
]

MICROS_PER_SECOND = 1_000_000
_MICROS_PER_MS = 1_000


def to_micros(seconds: float, name: str = "now") -> int:
    """``seconds`` as an int of microseconds, rounded to the nearest one.

    Exact for every float written with up to 6 decimals (below about 4e9 s).

    Raises:
        InvalidValueError: NaN, an infinity, a bool or a non-number.
    """
    if type(seconds) is float and seconds - seconds == 0.0:  # hot path: finite floats
        return round(seconds * 1e6)
    if type(seconds) is int:
        return seconds * MICROS_PER_SECOND
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidValueError(name, seconds, "must be a number of seconds")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidValueError(name, seconds, "must be a finite number of seconds")
    return round(float(seconds) * 1e6)


def to_seconds(micros: int) -> float:
    """An int of microseconds as float seconds (for display and the public API)."""
    return micros / MICROS_PER_SECOND


def millisecond_deadline(now_us: int, delay_us: int) -> int:
    """omnillm's ``now_millis() + delay.as_millis() as u64``, in microseconds.

    Both terms truncate to whole milliseconds: a 1 s delay from 1.000600 s ends at 2.000000 s.
    """
    return (now_us // _MICROS_PER_MS + delay_us // _MICROS_PER_MS) * _MICROS_PER_MS
