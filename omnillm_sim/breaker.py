"""Circuit breakers for one API key: clock-free, every call takes ``now``.

Protocol: `allow` (may a call start now? consumes nothing), `acquire` (a call starts; returns
a `Ticket` the caller hands back), then exactly one of `record_success`, `record_failure` or
`record_ignored` (the call ended without saying anything about the key's health).

Times are kept in integer microseconds inside (`omnillm_sim.timebase`); ``now`` and
``open_until`` are float seconds at the API.

* `FaithfulBreaker` — omnillm 0.1.5 (reference section 4): count consecutive failures in
  completion order; at ``threshold`` open for ``cooldown`` seconds (``now + cooldown`` on the
  crate's millisecond wall clock, both terms truncated to whole milliseconds, overwriting any
  earlier deadline) and reset the count to 0. A success resets the count
  but not the cooldown. No half-open state: when the cooldown ends the key takes full
  traffic at once. Failures that complete while open still count (and can re-trip).
* `SafeBreaker` — closed / open / half-open. After the cooldown at most ``probes`` calls
  are in flight at once; a probe success closes the breaker, a probe failure re-opens it.
  Results of calls started before the latest state change (stale tickets) change nothing
  but still free their probe slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from omnillm_sim.timebase import millisecond_deadline, to_micros, to_seconds
from omnillm_sim.validate import positive_float, positive_int

__all__ = [
    "BREAKERS",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "FaithfulBreaker",
    "SafeBreaker",
    "Ticket",
]

BreakerState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """Handed out by `CircuitBreaker.acquire`; identifies the breaker epoch and probe status."""

    epoch: int
    probe: bool = False


_EPOCH_ZERO = Ticket(0)


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """Counters of one breaker. ``trips`` counts closed/half-open -> open transitions."""

    state: BreakerState
    consecutive_failures: int
    open_until: float | None
    trips: int
    successes: int
    failures: int
    ignored: int
    probes_in_flight: int


class CircuitBreaker(Protocol):
    """What the key pool needs from a breaker."""

    def state(self, now: float) -> BreakerState: ...
    def allow(self, now: float) -> bool: ...
    def acquire(self, now: float) -> Ticket: ...
    def record_success(self, ticket: Ticket, now: float) -> None: ...
    def record_failure(self, ticket: Ticket, now: float) -> bool: ...
    def record_ignored(self, ticket: Ticket, now: float) -> None: ...
    def stats(self) -> BreakerStats: ...


class FaithfulBreaker:
    """omnillm 0.1.5's breaker: ``threshold`` consecutive failures -> ``cooldown`` s closed off.

    >>> b = FaithfulBreaker(threshold=2, cooldown=30.0)
    >>> t = b.acquire(0.0)
    >>> b.record_failure(t, 1.0), b.record_failure(t, 2.0), b.allow(31.9), b.allow(32.0)
    (False, True, False, True)

    Raises:
        InvalidValueError: ``threshold`` not an int > 0 or ``cooldown`` not > 0.
    """

    __slots__ = (
        "_cooldown",
        "_cooldown_us",
        "_failures",
        "_ignored",
        "_last",
        "_open_until",
        "_successes",
        "_threshold",
        "_trips",
        "consecutive_failures",
    )

    def __init__(self, threshold: int = 5, cooldown: float = 30.0) -> None:
        self._threshold = positive_int("breaker_threshold", threshold)
        self._cooldown = positive_float("breaker_cooldown", cooldown)
        self._cooldown_us = to_micros(self._cooldown, "breaker_cooldown")
        self.consecutive_failures = 0
        self._open_until: int | None = None  # microseconds, a whole millisecond
        self._last = -(2**63)
        self._trips = self._successes = self._failures = self._ignored = 0

    @property
    def open_until(self) -> float | None:
        """The end of the current (or last) cooldown, ``None`` if it never tripped."""
        return None if self._open_until is None else to_seconds(self._open_until)

    def _open_at(self, now: float) -> bool:
        us = to_micros(now)
        if us > self._last:
            self._last = us
        return self._open_until is not None and us < self._open_until

    def state(self, now: float) -> BreakerState:
        """``"open"`` during a cooldown, else ``"closed"`` (there is no half-open)."""
        return "open" if self._open_at(now) else "closed"

    def allow(self, now: float) -> bool:
        """True unless a cooldown is running (``now >= open_until`` allows)."""
        if self._open_until is None:  # hot path: never tripped
            return True
        return not self._open_at(now)

    def acquire(self, now: float) -> Ticket:
        """A call starts; the faithful breaker keeps no per-call state."""
        return _EPOCH_ZERO  # immutable: one shared instance (acquire is on the hot path)

    def record_success(self, ticket: Ticket, now: float) -> None:
        """``report_success``: reset the count; a running cooldown stays."""
        self._successes += 1
        self.consecutive_failures = 0

    def record_failure(self, ticket: Ticket, now: float) -> bool:
        """Count a failure; at ``threshold`` open until ``now + cooldown``. True if it tripped."""
        self._failures += 1
        us = to_micros(now)
        if us > self._last:
            self._last = us
        self.consecutive_failures += 1
        if self.consecutive_failures >= self._threshold:
            # a store (may extend a running cooldown), on the crate's millisecond wall clock
            self._open_until = millisecond_deadline(us, self._cooldown_us)
            self.consecutive_failures = 0
            self._trips += 1
            return True
        return False

    def record_ignored(self, ticket: Ticket, now: float) -> None:
        """Cancelled or 429: no change."""
        self._ignored += 1

    def stats(self) -> BreakerStats:
        """Counters, ``state`` as of the latest ``now`` seen."""
        open_now = self._open_until is not None and self._last < self._open_until
        return BreakerStats(
            "open" if open_now else "closed",
            self.consecutive_failures,
            self.open_until,
            self._trips,
            self._successes,
            self._failures,
            self._ignored,
            0,
        )

    def __repr__(self) -> str:
        return (
            f"<FaithfulBreaker failures={self.consecutive_failures}/{self._threshold}"
            f" open_until={self.open_until} trips={self._trips}>"
        )


class SafeBreaker:
    """closed -> open (``threshold`` consecutive failures) -> half-open (after ``cooldown``).

    In half-open at most ``probes`` calls run at once (counting probes of earlier half-open
    periods still in flight); a probe success closes the breaker, a probe failure re-opens
    it for another ``cooldown``. Stale results (calls started before the latest transition)
    change no state.

    >>> b = SafeBreaker(threshold=1, cooldown=10.0, probes=1)
    >>> b.record_failure(b.acquire(0.0), 1.0)
    True
    >>> b.state(11.0), b.allow(11.0)
    ('half-open', True)
    >>> probe = b.acquire(11.0)
    >>> b.allow(11.0)                       # one probe already in flight
    False
    >>> b.record_success(probe, 12.0); b.state(12.0)
    'closed'

    Raises:
        InvalidValueError: ``threshold``/``probes`` not an int > 0, ``cooldown`` not > 0.
    """

    __slots__ = (
        "_cooldown",
        "_cooldown_us",
        "_epoch",
        "_failures",
        "_ignored",
        "_open_until",
        "_probes",
        "_probes_in_flight",
        "_state",
        "_successes",
        "_threshold",
        "_trips",
        "consecutive_failures",
        "peak_probes",
    )

    def __init__(self, threshold: int = 5, cooldown: float = 30.0, probes: int = 1) -> None:
        self._threshold = positive_int("breaker_threshold", threshold)
        self._cooldown = positive_float("breaker_cooldown", cooldown)
        self._probes = positive_int("half_open_probes", probes)
        self._cooldown_us = to_micros(self._cooldown, "breaker_cooldown")
        self._state: BreakerState = "closed"
        self._epoch = 0
        self._open_until: int | None = None  # microseconds
        self.consecutive_failures = 0
        self._probes_in_flight = 0
        self.peak_probes = 0
        self._trips = self._successes = self._failures = self._ignored = 0

    @property
    def probes_in_flight(self) -> int:
        """Probe calls not yet recorded."""
        return self._probes_in_flight

    @property
    def open_until(self) -> float | None:
        """The end of the current cooldown while open, else ``None``."""
        if self._state != "open" or self._open_until is None:
            return None
        return to_seconds(self._open_until)

    def state(self, now: float) -> BreakerState:
        """The state at ``now`` (an expired cooldown turns into half-open here)."""
        if (
            self._state == "open"
            and self._open_until is not None
            and to_micros(now) >= self._open_until
        ):
            self._state = "half-open"
            self._epoch += 1
        return self._state

    def allow(self, now: float) -> bool:
        """Closed: yes. Open: no. Half-open: iff fewer than ``probes`` probes are in flight."""
        state = self.state(now)
        if state == "closed":
            return True
        return state == "half-open" and self._probes_in_flight < self._probes

    def acquire(self, now: float) -> Ticket:
        """A call starts; in half-open it takes a probe slot.

        Raises:
            RuntimeError: the breaker does not `allow` a call now (a caller bug).
        """
        if not self.allow(now):
            raise RuntimeError(f"{self!r}: acquire() while the breaker refuses calls")
        if self._state == "half-open":
            self._probes_in_flight += 1
            self.peak_probes = max(self.peak_probes, self._probes_in_flight)
            return Ticket(self._epoch, probe=True)
        return Ticket(self._epoch)

    def _end(self, ticket: Ticket, now: float) -> bool:
        """Free the ticket's probe slot; True if its result is current (not stale)."""
        if ticket.probe:
            self._probes_in_flight -= 1
        self.state(now)
        return ticket.epoch == self._epoch

    def _open(self, now: float) -> None:
        self._state = "open"
        self._open_until = to_micros(now) + self._cooldown_us
        self._epoch += 1
        self.consecutive_failures = 0
        self._trips += 1

    def record_success(self, ticket: Ticket, now: float) -> None:
        """A success: resets the count when closed; a current probe's success closes."""
        self._successes += 1
        if not self._end(ticket, now):
            return
        if self._state == "half-open" and ticket.probe:
            self._state = "closed"
            self._epoch += 1
        self.consecutive_failures = 0

    def record_failure(self, ticket: Ticket, now: float) -> bool:
        """A failure: counts when closed, re-opens on a current probe. True if it tripped."""
        self._failures += 1
        if not self._end(ticket, now):
            return False
        if self._state == "half-open" and ticket.probe:
            self._open(now)
            return True
        if self._state == "closed":
            self.consecutive_failures += 1
            if self.consecutive_failures >= self._threshold:
                self._open(now)
                return True
        return False

    def record_ignored(self, ticket: Ticket, now: float) -> None:
        """The call ended with no health signal (cancelled, 429): just free a probe slot."""
        self._ignored += 1
        self._end(ticket, now)

    def stats(self) -> BreakerStats:
        """Counters, state as of the last call."""
        return BreakerStats(
            self._state,
            self.consecutive_failures,
            self.open_until,
            self._trips,
            self._successes,
            self._failures,
            self._ignored,
            self._probes_in_flight,
        )

    def __repr__(self) -> str:
        return (
            f"<SafeBreaker {self._state} failures={self.consecutive_failures}/{self._threshold}"
            f" probes={self._probes_in_flight}/{self._probes} open_until={self.open_until}"
            f" trips={self._trips}>"
        )


BREAKERS: dict[str, type[FaithfulBreaker] | type[SafeBreaker]] = {
    "faithful": FaithfulBreaker,
    "safe": SafeBreaker,
}
"""Breaker kinds by name (policies choose one)."""
