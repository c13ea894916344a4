import threading
from random import Random

import pytest

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.errors import BudgetExceeded, InvalidValueError, ReservationStateError
from omnillm_sim.money import seed_usd_to_micro, usd_to_micro
from omnillm_sim.verify.machines import TrackerMachine

TestTrackerMachine = TrackerMachine.TestCase


# -- the seed's own tests, ported (omnillm 0.1.1 budget/tracker.rs) ---------------------------


def test_seed_reserve_and_settle() -> None:
    tracker = BudgetTracker(10.0)
    est = usd_to_micro(3.0)
    assert tracker.try_reserve(est)
    assert abs(tracker.used_usd() - 3.0) < 0.001
    tracker.settle(est, usd_to_micro(1.5))  # actual was cheaper: refund the delta
    assert abs(tracker.used_usd() - 1.5) < 0.001


def test_seed_budget_exceeded() -> None:
    tracker = BudgetTracker(1.0)
    assert not tracker.try_reserve(usd_to_micro(2.0))
    assert abs(tracker.used_usd() - 0.0) < 0.001


def test_seed_full_refund_on_error() -> None:
    tracker = BudgetTracker(10.0)
    est = usd_to_micro(5.0)
    assert tracker.try_reserve(est)
    tracker.settle(est, 0)
    assert abs(tracker.used_usd() - 0.0) < 0.001


def test_seed_doc_example() -> None:
    tracker = BudgetTracker(50.0)
    assert tracker.try_reserve(1_000_000)
    tracker.settle(1_000_000, 500_000)
    assert abs(tracker.used_usd() - 0.5) < 0.001
    assert tracker.used_usd() == 0.5


# -- seed semantics kept on purpose ----------------------------------------------------------


def test_exact_equality_is_admitted_and_one_more_micro_is_not() -> None:
    tracker = BudgetTracker.from_micros(1_000)
    assert tracker.try_reserve(1_000)
    assert tracker.try_reserve(0)  # e = 0 still fits at used == limit
    assert not tracker.try_reserve(1)


def test_settle_has_no_limit_guard_and_overshoot_is_accounted() -> None:
    tracker = BudgetTracker.from_micros(10_000)
    assert tracker.try_reserve(9_000)
    tracker.settle(9_000, 15_000)  # the provider billed more than estimated
    s = tracker.stats()
    assert s.used == 15_000 and s.overshoot == 5_000 and s.underestimated == 6_000
    assert tracker.remaining_usd() == 0.0  # saturates, like the seed
    assert not tracker.try_reserve(0)  # once used > limit even e = 0 fails (reference 5)
    assert s.used <= s.limit + s.underestimated  # I3


def test_seed_limit_conversion_differs_from_ours() -> None:
    assert BudgetTracker(2.01).limit == 2_010_000
    assert seed_usd_to_micro(2.01) == 2_009_999


# -- handle API --------------------------------------------------------------------------------


def test_reserve_raises_with_figures_and_leaves_state() -> None:
    tracker = BudgetTracker("0.01", name="test budget")
    tracker.reserve(6_000)
    before = tracker.stats()
    with pytest.raises(BudgetExceeded) as info:
        tracker.reserve(5_000)
    assert (info.value.requested, info.value.available, info.value.limit) == (5_000, 4_000, 10_000)
    assert "test budget exceeded" in str(info.value)
    after = tracker.stats()
    assert after.rejected == before.rejected + 1
    assert (after.used, after.open_count) == (before.used, before.open_count)


def test_double_settle_and_settle_after_release_raise() -> None:
    tracker = BudgetTracker(1)
    r = tracker.reserve(100)
    r.settle(40)
    with pytest.raises(ReservationStateError):
        r.settle(40)
    with pytest.raises(ReservationStateError):
        r.release()
    r2 = tracker.reserve(100)
    r2.release()
    with pytest.raises(ReservationStateError):
        r2.settle(1)
    assert tracker.used == 40


def test_seed_double_settle_raises_instead_of_wrapping() -> None:
    # The seed's fetch_sub would wrap `used` to ~2**64 here (reference 8.1).
    tracker = BudgetTracker(1)
    assert tracker.try_reserve(500)
    tracker.settle(500, 500)
    with pytest.raises(ReservationStateError):
        tracker.settle(500, 0)
    assert tracker.used == 500


