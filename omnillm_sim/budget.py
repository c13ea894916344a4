"""The reference budget tracker: integer micro-dollars, reserve before a call, settle after it.

Two APIs on one object, sharing one lock and one set of counters:

* the seed-parity API of omnillm's ``BudgetTracker`` — ``try_reserve(est) -> bool`` and
  ``settle(est, actual)`` — with the same admission rule (``used + est <= limit``) and the same
  unguarded settle (an actual above its estimate can push ``used`` past ``limit``);
* a handle API — ``reserve(est) -> Reservation`` that raises `BudgetExceeded`, and
  ``Reservation.settle(actual)`` / ``Reservation.release()`` exactly once.

Unlike the seed, a seed-API settle larger than what is still open (the seed's double-settle bug,
which wraps its ``u64`` counter) raises `ReservationStateError` instead of corrupting ``used``;
the handle API detects every second settle or release of the same reservation.

Invariants (DESIGN.md section 4), checked by the Hypothesis state machine in
``omnillm_sim.verify.machines`` and by the simulator after every event:

* I1 ``used == spent + open_reserved`` (settled actuals plus open estimates);
* I2 if every actual <= its estimate, ``used <= limit`` at every moment;
* I3 always ``used <= limit + underestimated``;
* I4 every reservation ends exactly once; at quiescence ``open_count == 0``;
* I5 a reserve is refused only if ``used + est > limit`` at that moment.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from omnillm_sim.errors import (
    BudgetExceeded,
    InvalidValueError,
    InvariantViolation,
    ReservationStateError,
)
from omnillm_sim.money import U64_MAX, MicroDollar, UsdLike, micro_to_usd, usd_to_micro

__all__ = [
    "BudgetStats",
    "BudgetTracker",
    "Reservation",
    "ReservationState",
    "SeedBudgetTracker",
    "check_budget_invariants",
]

ReservationState = Literal["open", "settled", "released"]


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A consistent snapshot of a tracker's counters; every amount is in micro-dollars.

    ``overshoot`` is the peak of ``max(used - limit, 0)``; ``underestimated`` is the sum of
    ``max(actual - estimate, 0)`` over settled reservations, the bound of invariant I3.
    """

    limit: MicroDollar
    used: MicroDollar
    spent: MicroDollar
    open_reserved: MicroDollar
    open_count: int
    peak_used: MicroDollar
    overshoot: MicroDollar
    admitted: int
    rejected: int
    settled: int
    released: int
    underestimated: MicroDollar

    @property
    def remaining(self) -> MicroDollar:
        """``limit - used``, saturating at 0."""
        return max(self.limit - self.used, 0)


def _check_amount(name: str, value: object) -> int:
    # Inlined rather than money.check_micros: this runs twice per reserve/settle pair.
    if type(value) is not int or value < 0:
        raise InvalidValueError(name, value, "must be an int of micro-dollars >= 0")
    return value


class Reservation:
    """A handle on money reserved from a `BudgetTracker`; it ends exactly once.

    Use ``settle(actual)`` when the call returned its real cost, ``release()`` when the call
    failed and cost nothing. As a context manager: an exception inside releases; leaving
    normally without having settled settles at the estimate (the conservative charge).
    """

    __slots__ = ("_actual", "_estimate", "_state", "_tracker", "id", "label")

    def __init__(self, tracker: BudgetTracker, estimate: MicroDollar, rid: int, label: str) -> None:
        self._tracker = tracker
        self._estimate = estimate
        self._state: ReservationState = "open"
        self._actual: MicroDollar | None = None
        self.id = rid
        self.label = label

    @property
    def estimate(self) -> MicroDollar:
        """The reserved amount, in micro-dollars."""
        return self._estimate

    @property
    def state(self) -> ReservationState:
        """``"open"``, ``"settled"`` or ``"released"``."""
        return self._state

    @property
    def actual(self) -> MicroDollar | None:
        """The settled cost (0 after release), or ``None`` while open."""
        return self._actual

    def settle(self, actual: MicroDollar) -> None:
        """Replace the estimate by the real cost: ``used += actual - estimate``.

        Raises:
            InvalidValueError: ``actual`` is not an int >= 0.
            ReservationStateError: the reservation already ended.
        """
        _check_amount("actual", actual)
        self._tracker._end(self, actual, released=False)

    def release(self) -> None:
        """Refund the whole estimate (the call failed and cost nothing).

        Raises:
            ReservationStateError: the reservation already ended.
        """
        self._tracker._end(self, 0, released=True)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != "open":
            return
        if exc_type is None:
            self.settle(self._estimate)
        else:
            self.release()

    def __repr__(self) -> str:
        label = f" {self.label!r}" if self.label else ""
        return (
            f"<Reservation #{self.id}{label} estimate={self._estimate} state={self._state}"
            f" actual={self._actual}>"
        )


