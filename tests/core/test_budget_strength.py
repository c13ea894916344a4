"""The tracker's counters against an independent model, and its invariant check shown to fail
on broken states (issue 13)."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.budget import BudgetStats, BudgetTracker, Reservation, check_budget_invariants
from omnillm_sim.errors import BudgetExceeded, InvariantViolation, ReservationStateError
from omnillm_sim.money import U64_MAX

# -- check_budget_invariants fails on broken states --------------------------------------------

GOOD = {
    "used": 70,
    "limit": 100,
    "spent": 50,
    "open_reserved": 20,
    "underestimated": 0,
    "all_within_estimate": True,
}


def test_a_consistent_state_passes() -> None:
    check_budget_invariants(**GOOD)  # type: ignore[arg-type]
    # used == limit is allowed by I2 and I3; so is used over the limit by its underestimate.
    check_budget_invariants(**{**GOOD, "used": 100, "spent": 80})  # type: ignore[arg-type]
    check_budget_invariants(
        used=130, limit=100, spent=130, open_reserved=0, underestimated=30,
        all_within_estimate=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("broken", "invariant", "detail"),
    [
        # I1: used must be spent + open, one micro-dollar either way is caught.
        ({"used": 71}, "I1", "used=71 != spent=50 + open=20"),
        ({"used": 69}, "I1", "used=69 != spent=50 + open=20"),
        ({"spent": 49}, "I1", "used=70 != spent=49 + open=20"),
        # I2: over the limit by one with every actual within its estimate.
        (
            {"used": 101, "spent": 81, "underestimated": 1},
            "I2",
            "used=101 > limit=100 with no underestimate",
        ),
        # I3: over the limit by more than the underestimates explain.
        (
            {"used": 111, "spent": 91, "underestimated": 10, "all_within_estimate": False},
            "I3",
            "used=111 > limit=100 + underestimated=10",
        ),
    ],
)
def test_each_broken_invariant_is_named_with_its_figures(
    broken: dict[str, object], invariant: str, detail: str
) -> None:
    with pytest.raises(InvariantViolation) as info:
        check_budget_invariants(**{**GOOD, **broken})  # type: ignore[arg-type]
    assert info.value.invariant == invariant
    assert info.value.detail == detail
    assert str(info.value) == f"invariant {invariant} violated: {detail}"


def test_i3_holds_exactly_at_limit_plus_underestimated() -> None:
    state = {**GOOD, "used": 110, "spent": 90, "underestimated": 10, "all_within_estimate": False}
    check_budget_invariants(**state)  # type: ignore[arg-type]


# -- every counter against an independent model ------------------------------------------------


class Model:
    """What a tracker's stats must be, computed from the operations alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: list[int] = []
        self.spent = 0
        self.peak = 0
        self.overshoot = 0
        self.rejected = self.settled = self.released = 0
        self.under = 0

    @property
    def used(self) -> int:
        return self.spent + sum(self.open)

    def note(self) -> None:
        self.peak = max(self.peak, self.used)
        self.overshoot = max(self.overshoot, self.used - self.limit)

    def stats(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "used": self.used,
            "spent": self.spent,
            "open_reserved": sum(self.open),
            "open_count": len(self.open),
            "peak_used": self.peak,
            "overshoot": self.overshoot,
            "admitted": self.settled + self.released + len(self.open),
            "rejected": self.rejected,
            "settled": self.settled,
            "released": self.released,
            "underestimated": self.under,
        }


ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "try_reserve", "settle", "release", "seed_settle"]),
        st.integers(min_value=0, max_value=60),
        st.integers(min_value=0, max_value=60),
    ),
    max_size=40,
)


