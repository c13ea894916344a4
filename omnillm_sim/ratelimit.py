"""Rate limiters for one API key: clock-free, every call takes ``now`` (float seconds).

Inside, times are integer microseconds (`omnillm_sim.timebase`), so exact edges never depend
on float rounding: with a 60 s window, an admission at 235.343 s still counts at 295.343 s.

* `SlidingWindowLog` — omnillm's RPM window: an exact log of admission times. An entry
  exactly ``window`` old still counts, so at most ``limit`` admissions fall in any *closed*
  interval of length ``window``. A rejection records nothing.
* `InflightTokenCap` — omnillm's "TPM": the sum of the token estimates of requests in flight
  must stay ``<= limit``. Tokens come back on `InflightTokenCap.release`, never with time.
* `TokenBucket` — a true per-minute token limit (what providers enforce): continuous refill
  at ``rate_per_minute / 60`` tokens per second up to ``burst``. A request larger than the
  burst can never be admitted and is refused with a reason saying so.

Each ``try_acquire`` returns a `Decision`, truthy when admitted, that says why not and when
time alone would help (``retry_after``); each ``test`` answers the same without consuming.
Time must not go backwards: a smaller ``now`` than the last one seen is an error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.timebase import MICROS_PER_SECOND, to_micros
from omnillm_sim.validate import non_negative_int, positive_float, positive_int

__all__ = [
    "ALLOWED",
    "Decision",
    "InflightTokenCap",
    "LimiterStats",
    "SlidingWindowLog",
    "TokenBucket",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """A limiter's answer: ``allowed``, and if not, ``reason`` and ``retry_after``.

    ``retry_after`` is the number of seconds after which time alone would let the same
    request through (``None``: waiting alone never helps, e.g. a request above a bucket's
    burst, or an in-flight cap that only releases free). A `Decision` is truthy iff allowed.
    """

    allowed: bool
    reason: str = ""
    retry_after: float | None = None

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)
"""The one "allowed" decision (limiters return it to avoid an allocation per admission)."""


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """Counters of one limiter: admissions, rejections and the amount in use right now.

    ``in_use`` is entries in the window (`SlidingWindowLog`), tokens in flight
    (`InflightTokenCap`) or tokens drained from the bucket (`TokenBucket`); ``peak`` its
    maximum so far.
    """

    limit: float
    admitted: int
    rejected: int
    in_use: float
    peak: float


_NEVER = -(2**63)  # before any time: the first call may come at any time


def _check_now(now: float, last: int) -> int:
    """``now`` in microseconds; it must not be earlier than ``last`` (microseconds)."""
    us = to_micros(now)
    if us < last:
        raise InvalidValueError(
            "now", now, f"must be >= {last / MICROS_PER_SECOND} (time never goes backwards)"
        )
    return us


_NO_ENTRIES: deque[int] = deque()
"""The log of every window never admitted to, shared and never appended to: an empty deque
takes about 760 bytes, most of a key's memory in a pool of 100,000 mostly idle keys."""


