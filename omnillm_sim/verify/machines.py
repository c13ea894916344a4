"""Hypothesis state machines that check budget invariants I1-I5 (DESIGN.md section 4).

`TrackerMachine` drives our `BudgetTracker` through both APIs against a reference model:
handles go into a bundle and are consumed exactly once by ``settle``/``release``; seed-API
reservations likewise. Run it in a test module with::

    TestTracker = TrackerMachine.TestCase
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from omnillm_sim.budget import BudgetTracker, Reservation, check_budget_invariants
from omnillm_sim.errors import BudgetExceeded, ReservationStateError

__all__ = ["TrackerMachine", "amounts", "check_budget_invariants"]

amounts = st.integers(min_value=0, max_value=2_000_000)
"""Micro-dollar amounts around a limit of a few dollars, zero included."""


class TrackerMachine(RuleBasedStateMachine):
    """Our `BudgetTracker` against a sequential model of it."""

    handles = Bundle("handles")
    seed_reservations = Bundle("seed_reservations")

    def __init__(self) -> None:
        super().__init__()
        self.limit = 0
        self.tracker: BudgetTracker | None = None
        self.open: dict[int, int] = {}  # model: id -> estimate (handles and seed reservations)
        self.next_id = 0
        self.spent = 0
        self.underestimated = 0
        self.ended: list[Reservation] = []
        self.live: dict[int, Reservation] = {}

    @property
    def t(self) -> BudgetTracker:
        assert self.tracker is not None
        return self.tracker

    @precondition(lambda self: self.tracker is None)
    @rule(limit=st.integers(min_value=0, max_value=5_000_000))
    def create(self, limit: int) -> None:
        self.limit = limit
        self.tracker = BudgetTracker.from_micros(limit)

    def _model_used(self) -> int:
        return self.spent + sum(self.open.values())

    def _admits(self, est: int) -> bool:
        return self._model_used() + est <= self.limit

    @precondition(lambda self: self.tracker is not None)
    @rule(target=handles, est=amounts)
    def reserve(self, est: int) -> object:
        expect = self._admits(est)
        try:
            handle = self.t.reserve(est)
        except BudgetExceeded as exc:
            assert not expect, f"I5: reserve({est}) refused with used={self._model_used()}"
            assert exc.requested == est
            assert exc.available == max(self.limit - self._model_used(), 0)
            return multiple()
        assert expect, f"reserve({est}) admitted but used+est > limit"
        self.open[id(handle)] = est
        self.live[id(handle)] = handle
        return handle

    @precondition(lambda self: self.tracker is not None)
    @rule(target=seed_reservations, est=amounts)
    def try_reserve(self, est: int) -> object:
        expect = self._admits(est)
        got = self.t.try_reserve(est)
        assert got == expect, f"I5: try_reserve({est}) -> {got}, model says {expect}"
        if not got:
            return multiple()
        self.next_id += 1
        key = -self.next_id  # negative keys: never an id() of a live object
        self.open[key] = est
        return (key, est)

    def _end(self, key: int, actual: int) -> None:
        est = self.open.pop(key)
        self.live.pop(key, None)
        self.spent += actual
        self.underestimated += max(actual - est, 0)

    @rule(handle=consumes(handles), actual=amounts)
    def settle(self, handle: Reservation, actual: int) -> None:
        handle.settle(actual)
        self._end(id(handle), actual)
        self.ended.append(handle)

    @rule(handle=consumes(handles))
    def release(self, handle: Reservation) -> None:
        handle.release()
        self._end(id(handle), 0)
        self.ended.append(handle)

    @rule(reservation=consumes(seed_reservations), actual=amounts)
    def seed_settle(self, reservation: tuple[int, int], actual: int) -> None:
        key, est = reservation
        self.t.settle(est, actual)
        self._end(key, actual)

    @precondition(lambda self: bool(self.ended))
    @rule(data=st.data())
    def end_twice_raises(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.ended))
        before = self.t.stats()
        try:
            if data.draw(st.booleans()):
                handle.settle(0)
            else:
                handle.release()
        except ReservationStateError:
            pass
        else:
            raise AssertionError(f"I4: {handle!r} ended twice")
        assert self.t.stats() == before, "a refused second settle changed the tracker"

    @invariant()
    def budget_invariants(self) -> None:
        if self.tracker is None:
            return
        s = self.t.stats()
        assert s.used == self._model_used(), f"used={s.used} model={self._model_used()}"
        assert s.open_count == len(self.open)
        assert s.spent == self.spent and s.open_reserved == sum(self.open.values())
        assert s.underestimated == self.underestimated
        assert s.overshoot >= max(s.used - s.limit, 0)
        check_budget_invariants(
            used=s.used,
            limit=s.limit,
            spent=s.spent,
            open_reserved=s.open_reserved,
            underestimated=s.underestimated,
            all_within_estimate=self.underestimated == 0,
        )

    def teardown(self) -> None:
        # I4 at quiescence: end everything still open; then nothing may remain open.
        if self.tracker is None:
            return
        for handle in list(self.live.values()):
            handle.release()
        for key, est in [(k, e) for k, e in self.open.items() if k < 0]:
            self.t.settle(est, 0)
            del self.open[key]
        s = self.t.stats()
        assert s.open_count == 0 and s.open_reserved == 0, s
        assert s.used == s.spent