@given(limit=st.integers(min_value=0, max_value=150), steps=ops)
def test_every_counter_matches_a_model(limit: int, steps: list[tuple[str, int, int]]) -> None:
    tracker = BudgetTracker.from_micros(limit)
    model = Model(limit)
    handles: list[Reservation] = []
    seed_open: list[int] = []
    for op, amount, actual in steps:
        fits = model.used + amount <= limit
        if op == "reserve":
            if fits:
                handle = tracker.reserve(amount, label="x")
                assert (handle.state, handle.estimate, handle.actual) == ("open", amount, None)
                handles.append(handle)
                model.open.append(amount)
            else:
                with pytest.raises(BudgetExceeded):
                    tracker.reserve(amount)
                model.rejected += 1
        elif op == "try_reserve":
            assert tracker.try_reserve(amount) is fits
            if fits:
                seed_open.append(amount)
                model.open.append(amount)
            else:
                model.rejected += 1
        elif op in ("settle", "release") and handles:
            handle = handles.pop(amount % len(handles))
            if op == "settle":
                handle.settle(actual)
                model.settled += 1
            else:
                handle.release()
                actual = 0
                model.released += 1
            assert handle.state == ("settled" if op == "settle" else "released")
            assert handle.actual == actual
            model.open.remove(handle.estimate)
            model.spent += actual
            model.under += max(actual - handle.estimate, 0)
        elif op == "seed_settle" and seed_open:
            est = seed_open.pop(amount % len(seed_open))
            tracker.settle(est, actual)
            model.open.remove(est)
            model.spent += actual
            model.settled += 1
            model.under += max(actual - est, 0)
        model.note()
        stats = tracker.stats()
        assert asdict(stats) == model.stats()
        assert stats.remaining == tracker.remaining() == max(limit - model.used, 0)
        assert tracker.used == model.used and tracker.spent == model.spent


def test_peak_and_overshoot_follow_an_underestimate() -> None:
    tracker = BudgetTracker.from_micros(100)
    first = tracker.reserve(60)
    second = tracker.reserve(40)
    first.settle(90)  # 30 over its estimate: used 130, 30 past the limit
    s = tracker.stats()
    assert (s.used, s.peak_used, s.overshoot, s.underestimated) == (130, 130, 30, 30)
    assert s.remaining == 0 and tracker.remaining() == 0
    second.settle(10)  # used falls to 100; the peaks stay
    s = tracker.stats()
    assert (s.used, s.peak_used, s.overshoot, s.underestimated) == (100, 130, 30, 30)
    assert (s.settled, s.released, s.open_count, s.admitted) == (2, 0, 0, 2)


def test_an_underestimate_within_the_limit_leaves_overshoot_at_zero() -> None:
    tracker = BudgetTracker.from_micros(100)
    tracker.reserve(10).settle(50)  # 40 over its estimate, still 50 under the limit
    s = tracker.stats()
    assert (s.used, s.peak_used, s.overshoot, s.underestimated) == (50, 50, 0, 40)
    tracker.reserve(30).settle(20)
    assert tracker.stats().peak_used == 80


def test_seed_settle_above_the_estimate_counts_the_underestimate() -> None:
    tracker = BudgetTracker.from_micros(100)
    assert tracker.try_reserve(50)
    tracker.settle(50, 120)
    s = tracker.stats()
    assert (s.used, s.spent, s.peak_used, s.overshoot, s.underestimated, s.settled) == (
        120, 120, 120, 20, 70, 1,
    )  # fmt: skip


def test_seed_settle_needs_an_open_reservation_even_of_zero() -> None:
    tracker = BudgetTracker.from_micros(100)
    with pytest.raises(ReservationStateError, match=r"has only 0 µ\$ in 0 open reservations"):
        tracker.settle(0, 0)
    assert tracker.try_reserve(0)
    tracker.settle(0, 0)
    assert tracker.stats().settled == 1
    assert tracker.stats().open_count == 0


def test_seed_settle_of_exactly_what_is_open_is_allowed() -> None:
    tracker = BudgetTracker.from_micros(100)
    assert tracker.try_reserve(30)
    tracker.settle(30, 30)
    assert (tracker.used, tracker.spent) == (30, 30)