class SlidingWindowLog:
    """At most ``limit`` admissions in any closed interval of ``window`` seconds (exact log).

    >>> w = SlidingWindowLog(2, window=60.0)
    >>> bool(w.try_acquire(0.0)), bool(w.try_acquire(1.0)), bool(w.try_acquire(60.0))
    (True, True, False)
    >>> bool(w.try_acquire(60.5))     # the entry at 0.0 is now more than 60 s old
    True

    Raises:
        InvalidValueError: ``limit`` not an int > 0, ``window`` not a number > 0.
    """

    __slots__ = (
        "_admitted", "_last", "_limit", "_log", "_peak", "_rejected", "_window", "_window_us",
        "watch",
    )

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self._limit = positive_int("limit", limit)
        self._window = positive_float("window", window)
        self._window_us = to_micros(self._window, "window")
        self._log: deque[int] = _NO_ENTRIES  # admission times, microseconds
        self._last = _NEVER
        self._admitted = 0
        self._rejected = 0
        self._peak = 0
        self.watch: Callable[[], object] | None = None  # called after the log gains or loses one

    @property
    def limit(self) -> int:
        """Admissions allowed per window."""
        return self._limit

    @property
    def window(self) -> float:
        """The window length in seconds."""
        return self._window

    def _prune(self, now: float) -> None:
        self._last = us = _check_now(now, self._last)
        log, window = self._log, self._window_us
        while log and us - log[0] > window:  # strict: exactly `window` old still counts
            log.popleft()

    def count(self, now: float) -> int:
        """Admissions in the closed interval ``[now - window, now]``."""
        self._prune(now)
        return len(self._log)

    def count_at(self, now: float, now_us: int) -> int:
        """`count` with ``now`` already in microseconds (``now_us == to_micros(now)``): the
        key pool converts a request's time once, not once per key it looks at."""
        if now_us < self._last:
            _check_now(now, self._last)  # raises: time went backwards
        self._last = now_us
        log, window = self._log, self._window_us
        while log and now_us - log[0] > window:
            log.popleft()
        return len(log)

    def test(self, now: float) -> Decision:
        """Would `try_acquire` admit at ``now``? Consumes nothing."""
        self._prune(now)
        if len(self._log) < self._limit:
            return ALLOWED
        return self._refusal()

    def _refusal(self) -> Decision:
        """The refusal of a full window (pruned as of ``_last``)."""
        # The oldest entry stops counting strictly after oldest + window.
        wait = (self._log[0] + self._window_us - self._last) / MICROS_PER_SECOND
        return Decision(
            False,
            f"window full: {len(self._log)} of {self._limit} admissions in the last "
            f"{self._window:g} s",
            wait,
        )

    def try_acquire(self, now: float) -> Decision:
        """Admit one request at ``now`` and log it, or refuse and record nothing."""
        if self.acquire_at(now, _check_now(now, self._last)):
            return ALLOWED
        return self._refusal()

    def acquire_at(self, now: float, now_us: int) -> bool:
        """`try_acquire` with ``now`` already in microseconds (``now_us == to_micros(now)``;
        the gateway converts a request's time once): True if admitted and logged."""
        if now_us < self._last:
            _check_now(now, self._last)  # raises: time went backwards
        self._last = now_us
        log = self._log
        window = self._window_us
        while log and now_us - log[0] > window:  # strict: exactly `window` old still counts
            log.popleft()
        if len(log) >= self._limit:
            self._rejected += 1
            return False
        if log is _NO_ENTRIES:
            log = self._log = deque()
        log.append(now_us)
        self._admitted += 1
        if self.watch is not None:
            self.watch()
        if len(log) > self._peak:
            self._peak = len(log)
        return True

    def forget_latest(self, at: float) -> bool:
        """Remove the most recent entry logged at time ``at``; True if one was found.

        Used by policies that give a slot back (the faithful policy never does).
        """
        at_us = to_micros(at, "at")
        for i in range(len(self._log) - 1, -1, -1):
            if self._log[i] == at_us:
                del self._log[i]
                if self.watch is not None:
                    self.watch()
                return True
        return False

    def stats(self) -> LimiterStats:
        """Counters; ``in_use`` counts entries not yet pruned as of the last call."""
        return LimiterStats(self._limit, self._admitted, self._rejected, len(self._log), self._peak)

    def __repr__(self) -> str:
        return (
            f"<SlidingWindowLog {len(self._log)}/{self._limit} per {self._window:g}s"
            f" admitted={self._admitted} rejected={self._rejected}>"
        )


class InflightTokenCap:
    """omnillm's "TPM": admit iff ``in_flight + tokens <= limit``; `release` gives tokens back.

    Not a rate: tokens never come back with time, only when the request ends.

    Raises:
        InvalidValueError: ``limit`` not an int > 0; negative token counts.
    """

    __slots__ = ("_admitted", "_inflight", "_last", "_limit", "_peak", "_rejected", "watch")

    def __init__(self, limit: int) -> None:
        self._limit = positive_int("limit", limit)
        self._inflight = 0
        self._last = _NEVER
        self._admitted = 0
        self._rejected = 0
        self._peak = 0
        self.watch: Callable[[], object] | None = None  # called after the in-flight count moves

    @property
    def limit(self) -> int:
        """The cap on tokens in flight."""
        return self._limit

    @property
    def inflight(self) -> int:
        """Tokens held by requests in flight."""
        return self._inflight

    def test(self, tokens: int, now: float) -> Decision:
        """Would `try_acquire` admit ``tokens`` at ``now``? Consumes nothing."""
        self._last = _check_now(now, self._last)
        if self._inflight + tokens <= self._limit:
            return ALLOWED
        return self._refusal(tokens)

    def _refusal(self, tokens: int) -> Decision:
        return Decision(
            False,
            f"in-flight tokens {self._inflight} + {tokens} > cap {self._limit}",
            None,
        )

    def has_room_at(self, tokens: int, now: float, now_us: int) -> bool:
        """``bool(test(tokens, now))`` with ``now`` already in microseconds
        (``now_us == to_micros(now)``; see `SlidingWindowLog.count_at`)."""
        if now_us < self._last:
            _check_now(now, self._last)  # raises: time went backwards
        self._last = now_us
        return self._inflight + tokens <= self._limit

    def try_acquire(self, tokens: int, now: float) -> Decision:
        """Hold ``tokens`` until `release`, or refuse."""
        if self.acquire_at(tokens, now, _check_now(now, self._last)):
            return ALLOWED
        return self._refusal(tokens)

    def acquire_at(self, tokens: int, now: float, now_us: int) -> bool:
        """`try_acquire` with ``now`` already in microseconds (``now_us == to_micros(now)``):
        True if the tokens are now held."""
        if type(tokens) is not int or tokens < 0:
            non_negative_int("tokens", tokens)
        if now_us < self._last:
            _check_now(now, self._last)  # raises: time went backwards
        self._last = now_us
        inflight = self._inflight + tokens
        if inflight > self._limit:
            self._rejected += 1
            return False
        self._inflight = inflight
        self._admitted += 1
        if inflight > self._peak:
            self._peak = inflight
        if self.watch is not None:
            self.watch()
        return True

    def release(self, tokens: int, now: float) -> None:
        """Give back ``tokens`` held by a finished request.

        Raises:
            InvalidValueError: more tokens than are in flight (a double release).
        """
        self.release_at(tokens, now, _check_now(now, self._last))

    def release_at(self, tokens: int, now: float, now_us: int) -> None:
        """`release` with ``now`` already in microseconds (``now_us == to_micros(now)``)."""
        if type(tokens) is not int or tokens < 0:
            non_negative_int("tokens", tokens)
        if now_us < self._last:
            _check_now(now, self._last)  # raises: time went backwards
        self._last = now_us
        if tokens > self._inflight:
            raise InvalidValueError(
                "tokens", tokens, f"must be <= the {self._inflight} tokens in flight"
            )
        self._inflight -= tokens
        if self.watch is not None:
            self.watch()

    def stats(self) -> LimiterStats:
        """Counters; ``in_use`` is the tokens in flight."""
        return LimiterStats(self._limit, self._admitted, self._rejected, self._inflight, self._peak)

    def __repr__(self) -> str:
        return (
            f"<InflightTokenCap {self._inflight}/{self._limit} tokens in flight"
            f" admitted={self._admitted} rejected={self._rejected}>"
        )