def test_context_manager_releases_on_error_and_settles_estimate_otherwise() -> None:
    tracker = BudgetTracker(1)
    with pytest.raises(RuntimeError), tracker.reserve(300):
        raise RuntimeError("provider down")
    assert tracker.used == 0
    with tracker.reserve(300):
        pass
    assert tracker.used == 300
    with tracker.reserve(300) as r:
        r.settle(10)
    assert tracker.used == 310
    s = tracker.stats()
    assert (s.settled, s.released, s.open_count) == (2, 1, 0)


def test_unlimited_tracker_never_refuses() -> None:
    tracker = BudgetTracker.unlimited()
    assert tracker.is_unlimited
    assert tracker.try_reserve(10**15)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", None])
def test_bad_amounts_are_rejected_without_state_change(bad: object) -> None:
    tracker = BudgetTracker(1)
    assert tracker.try_reserve(10)
    before = tracker.stats()
    for call in (
        lambda: tracker.try_reserve(bad),
        lambda: tracker.reserve(bad),
        lambda: tracker.settle(10, bad),
        lambda: tracker.settle(bad, 0),
    ):
        with pytest.raises(InvalidValueError, match=r"\(="):
            call()  # type: ignore[no-untyped-call]
    assert tracker.stats() == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "abc", True])
def test_bad_limits_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidValueError, match="limit"):
        BudgetTracker(bad)  # type: ignore[arg-type]


def test_repr_shows_live_state() -> None:
    tracker = BudgetTracker.from_micros(100, name="b")
    r = tracker.reserve(30, label="call 1")
    assert repr(tracker) == "<BudgetTracker 'b' limit=100 used=30 open=1/30>"
    assert "call 1" in repr(r) and "open" in repr(r)


# -- real threads ------------------------------------------------------------------------------


def _stress(threads: int, ops: int, seed: int) -> None:
    limit = 5_000_000
    tracker = BudgetTracker.from_micros(limit)
    actual_totals = [0] * threads
    peaks: list[int] = []
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        rng = Random(seed * 1000 + index)
        start.wait()
        open_seed: list[int] = []
        for _ in range(ops):
            est = rng.randrange(0, 200_000)
            actual = rng.randrange(0, est + 1)  # estimates are upper bounds
            choice = rng.random()
            if choice < 0.4:
                if tracker.try_reserve(est):
                    open_seed.append(est)
                if open_seed and rng.random() < 0.7:
                    e = open_seed.pop(rng.randrange(len(open_seed)))
                    a = rng.randrange(0, e + 1)
                    tracker.settle(e, a)
                    actual_totals[index] += a
            elif choice < 0.8:
                try:
                    r = tracker.reserve(est)
                except BudgetExceeded:
                    continue
                r.settle(actual)
                actual_totals[index] += actual
            else:
                try:
                    with tracker.reserve(est) as r:
                        if rng.random() < 0.5:
                            raise KeyError("the call failed")
                        r.settle(actual)
                        actual_totals[index] += actual
                except (KeyError, BudgetExceeded):
                    pass
            peaks.append(tracker.used)
        for e in open_seed:
            tracker.settle(e, e)
            actual_totals[index] += e

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    s = tracker.stats()
    assert s.used == sum(actual_totals) == s.spent
    assert s.open_count == 0 and s.open_reserved == 0
    assert s.peak_used <= limit and max(peaks) <= limit
    assert s.underestimated == 0 and s.overshoot == 0
    assert s.admitted == s.settled + s.released


def test_threads_never_overspend_and_account_exactly() -> None:
    _stress(threads=8, ops=2_500, seed=1)


@pytest.mark.soak
def test_threads_soak() -> None:
    for seed in range(10):
        _stress(threads=16, ops=20_000, seed=seed)


def test_seed_settle_larger_than_what_is_open_raises() -> None:
    tracker = BudgetTracker(1)
    assert tracker.try_reserve(100) and tracker.try_reserve(50)
    tracker.settle(100, 100)
    before = tracker.stats()
    with pytest.raises(ReservationStateError, match=r"has only 50 µ\$ in 1 open"):
        tracker.settle(100, 0)  # a second settle of the first reservation
    assert tracker.stats() == before
    tracker.settle(50, 20)
    assert tracker.stats().used == 120