def test_a_reservation_reports_its_state_estimate_and_actual() -> None:
    tracker = BudgetTracker.from_micros(100)
    with tracker.reserve(25) as r:
        assert (r.state, r.estimate, r.actual) == ("open", 25, None)
    assert (r.state, r.actual) == ("settled", 25)
    r2 = tracker.reserve(5)
    r2.release()
    assert (r2.state, r2.actual, r2.estimate) == ("released", 0, 5)
    with tracker.reserve(7) as r3:
        r3.settle(3)  # settled inside the block: leaving it changes nothing
    assert (r3.state, r3.actual, tracker.used) == ("settled", 3, 28)
    with pytest.raises(RuntimeError), tracker.reserve(9) as r4:
        raise RuntimeError("call failed")
    assert (r4.state, r4.actual, tracker.used) == ("released", 0, 28)


def test_handles_get_increasing_ids_from_one() -> None:
    tracker = BudgetTracker.from_micros(100)
    assert [tracker.reserve(1).id for _ in range(3)] == [1, 2, 3]


def test_a_refused_reserve_reports_what_was_available() -> None:
    tracker = BudgetTracker.from_micros(100)
    tracker.reserve(60).settle(130)  # 30 over the limit: nothing available, not -30
    with pytest.raises(BudgetExceeded) as info:
        tracker.reserve(1)
    assert (info.value.requested, info.value.available) == (1, 0)
    tracker2 = BudgetTracker.from_micros(100)
    tracker2.reserve(60)
    with pytest.raises(BudgetExceeded) as info:
        tracker2.reserve(41)
    assert (info.value.requested, info.value.available) == (41, 40)


def test_unlimited_means_exactly_u64_max() -> None:
    assert BudgetTracker.unlimited().limit == 18_446_744_073_709_551_615
    assert BudgetTracker.unlimited().is_unlimited
    assert BudgetTracker.from_micros(U64_MAX).is_unlimited
    assert not BudgetTracker.from_micros(U64_MAX - 1).is_unlimited


def test_usd_views() -> None:
    tracker = BudgetTracker("2.5")
    tracker.reserve(500_000).settle(500_000)
    assert (tracker.limit_usd(), tracker.used_usd(), tracker.remaining_usd()) == (2.5, 0.5, 2.0)
    assert tracker.name == "budget"
    assert BudgetTracker(1, name="team").name == "team"
    assert BudgetTracker.from_micros(5, name="t2").name == "t2"


def test_stats_is_a_frozen_record() -> None:
    s = BudgetTracker.from_micros(10).stats()
    assert isinstance(s, BudgetStats)
    with pytest.raises(AttributeError):
        s.used = 3  # type: ignore[misc]


@pytest.mark.parametrize("bad", [-1, 1.0, True, "1"])
def test_bad_amounts_are_refused_by_every_entry(bad: object) -> None:
    tracker = BudgetTracker.from_micros(100)
    assert tracker.try_reserve(10)
    handle = tracker.reserve(10)
    for call in (
        lambda: tracker.try_reserve(bad),  # type: ignore[arg-type]
        lambda: tracker.reserve(bad),  # type: ignore[arg-type]
        lambda: tracker.settle(bad, 0),  # type: ignore[arg-type]
        lambda: tracker.settle(10, bad),  # type: ignore[arg-type]
        lambda: handle.settle(bad),  # type: ignore[arg-type]
        lambda: BudgetTracker.from_micros(bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match=r"must be an int of micro-dollars >= 0$"):
            call()
    assert tracker.stats().open_count == 2 and tracker.used == 20


def test_settled_and_released_count_every_reservation() -> None:
    tracker = BudgetTracker.from_micros(1_000)
    for _ in range(3):
        tracker.reserve(10).release()
    for _ in range(3):
        assert tracker.try_reserve(10)
        tracker.settle(10, 5)  # the seed API's common path (actual <= estimate)
    for _ in range(2):
        tracker.reserve(10).settle(10)
    s = tracker.stats()
    assert (s.released, s.settled, s.admitted, s.open_count, s.spent) == (3, 5, 8, 0, 35)
    for _ in range(3):
        assert not tracker.try_reserve(2_000)
    assert tracker.stats().rejected == 3
