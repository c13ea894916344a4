"""Limiters: the ``watch`` hooks seen directly (the least-loaded index relies on them), times
before 0, and edges the mutation run (`make mutate MODULE=ratelimit`) found untested
(issue 13)."""

from __future__ import annotations

import pytest

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.ratelimit import InflightTokenCap, SlidingWindowLog, TokenBucket

# -- watch: who is told what, and when -------------------------------------------------------


def test_a_window_tells_its_watcher_of_each_admission_and_nothing_else() -> None:
    """One notification per admission, after the entry is logged; none for a refusal, a
    query, or an entry ageing out of the window."""
    w = SlidingWindowLog(2, window=60.0)
    seen: list[tuple[int, int]] = []  # (entries in the window, admissions) at each call
    w.watch = lambda: seen.append((len(w._log), w.stats().admitted))
    assert w.try_acquire(0.0)
    assert seen == [(1, 1)]
    assert w.try_acquire(10.0)
    assert seen == [(1, 1), (2, 2)]
    assert not w.try_acquire(20.0)  # full: refused
    assert w.test(30.0).allowed is False and w.count(30.0) == 2
    assert w.count(65.0) == 1  # the entry at 0 aged out: no notification
    assert seen == [(1, 1), (2, 2)]
    assert w.try_acquire(66.0)
    assert seen == [(1, 1), (2, 2), (2, 3)]


def test_a_cap_tells_its_watcher_each_time_its_in_flight_count_moves() -> None:
    cap = InflightTokenCap(100)
    seen: list[int] = []  # tokens in flight at each call
    cap.watch = lambda: seen.append(cap.inflight)
    assert cap.try_acquire(60, 0.0)
    assert cap.try_acquire(30, 1.0)
    assert seen == [60, 90]
    assert not cap.try_acquire(20, 2.0)  # 90 + 20 > 100: refused, nothing moved
    assert cap.test(10, 3.0).allowed
    assert seen == [60, 90]
    cap.release(60, 4.0)
    assert seen == [60, 90, 30]
    cap.release(30, 100.0)
    assert seen == [60, 90, 30, 0]


def test_without_a_watcher_nothing_is_called() -> None:
    w, cap = SlidingWindowLog(1), InflightTokenCap(10)
    assert w.watch is None and cap.watch is None
    assert w.try_acquire(0.0) and cap.try_acquire(5, 0.0)
    cap.release(5, 1.0)
    assert (w.count(1.0), cap.inflight) == (1, 0)


# -- time ----------------------------------------------------------------------------------


def test_the_first_call_may_come_before_time_zero() -> None:
    """A timeline may start at any time, negative too (e.g. a warm-up before 0)."""
    w = SlidingWindowLog(1, window=60.0)
    assert w.try_acquire(-100.0)
    assert not w.try_acquire(-40.0)  # exactly 60 s later: still counts
    assert w.try_acquire(-39.999999)
    cap = InflightTokenCap(10)
    assert cap.try_acquire(10, -5.0)
    cap.release(10, -1.0)
    with pytest.raises(InvalidValueError, match="time never goes backwards"):
        cap.release(0, -2.0)


def test_forget_latest_names_a_bad_time() -> None:
    w = SlidingWindowLog(2)
    assert w.try_acquire(1.0)
    with pytest.raises(InvalidValueError, match=r"^at\(=nan\) must be a finite number"):
        w.forget_latest(float("nan"))
    assert w.count(1.0) == 1


def test_a_bucket_takes_an_int_time_equal_to_the_last_float_one() -> None:
    """``now`` as an int is a number of seconds: 1 after 1.0 is the same instant, no refill."""
    b = TokenBucket(60, burst=10)  # 1 token per second
    assert b.try_acquire(10, 1.0)
    assert b.level(1) == 0.0
    assert b.level(3) == 2.0
    assert b.level(3.0) == 2.0
    with pytest.raises(InvalidValueError, match="time never goes backwards"):
        b.level(2)