class BudgetTracker:
    """A thread-safe budget of integer micro-dollars with two-phase reserve/settle.

    ``BudgetTracker(limit_usd)`` converts the limit exactly (`usd_to_micro`);
    `BudgetTracker.from_micros` takes micro-dollars and `BudgetTracker.unlimited` has no limit
    (the seed's ``u64::MAX``). One lock guards all state and nothing blocks while holding it.

    >>> t = BudgetTracker(50.0)
    >>> t.try_reserve(1_000_000)
    True
    >>> t.settle(1_000_000, 500_000)
    >>> t.used_usd()
    0.5

    Raises:
        InvalidValueError: a limit that is NaN, infinite, negative, a bool or unparsable.
    """

    __slots__ = (
        "_ids",
        "_limit",
        "_lock",
        "_open_count",
        "_overshoot",
        "_peak_used",
        "_rejected",
        "_released",
        "_settled",
        "_spent",
        "_underestimated",
        "_used",
        "name",
    )

    def __init__(self, limit_usd: UsdLike, *, name: str = "budget") -> None:
        self._init(usd_to_micro(limit_usd, name="limit_usd"), name)

    @classmethod
    def from_micros(cls, limit: MicroDollar, *, name: str = "budget") -> BudgetTracker:
        """A tracker whose limit is given in micro-dollars."""
        tracker = cls.__new__(cls)
        tracker._init(_check_amount("limit", limit), name)
        return tracker

    @classmethod
    def unlimited(cls, *, name: str = "budget") -> BudgetTracker:
        """A tracker that only records spend: its limit is the seed's ``u64::MAX``."""
        return cls.from_micros(U64_MAX, name=name)

    def _init(self, limit: MicroDollar, name: str) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self.name = name
        self._used = 0
        self._spent = 0
        self._open_count = 0
        self._peak_used = 0
        self._overshoot = 0
        self._rejected = 0
        self._settled = 0
        self._released = 0
        self._underestimated = 0
        self._ids = itertools.count(1)

    # -- read-only state -------------------------------------------------------------------

    @property
    def limit(self) -> MicroDollar:
        """The limit in micro-dollars."""
        return self._limit

    @property
    def used(self) -> MicroDollar:
        """Settled costs plus open reservations, in micro-dollars."""
        return self._used

    @property
    def spent(self) -> MicroDollar:
        """Settled (actual) costs, in micro-dollars; ``used - spent`` is what is reserved."""
        return self._spent

    @property
    def is_unlimited(self) -> bool:
        """True for a tracker made by `unlimited` (or with a ``u64::MAX`` limit)."""
        return self._limit >= U64_MAX

    def remaining(self) -> MicroDollar:
        """``limit - used`` in micro-dollars, saturating at 0."""
        return max(self._limit - self._used, 0)

    def used_usd(self) -> float:
        """``used`` in USD (a float, for display)."""
        return micro_to_usd(self._used)

    def limit_usd(self) -> float:
        """The limit in USD (a float, for display)."""
        return micro_to_usd(self._limit)

    def remaining_usd(self) -> float:
        """The remaining budget in USD, saturating at 0 (like the seed)."""
        return micro_to_usd(self.remaining())

    def stats(self) -> BudgetStats:
        """A consistent snapshot of every counter, taken under the lock."""
        with self._lock:
            return BudgetStats(
                limit=self._limit,
                used=self._used,
                spent=self._spent,
                open_reserved=self._used - self._spent,
                open_count=self._open_count,
                peak_used=self._peak_used,
                overshoot=self._overshoot,
                admitted=self._settled + self._released + self._open_count,
                rejected=self._rejected,
                settled=self._settled,
                released=self._released,
                underestimated=self._underestimated,
            )

    # -- seed-parity API -------------------------------------------------------------------

    def try_reserve(self, estimated: MicroDollar) -> bool:
        """Reserve ``estimated`` micro-dollars iff ``used + estimated <= limit``.

        Returns ``False`` (and counts a rejection, nothing else) when it would not fit.

        Raises:
            InvalidValueError: ``estimated`` is not an int >= 0.
        """
        if type(estimated) is not int or estimated < 0:
            _check_amount("estimated", estimated)
        # Hot path: the admission of _admit, inlined (this pair is benchmarked against a bare lock).
        with self._lock:
            used = self._used + estimated
            if used > self._limit:
                self._rejected += 1
                return False
            self._used = used
            self._open_count += 1
            if used > self._peak_used:
                self._peak_used = used
            return True

    def settle(self, estimated: MicroDollar, actual: MicroDollar) -> None:
        """End a `try_reserve` reservation: ``used += actual - estimated``, with no limit guard.

        Pass ``actual = 0`` for a full refund.

        Raises:
            InvalidValueError: an amount is not an int >= 0.
            ReservationStateError: nothing is open, or less than ``estimated`` is (for example
                a second settle of the only open reservation). The seed API has no handles, so
                this is the strongest check it allows; use `reserve` for exactly-once.
        """
        if type(estimated) is not int or estimated < 0:
            _check_amount("estimated", estimated)
        if type(actual) is not int or actual < 0:
            _check_amount("actual", actual)
        with self._lock:
            # The seed API has no handles: a settle must at least fit in what is still open,
            # so a double settle can never drive `used` below the settled costs (the seed wraps).
            used = self._used
            spent = self._spent
            if used - spent < estimated or self._open_count == 0:
                raise ReservationStateError(
                    f"settle(estimated={estimated}, actual={actual}): {self.name} has only "
                    f"{used - spent} µ$ in {self._open_count} open reservations "
                    "(already settled?)"
                )
            if actual > estimated:
                self._finish(estimated, actual, released=False)
            else:  # the common case, inlined
                self._used = used + actual - estimated
                self._spent = spent + actual
                self._open_count -= 1
                self._settled += 1

    # -- handle API ------------------------------------------------------------------------

    def reserve(self, estimated: MicroDollar, *, label: str = "") -> Reservation:
        """Reserve ``estimated`` micro-dollars and return the handle that must end it.

        Raises:
            InvalidValueError: ``estimated`` is not an int >= 0.
            BudgetExceeded: ``used + estimated > limit``; the tracker is unchanged apart from
                its ``rejected`` counter.
        """
        _check_amount("estimated", estimated)
        with self._lock:
            if not self._admit(estimated):
                available = max(self._limit - self._used, 0)
                raise BudgetExceeded(estimated, available, self._limit, what=self.name)
            return Reservation(self, estimated, next(self._ids), label)

    # -- internals (called with the lock held, except _end) --------------------------------

    def _admit(self, estimated: MicroDollar) -> bool:
        used = self._used + estimated
        if used > self._limit:
            self._rejected += 1
            return False
        self._used = used
        self._open_count += 1
        if used > self._peak_used:
            self._peak_used = used
        return True

    def _finish(self, estimated: MicroDollar, actual: MicroDollar, *, released: bool) -> None:
        used = self._used + actual - estimated
        self._used = used
        self._spent += actual
        self._open_count -= 1
        if released:
            self._released += 1
        else:
            self._settled += 1
            if actual > estimated:
                self._underestimated += actual - estimated
                if used > self._peak_used:
                    self._peak_used = used
                if used - self._limit > self._overshoot:
                    self._overshoot = used - self._limit

    def _end(self, reservation: Reservation, actual: MicroDollar, *, released: bool) -> None:
        with self._lock:
            if reservation._state != "open":
                verb = "release" if released else "settle"
                raise ReservationStateError(
                    f"cannot {verb} {reservation!r}: it already ended ({reservation._state})"
                )
            reservation._state = "released" if released else "settled"
            reservation._actual = actual
            self._finish(reservation._estimate, actual, released=released)

    def __repr__(self) -> str:
        limit = "unlimited" if self.is_unlimited else str(self._limit)
        return (
            f"<BudgetTracker {self.name!r} limit={limit} used={self._used}"
            f" open={self._open_count}/{self._used - self._spent}>"
        )


