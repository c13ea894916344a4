"""The invariant checker the engine runs after every simulation event.

It keeps its own ledger of what the engine saw (each admission's reserved estimate, each
settlement's charge) and compares it with the gateway's budget and keys:

* I1 ``used == sum(charged) + sum(open estimates)`` (the budget agrees with the ledger);
* I2 while no settlement has charged more than its estimate, ``used <= limit``;
* I3 always ``used <= limit + underestimated``;
* I4 every admission ends exactly once, and at the end nothing is open;
* I5 a budget refusal happens only when ``used + estimate > limit`` at that moment;
* K1 a key's in-flight tokens stay within ``[0, tpm]``;
* K2 a key's RPM window never holds more than ``rpm`` admissions.

A violation raises `InvariantViolation` naming the event number, the simulated time and the
state. ``used > limit`` that I2 does not forbid (some actual cost exceeded its estimate: the
faithful policy's documented overshoot, reference section 5) is not a violation: it is
recorded once as a finding, which the report shows. So are the faithful policy's stream
quirks (reference 8.1, 8.2): a stream its client dropped is never settled (`leaked`: its
estimate stays in ``used`` and the reservation stays open, which I4 allows for leaks), and a
cancel after ``Completed`` settles twice (`resettled`: I1 then holds modulo 2^64 with the
second settles' drift, and I2/I3 no longer apply to the corrupted counter).

Cost: the budget checks read two counters per event (the full `BudgetStats` snapshot is taken
only when ``used > limit`` or to word a failure); the key checks run after events in which the
engine called the gateway (`touched`), over the keys it named (a key's in-flight tokens and
RPM window change only when the gateway admits or finishes on that key, so the others cannot
have broken K1 or K2 since they were last checked), reading them directly; ``touched(None)``
(a change the engine cannot pin on one key) checks every key. Memory is bounded by the
admissions in flight: request ids are handed out in arrival order, so "admitted twice" needs
only the highest id admitted so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.errors import InvariantViolation
from omnillm_sim.money import format_usd

__all__ = ["InvariantChecker"]

_U64 = 2**64


class InvariantChecker:
    """Checks budget and key invariants; fed by the engine, called after every event."""

    def __init__(
        self,
        budget: BudgetTracker,
        key_limits: dict[str, tuple[int, int]],
        keys: Sequence[Any] = (),
    ) -> None:
        """``keys`` are the gateway pool's key states (``label``, ``cap.inflight``,
        ``rpm.count(now)``, ``status(now)``) that `check` reads after a `touched` event."""
        self._budget = budget
        self._limits = key_limits  # label -> (rpm, tpm)
        self._keys = tuple(keys)
        self._touched = False
        self._touched_keys: set[int] = set()
        self._everything = False
        self._open: dict[int, int] = {}
        self._charged = 0
        self._open_sum = 0
        self._underestimated = 0
        self._last_admitted: int | None = None
        self.findings: list[str] = []
        self._overshoot_seen = False
        self._spurious: list[str] = []
        self._leaked: dict[int, int] = {}
        self._drift = 0
        self._resettles = 0
        self._wrap_seen = False
        self._wrapped_refusals = 0
        self._first_wrapped_refusal = ""

    # -- ledger (called by the engine) ---------------------------------------------------

    def touched(self, key: int | None) -> None:
        """The engine called the gateway (about key index ``key``, ``None``: about no one key):
        check that key (``None``: every key) next time."""
        self._touched = True
        if key is None:
            self._everything = True
        else:
            self._touched_keys.add(key)

    def admitted(self, request_id: int, estimate: int) -> None:
        """An admission reserved ``estimate`` micro-dollars.

        Raises:
            InvariantViolation: I4, ``request_id`` was admitted before (ids come in arrival
                order, so an id not above the last admitted one is a second admission).
        """
        last = self._last_admitted
        if request_id in self._open or (last is not None and request_id <= last):
            raise InvariantViolation(
                "I4", f"request {request_id} admitted twice (or out of arrival order)"
            )
        self._last_admitted = request_id
        self._open[request_id] = estimate
        self._open_sum += estimate

    def settled(self, request_id: int, charged: int) -> None:
        """The admission of ``request_id`` ended with ``charged`` micro-dollars.

        Raises:
            InvariantViolation: I4, the admission was not open (ended twice, or never began).
        """
        if request_id not in self._open:
            raise InvariantViolation("I4", f"request {request_id} ended twice or was never open")
        estimate = self._open.pop(request_id)
        self._open_sum -= estimate
        self._charged += charged
        self._underestimated += max(charged - estimate, 0)

    def leaked(self, request_id: int) -> None:
        """The admission of ``request_id`` ended without a settle (faithful: a dropped stream).

        Its estimate stays reserved for good; the first leak is recorded as a finding.

        Raises:
            InvariantViolation: I4, the admission was not open.
        """
        if request_id not in self._open:
            raise InvariantViolation("I4", f"request {request_id} ended twice or was never open")
        estimate = self._leaked[request_id] = self._open.pop(request_id)
        self._open_sum -= estimate
        if len(self._leaked) == 1:
            self.findings.append(
                f"stream of request {request_id} dropped by its client and never settled: its "
                f"estimate {format_usd(self._leaked[request_id])} stays reserved for good "
                "(omnillm 0.1.5, reference 8.2)"
            )

    def resettled(self, request_id: int, delta: int) -> None:
        """The admission of ``request_id`` was settled a second time, moving ``used`` by
        ``delta`` (faithful: a cancel after ``Completed``); the first is recorded as a finding."""
        self._drift += delta
        self._resettles += 1
        if self._resettles == 1:
            self.findings.append(
                f"stream of request {request_id} settled twice (a cancel after Completed): "
                f"used moved by {delta} µ$ a second time (omnillm 0.1.5, reference 8.1)"
            )

    def refused(self, request_id: int, estimate: int | None, now: float | None = None) -> None:
        """The gateway refused ``request_id`` for BUDGET; remember it if that was spurious (I5).

        Called right after the refusal, while the budget is as the gateway saw it; the next
        `check` raises with the event number.
        """
        stats = self._budget.stats()
        if self._resettles and stats.used > stats.limit:
            self._wrapped_refusals += 1
            if not self._first_wrapped_refusal:
                when = "" if now is None else f" at t={now:.3f}s"
                self._first_wrapped_refusal = f"request {request_id}{when}"
        after = stats.used + (estimate or 0)
        if self._resettles:  # omnillm's u64 counter: `used + est` wraps too
            after %= _U64
        if estimate is None or after <= stats.limit:
            self._spurious.append(
                f"request {request_id} refused for BUDGET with estimate {estimate} µ$ although "
                f"used {stats.used} + estimate <= limit {stats.limit}"
            )

    # -- checks ------------------------------------------------------------------------------

    def _fail(self, invariant: str, event: int, now: float, detail: str, keys: Any = None) -> None:
        stats = self._budget.stats()
        state = (
            f"used={stats.used} limit={stats.limit} spent={stats.spent} "
            f"open={stats.open_count}/{stats.open_reserved} µ$; ledger charged={self._charged} "
            f"open={len(self._open)}/{self._open_sum} µ$"
        )
        if keys is not None:
            state += f"; keys={keys!r}"
        raise InvariantViolation(invariant, f"event #{event} at t={now:.6f}s: {detail} ({state})")

    def check(self, event: int, now: float, key_status: list[Any] | None = None) -> None:
        """Check every invariant against the current state.

        The key invariants are checked over ``key_status`` (a gateway's ``key_status(now)``)
        when given, and over the pool's keys after a `touched` event.

        Raises:
            InvariantViolation: with the event number, time and state.
        """
        if self._spurious:
            self._fail("I5", event, now, self._spurious[0])
        budget = self._budget
        used = budget.used
        ledger = self._charged + self._open_sum
        if self._leaked or self._resettles:
            ledger = (ledger + sum(self._leaked.values()) + self._drift) % _U64
        if used != ledger:
            self._fail("I1", event, now, f"used {used} != charged + open {ledger}")
        if self._resettles:
            if used > budget.limit and not self._wrap_seen:
                self._wrap_seen = True
                self.findings.append(
                    f"budget counter past its limit after a double settle at event #{event} "
                    f"t={now:.3f}s: used {format_usd(used)} (a wrapped u64 when about "
                    "$18446744073709): while it stays there every reservation smaller than the "
                    "deficit is refused (a larger one wraps around and gets in)"
                )
        elif used > budget.limit:
            self._over_limit(event, now)
        if key_status is not None:
            self._check_statuses(event, now, key_status)
        if self._touched:
            self._touched = False
            limits, keys = self._limits, self._keys
            if self._everything:
                self._everything = False
                self._touched_keys.clear()
                suspects: Any = keys
            else:
                suspects = [keys[i] for i in self._touched_keys if i < len(keys)]
                self._touched_keys.clear()
            for key in suspects:
                rpm, tpm = limits[key.label]
                if not 0 <= key.cap.inflight <= tpm or key.rpm.count(now) > rpm:
                    self._check_statuses(event, now, [k.status(now) for k in keys])

    def _over_limit(self, event: int, now: float) -> None:
        stats = self._budget.stats()
        if stats.used > stats.limit:
            if self._underestimated == 0:
                self._fail("I2", event, now, "used above limit although no actual cost "
                           "exceeded its estimate")
            if stats.used > stats.limit + stats.underestimated:
                self._fail("I3", event, now, "used above limit + underestimated")
            if not self._overshoot_seen:
                self._overshoot_seen = True
                self.findings.append(
                    f"budget overshoot from event #{event} at t={now:.3f}s: used "
                    f"{format_usd(stats.used)} > limit {format_usd(stats.limit)}, allowed because "
                    f"actual costs exceeded their estimates by {format_usd(self._underestimated)} "
                    "(the faithful policy's estimate is not an upper bound; I3 holds)"
                )

    def _check_statuses(self, event: int, now: float, key_status: list[Any]) -> None:
        for status in key_status:
            rpm, tpm = self._limits[status.label]
            if not 0 <= status.inflight_tokens <= tpm:
                self._fail("K1", event, now, f"key {status.label} holds "
                           f"{status.inflight_tokens} in-flight tokens (cap {tpm})", key_status)
            if status.rpm_used > rpm:
                self._fail("K2", event, now, f"key {status.label} admitted "
                           f"{status.rpm_used} requests in 60 s (rpm {rpm})", key_status)

    def at_end(self, event: int, now: float) -> None:
        """Quiescence: every admission ended (I4) and the budget holds nothing open.

        Raises:
            InvariantViolation: I4.
        """
        stats = self._budget.stats()
        if self._open or stats.open_count != len(self._leaked):
            self._fail("I4", event, now, f"{len(self._open)} admissions never ended; the budget "
                       f"still has {stats.open_count} open reservations "
                       f"({len(self._leaked)} leaked by dropped streams)")
        if self._wrapped_refusals:
            self.findings.append(
                f"{self._wrapped_refusals} requests refused for BUDGET by a counter corrupted by "
                f"double settles, the first {self._first_wrapped_refusal}"
            )
        if self._leaked:
            self.findings.append(
                f"{len(self._leaked)} dropped streams never settled: "
                f"{format_usd(sum(self._leaked.values()))} stays reserved for good"
            )
