"""Property-check any budget tracker with the seed API against invariants I1-I5.

`check_tracker(factory)` runs `SeedTrackerMachine`, a Hypothesis state machine, against
trackers built by ``factory(limit_usd)`` that offer omnillm's seed API:
``try_reserve(est) -> bool``, ``settle(est, actual)``, ``used_usd()`` and ``limit_usd()``
(amounts in integer micro-dollars, readings in USD floats).

Sequential rules reserve and settle against a model of the tracker. The ``concurrent_*``
rules run two operations at once in real threads, interleaved line by line by a `Stepper`;
each explores every schedule with one preemption on fresh trackers, so a check-then-act
tracker — correct when called sequentially — fails every time, and Hypothesis shrinks the
amounts and the steps before it to the smallest case. The concurrent results must equal
those of *some* sequential order (linearizability of the pair). The search is derandomized
and ignores the constants Hypothesis would harvest from the caller's imported modules, so a
failure is the same on every run. Invariants after every step (DESIGN.md section 4):

* I1 ``used`` equals settled actuals plus open estimates (the model's ``used``);
* I2 with no actual above its estimate, ``used <= limit``;
* I3 always ``used <= limit + underestimated``;
* I4 at the end every reservation is settled and ``used`` equals the settled actuals;
* I5 ``try_reserve`` refuses only when ``used + est > limit``.

Example::

    from pytest_omnillm import check_tracker
    from omnillm_sim import BudgetTracker

    def test_my_tracker():
        check_tracker(BudgetTracker)          # or any factory: lambda usd: MyTracker(usd)
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from omnillm_sim.errors import InvariantViolation
from omnillm_sim.money import usd_to_micro
from omnillm_sim.verify.machines import amounts
from omnillm_sim.verify.stepper import Stepper, code_objects_of

__all__ = ["SeedTrackerMachine", "check_tracker"]

limits = st.integers(min_value=0, max_value=3_000_000)
shares = st.one_of(st.just(100), st.integers(min_value=0, max_value=150))
"""An estimate as a percentage of the room left under the limit: races only matter when two
requests fit alone but not together, so many draws land near that boundary."""
actual_shares = st.integers(min_value=0, max_value=130)
"""A settled actual as a percentage of its estimate (above 100: an underestimate)."""


def _micros(reading: object, what: str) -> int:
    try:
        return usd_to_micro(reading, name=what)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvariantViolation("I1", f"{what} returned {reading!r}: {exc}") from None


class SeedTrackerMachine(RuleBasedStateMachine):
    """A user tracker (built by ``factory``) against a sequential model of the seed API."""

    factory: Callable[[float], Any]
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.tracker: Any = None
        self.limit = 0
        self.open: list[int] = []  # estimates of open reservations (a multiset)
        self.spent = 0
        self.underestimated = 0
        self._ids = itertools.count()

    # -- model ------------------------------------------------------------------------------

    def model_used(self) -> int:
        return self.spent + sum(self.open)

    def used(self) -> int:
        return _micros(self.tracker.used_usd(), "used_usd()")

    def _settle_model(self, est: int, actual: int) -> None:
        self.open.remove(est)
        self.spent += actual
        self.underestimated += max(actual - est, 0)

    # -- rules --------------------------------------------------------------------------------

    @initialize(limit=limits)
    def create(self, limit: int) -> None:
        with Stepper.locks():
            self.tracker = type(self).factory(limit / 1_000_000)
        self.limit = _micros(self.tracker.limit_usd(), "limit_usd()")
        if self.limit != limit:
            raise InvariantViolation(
                "I1", f"factory({limit / 1_000_000!r}) made a tracker with limit {self.limit} µ$"
            )

    @rule(target=reservations, est=amounts)
    def try_reserve(self, est: int) -> object:
        fits = self.model_used() + est <= self.limit
        got = self.tracker.try_reserve(est)
        if got and not fits:
            raise InvariantViolation(
                "I2",
                f"try_reserve({est}) admitted with used={self.model_used()}, limit={self.limit}",
            )
        if fits and not got:
            raise InvariantViolation(
                "I5",
                f"try_reserve({est}) refused with used={self.model_used()}, limit={self.limit}",
            )
        if not got:
            return multiple()
        self.open.append(est)
        return est

    @rule(target=reservations, percent=shares)
    def try_reserve_share(self, percent: int) -> object:
        """``try_reserve`` of ``percent`` of the room left."""
        return self.try_reserve(self._share(percent))

    @rule(est=consumes(reservations), actual=amounts)
    def settle(self, est: int, actual: int) -> None:
        self.tracker.settle(est, actual)
        self._settle_model(est, actual)

    @rule(est=consumes(reservations), actual_percent=actual_shares)
    def settle_share(self, est: int, actual_percent: int) -> None:
        """``settle`` at ``actual_percent`` of the estimate."""
        actual = est * actual_percent // 100
        self.tracker.settle(est, actual)
        self._settle_model(est, actual)

    def _share(self, percent: int) -> int:
        room = max(self.limit - self.model_used(), 0)
        return room * percent // 100

    # -- concurrency --------------------------------------------------------------------
    #
    # A race needs the right interleaving, and random schedules rarely hit it. So each
    # concurrent rule explores every schedule with one preemption — thread F runs k steps,
    # the other runs to its end, F finishes — for both F and every k, each on a fresh
    # tracker brought to the model's state. Preemptions while F holds a lock the stepper
    # made are skipped (the other thread would run only until it blocks on that lock; a
    # lock-free read of lock-guarded state is the one race this can miss). The rule's
    # arguments are the amounts; the failing interleaving is printed in the error.

    def _fresh(self) -> Any:
        with Stepper.locks():
            tracker = type(self).factory(self.limit / 1_000_000)
        used = self.model_used()
        if used:  # bring it to the model's used: reserve nothing, settle at `used`
            if not tracker.try_reserve(0):
                raise InvariantViolation("I5", "try_reserve(0) refused on a fresh tracker")
            tracker.settle(0, used)
        return tracker

    def _race(
        self,
        setup: Callable[[Any], None],
        operations: Callable[[Any], list[Callable[[], Any]]],
        verdict: Callable[[Any, list[Any], str], None],
    ) -> None:
        codes = code_objects_of(type(self.tracker))

        def run(choices: list[int]) -> Stepper:
            tracker = self._fresh()
            setup(tracker)
            stepper = Stepper(codes, choices)
            outcomes = stepper.run(operations(tracker))
            for outcome in outcomes:
                if outcome.error is not None:
                    raise outcome.error
            verdict(tracker, [o.value for o in outcomes], stepper.describe())
            return stepper

        for first in (0, 1):
            alone = run([first] * 10_000)
            # Whether `first` held a lock (made under Stepper.locks) before each of its steps.
            holding = [
                h for (t, _), h in zip(alone.steps, alone.holding, strict=True) if t == first
            ]
            for k in range(1, len(holding)):
                if not holding[k]:  # preempting inside a lock: the other thread only blocks
                    run([first] * k + [1 - first] * 10_000)

    @rule(target=reservations, a_percent=shares, b_percent=shares)
    def concurrent_reserves(self, a_percent: int, b_percent: int) -> object:
        """Two ``try_reserve`` calls at once (a and b percent of the room left)."""
        a, b = self._share(a_percent), self._share(b_percent)
        before = self.model_used()
        orders = []
        for pair in ((0, 1), (1, 0)):
            admitted, total = [False, False], before
            for i in pair:
                if total + (a, b)[i] <= self.limit:
                    admitted[i] = True
                    total += (a, b)[i]
            orders.append((tuple(admitted), total))

        def verdict(tracker: Any, got: list[Any], interleaving: str) -> None:
            used = _micros(tracker.used_usd(), "used_usd()")
            if not any(tuple(got) == adm and used == total for adm, total in orders):
                over = used > self.limit and self.underestimated == 0
                raise InvariantViolation(
                    "I2" if over else "I5",
                    f"concurrent try_reserve({a}) and try_reserve({b}) from used={before}, "
                    f"limit={self.limit} returned {tuple(got)} and left used={used}; no "
                    f"sequential order does that (interleaving {interleaving})",
                )

        self._race(
            lambda t: None,
            lambda t: [lambda: t.try_reserve(a), lambda: t.try_reserve(b)],
            verdict,
        )
        # The state machine goes on from the sequential outcome on its own tracker.
        kept = [r for r in (self.try_reserve(a), self.try_reserve(b)) if isinstance(r, int)]
        return multiple(*kept)

    @rule(est_percent=shares, actual_percent=actual_shares, other_percent=shares)
    def concurrent_settle_and_reserve(
        self, est_percent: int, actual_percent: int, other_percent: int
    ) -> None:
        """Reserve ``est``, then run its ``settle`` (at actual_percent of est) and another
        ``try_reserve`` (other_percent of the room left) at once."""
        est = self._share(min(est_percent, 100))
        if self.model_used() + est > self.limit:  # over the limit already: nothing to race
            return
        before = self.model_used() + est
        actual = est * actual_percent // 100
        other = max(self.limit - before, 0) * other_percent // 100
        after_settle = before - est + actual
        possible = set()
        for used_at_reserve in (before, after_settle):
            fits = used_at_reserve + other <= self.limit
            possible.add((fits, after_settle + (other if fits else 0)))

        def setup(tracker: Any) -> None:
            if not tracker.try_reserve(est):
                raise InvariantViolation("I5", f"try_reserve({est}) refused though it fits")

        def verdict(tracker: Any, got: list[Any], interleaving: str) -> None:
            used = _micros(tracker.used_usd(), "used_usd()")
            if (got[1], used) not in possible:
                raise InvariantViolation(
                    "I1",
                    f"concurrent settle({est}, {actual}) and try_reserve({other}) from "
                    f"used={before}, limit={self.limit} returned {got[1]} and left "
                    f"used={used}; no sequential order does that (interleaving {interleaving})",
                )

        self._race(
            setup,
            lambda t: [lambda: t.settle(est, actual), lambda: t.try_reserve(other)],
            verdict,
        )
        # On the machine's own tracker: the same three calls, sequentially.
        self.try_reserve(est)
        self.tracker.settle(est, actual)
        self._settle_model(est, actual)
        reserved = self.try_reserve(other)
        if isinstance(reserved, int):  # not kept in the bundle: settle it at once
            self.tracker.settle(reserved, reserved)
            self._settle_model(reserved, reserved)

    @invariant()
    def budget_invariants(self) -> None:
        if self.tracker is None:
            return
        used = self.used()
        if used != self.model_used():
            raise InvariantViolation(
                "I1",
                f"used={used} but settled {self.spent} + open {sum(self.open)} = "
                f"{self.model_used()}",
            )
        if self.underestimated == 0 and used > self.limit:
            raise InvariantViolation("I2", f"used={used} > limit={self.limit}")
        if used > self.limit + self.underestimated:
            raise InvariantViolation(
                "I3", f"used={used} > limit={self.limit} + underestimated={self.underestimated}"
            )

    def teardown(self) -> None:
        if self.tracker is None or self.used() != self.model_used():
            return  # an earlier step failed; Hypothesis is reporting that failure
        for est in list(self.open):
            self.tracker.settle(est, est)
            self._settle_model(est, est)
        used = self.used()
        if used != self.spent:
            raise InvariantViolation(
                "I4", f"after settling every reservation used={used} != settled {self.spent}"
            )


@contextlib.contextmanager
def _without_local_constants() -> Iterator[None]:
    """Hide the constants Hypothesis harvests from loaded modules' source while we run.

    Hypothesis biases generation with literals found in already-imported user modules, so
    the same derandomized search would explore differently depending on what the caller's
    process happened to import. Best effort: without the (internal) hook nothing changes.
    """
    try:
        p: Any = importlib.import_module("hypothesis.internal.conjecture.providers")
        empty = p.Constants(
            integers=p.SortedSet(),
            floats=p.SortedSet(key=p.float_to_int),
            bytes=p.SortedSet(),
            strings=p.SortedSet(),
        )
        original = p._get_local_constants
        cache = p.CONSTANTS_CACHE.cache
    except (ImportError, AttributeError, TypeError):
        yield
        return
    p._get_local_constants = lambda: empty
    cache.clear()
    try:
        yield
    finally:
        p._get_local_constants = original
        cache.clear()


def check_tracker(
    factory: Callable[[float], Any],
    *,
    max_examples: int = 100,
    stateful_step_count: int = 10,
    derandomize: bool = True,
) -> None:
    """Property-check trackers made by ``factory(limit_usd)`` against invariants I1-I5.

    Deterministic by default (``derandomize=True``, no example database): a failure shows the
    same shrunk counter-example, with its thread interleaving, on every run.

    Raises:
        InvariantViolation: (an ``AssertionError``) the first invariant that failed; Hypothesis
            adds the shrunk sequence of steps to its notes.
        Exception: whatever the tracker raised.
    """
    machine = type(
        "CheckTrackerMachine",
        (SeedTrackerMachine,),
        {"factory": staticmethod(factory)},
    )
    with _without_local_constants():
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=max_examples,
                stateful_step_count=stateful_step_count,
                derandomize=derandomize,
                database=None,
                report_multiple_bugs=False,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
            ),
        )