_U64 = 2**64


class SeedBudgetTracker(BudgetTracker):
    """omnillm's ``BudgetTracker`` to the bit: an ``AtomicU64`` that wraps (release build).

    For the faithful policy's stream quirks (reference 8.1): ``try_reserve`` admits iff the
    *wrapping* sum ``used + est`` is ``<= limit``; `settle` is the seed's unguarded
    ``fetch_add``/``fetch_sub``, and `settle_again` is omnillm's second settle of one stream,
    which the reference tracker refuses. A second refund larger than ``used`` wraps ``used`` to
    about 2^64 µ$ (1.8e13 USD): from then on every reservation smaller than the deficit fails,
    ``0`` included (a larger one wraps around again and is admitted, as ``cur + est`` does in
    a release build; a debug build panics instead).

    ``used`` is the ``u64`` counter; the counters of `stats` (spent, open reservations) are
    kept exactly, and ``drift`` sums the second settles' ``actual - estimate``, so
    ``used == (spent + open_reserved + drift) mod 2**64`` always holds. The handle API is not
    offered: omnillm has none.
    """

    __slots__ = ("_drift", "_resettles")

    def _init(self, limit: MicroDollar, name: str) -> None:
        super()._init(limit, name)
        self._drift = 0
        self._resettles = 0

    @property
    def used(self) -> MicroDollar:
        """The seed's ``u64`` counter, in micro-dollars."""
        return self._used % _U64

    @property
    def drift(self) -> int:
        """Sum of ``actual - estimate`` over second settles (negative: refunded twice)."""
        return self._drift

    @property
    def resettles(self) -> int:
        """How many second settles happened."""
        return self._resettles

    @property
    def wrapped(self) -> bool:
        """True while the counter sits below zero, i.e. wrapped to near 2^64."""
        return self._used < 0

    def remaining(self) -> MicroDollar:
        """``limit.saturating_sub(used)`` on the ``u64`` counter."""
        return max(self._limit - self._used % _U64, 0)

    def used_usd(self) -> float:
        """``used`` in USD (about 1.8e13 after a wrap)."""
        return micro_to_usd(self._used % _U64)

    def stats(self) -> BudgetStats:
        """Counters; ``used`` is the ``u64`` counter, ``open_reserved`` the open estimates."""
        with self._lock:
            return BudgetStats(
                limit=self._limit,
                used=self._used % _U64,
                spent=self._spent,
                open_reserved=self._used - self._spent - self._drift,
                open_count=self._open_count,
                peak_used=self._peak_used,
                overshoot=self._overshoot,
                admitted=self._settled + self._released + self._open_count,
                rejected=self._rejected,
                settled=self._settled,
                released=self._released,
                underestimated=self._underestimated,
            )

    def _admit(self, estimated: MicroDollar) -> bool:
        if (self._used + estimated) % _U64 > self._limit:  # `cur + estimated` wraps
            self._rejected += 1
            return False
        self._used += estimated
        self._open_count += 1
        self._peak(self._used % _U64)
        return True

    def _peak(self, used: int) -> None:
        if used > self._peak_used:
            self._peak_used = used
        if used - self._limit > self._overshoot:
            self._overshoot = used - self._limit

    def try_reserve(self, estimated: MicroDollar) -> bool:
        """The seed's CAS loop: admit iff ``(used + estimated) mod 2**64 <= limit``."""
        _check_amount("estimated", estimated)
        with self._lock:
            return self._admit(estimated)

    def settle(self, estimated: MicroDollar, actual: MicroDollar) -> None:
        """The seed's settle: ``used += actual - estimated`` (wrapping), never refused."""
        _check_amount("estimated", estimated)
        _check_amount("actual", actual)
        with self._lock:
            self._used += actual - estimated
            self._spent += actual
            self._open_count -= 1
            self._settled += 1
            if actual > estimated:
                self._underestimated += actual - estimated
            self._peak(self._used % _U64)

    def settle_again(self, estimated: MicroDollar, actual: MicroDollar) -> None:
        """omnillm's second settle of a stream already settled: ``used`` moves again."""
        _check_amount("estimated", estimated)
        _check_amount("actual", actual)
        with self._lock:
            self._used += actual - estimated
            self._drift += actual - estimated
            self._resettles += 1
            self._peak(self._used % _U64)

    def reserve(self, estimated: MicroDollar, *, label: str = "") -> Reservation:
        """Not offered: omnillm has no reservation handles.

        Raises:
            TypeError: always.
        """
        raise TypeError("SeedBudgetTracker has the seed API only (try_reserve / settle)")

    def __repr__(self) -> str:
        wrapped = " WRAPPED" if self._used < 0 else ""
        return (
            f"<SeedBudgetTracker {self.name!r} limit={self._limit} used={self._used % _U64}"
            f"{wrapped} open={self._open_count} drift={self._drift}>"
        )


def check_budget_invariants(
    *,
    used: int,
    limit: int,
    spent: int,
    open_reserved: int,
    underestimated: int,
    all_within_estimate: bool,
) -> None:
    """Raise `InvariantViolation` if I1, I2 or I3 fails for these figures (micro-dollars)."""
    if used != spent + open_reserved:
        raise InvariantViolation("I1", f"used={used} != spent={spent} + open={open_reserved}")
    if all_within_estimate and used > limit:
        raise InvariantViolation("I2", f"used={used} > limit={limit} with no underestimate")
    if used > limit + underestimated:
        raise InvariantViolation(
            "I3", f"used={used} > limit={limit} + underestimated={underestimated}"
        )