class TokenBucket:
    """A per-minute token limit: ``burst`` tokens, refilled continuously at ``rate/60`` per s.

    Over any interval of ``d`` seconds it admits at most ``burst + rate_per_minute * d / 60``
    tokens. ``burst`` defaults to one minute's worth. The bucket starts full.

    >>> b = TokenBucket(600, burst=100)     # 10 tokens per second
    >>> bool(b.try_acquire(100, 0.0)), bool(b.try_acquire(10, 0.5)), bool(b.try_acquire(10, 1.0))
    (True, False, True)

    Raises:
        InvalidValueError: ``rate_per_minute`` or ``burst`` not > 0.
    """

    # A continuous refill of a float level: time stays in float seconds here (the bucket has
    # no exact edge to protect; the safe policy alone uses it).
    __slots__ = ("_admitted", "_burst", "_last", "_level", "_peak", "_rate", "_rejected")

    def __init__(self, rate_per_minute: float, burst: float | None = None) -> None:
        self._rate = positive_float("rate_per_minute", rate_per_minute) / 60.0
        self._burst = positive_float("burst", burst) if burst is not None else self._rate * 60.0
        self._level = self._burst
        self._last = float("-inf")
        self._admitted = 0
        self._rejected = 0
        self._peak = 0.0

    @property
    def rate_per_minute(self) -> float:
        """Refill rate, tokens per minute."""
        return self._rate * 60.0

    @property
    def burst(self) -> float:
        """Bucket capacity, tokens."""
        return self._burst

    def level(self, now: float) -> float:
        """Tokens available at ``now``."""
        if not (type(now) is float and now >= self._last):  # NaN fails the comparison
            to_micros(now)  # a number of seconds?
            if now < self._last:
                raise InvalidValueError(
                    "now", now, f"must be >= {self._last} (time never goes backwards)"
                )
            now = float(now)
        if self._last != float("-inf"):
            self._level = min(self._burst, self._level + (now - self._last) * self._rate)
        self._last = now
        return self._level

    def test(self, tokens: int, now: float) -> Decision:
        """Would `try_acquire` admit ``tokens`` at ``now``? Consumes nothing."""
        level = self.level(now)
        if tokens > self._burst:
            return Decision(
                False,
                f"{tokens} tokens exceed the bucket's burst of {self._burst:g}: "
                "this request can never be admitted",
                None,
            )
        if tokens <= level:
            return ALLOWED
        return Decision(
            False,
            f"{tokens} tokens requested, {level:.1f} of {self._burst:g} available",
            (tokens - level) / self._rate,
        )

    def try_acquire(self, tokens: int, now: float) -> Decision:
        """Take ``tokens`` from the bucket, or refuse (see `Decision.reason`)."""
        non_negative_int("tokens", tokens)
        decision = self.test(tokens, now)
        if not decision.allowed:
            self._rejected += 1
            return decision
        self._level -= tokens
        self._admitted += 1
        drained = self._burst - self._level
        if drained > self._peak:
            self._peak = drained
        return decision

    def stats(self) -> LimiterStats:
        """Counters; ``in_use`` is the tokens drained as of the last call."""
        return LimiterStats(
            self._burst, self._admitted, self._rejected, self._burst - self._level, self._peak
        )

    def __repr__(self) -> str:
        return (
            f"<TokenBucket {self._level:.1f}/{self._burst:g} tokens,"
            f" {self._rate * 60.0:g}/min admitted={self._admitted} rejected={self._rejected}>"
        )
