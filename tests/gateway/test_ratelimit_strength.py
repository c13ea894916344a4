"""Limiters' counters, boundaries and waiting times, checked against hand-worked timelines and
an independent model (issue 13)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.ratelimit import (
    ALLOWED,
    Decision,
    InflightTokenCap,
    LimiterStats,
    SlidingWindowLog,
    TokenBucket,
)


def test_decision_truthiness_and_the_shared_allowed() -> None:
    assert ALLOWED.allowed and bool(ALLOWED)
    assert (ALLOWED.reason, ALLOWED.retry_after) == ("", None)
    assert not Decision(False, "no", 1.0)


# -- time --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["window", "cap", "bucket"])
def test_now_may_be_an_int_but_not_nan_bool_or_text(kind: str) -> None:
    if kind == "window":
        acquire = SlidingWindowLog(10).try_acquire
    elif kind == "cap":
        cap = InflightTokenCap(10)
        acquire = lambda now: cap.try_acquire(1, now)  # noqa: E731
    else:
        bucket = TokenBucket(600)
        acquire = lambda now: bucket.try_acquire(1, now)  # noqa: E731
    assert acquire(0)  # an int is a number of seconds
    assert acquire(0.0)  # the same instant again
    assert acquire(1)
    for bad in (float("nan"), True, "2", None):
        with pytest.raises(InvalidValueError, match=r"^now\(=.*\) must be a number of seconds$"):
            acquire(bad)
    with pytest.raises(InvalidValueError, match=r"time never goes backwards"):
        acquire(0.5)
    assert acquire(1.0)  # a refused time did not move the clock


# -- SlidingWindowLog --------------------------------------------------------------------------


def test_window_counts_waits_and_stats_on_a_timeline() -> None:
    w = SlidingWindowLog(2, window=60.0)
    assert (w.limit, w.window) == (2, 60.0)
    assert w.try_acquire(0.0) and w.try_acquire(10.0)
    refused = w.try_acquire(30.0)
    assert not refused and refused.retry_after == 30.0  # the entry at 0 counts through t=60
    assert not w.test(60.0)  # exactly one window old: still counts
    assert w.test(60.0).retry_after == 0.0
    assert w.count(60.0) == 2
    assert w.stats() == LimiterStats(limit=2, admitted=2, rejected=1, in_use=2, peak=2)
    assert w.try_acquire(60.25)  # now 0.0 is out: 10.0 and 60.25 in the window
    assert w.count(60.25) == 2
    assert w.count(200.0) == 0
    assert w.stats() == LimiterStats(limit=2, admitted=3, rejected=1, in_use=0, peak=2)


def test_window_forget_latest_among_several_entries() -> None:
    w = SlidingWindowLog(5, window=100.0)
    for t in (0.0, 10.0, 20.0):
        assert w.try_acquire(t)
    assert not w.forget_latest(15.0)
    assert w.forget_latest(10.0)  # the middle one
    assert not w.forget_latest(10.0)
    assert w.forget_latest(0.0)  # the oldest
    assert w.count(20.0) == 1
    assert w.forget_latest(20.0)
    assert not w.forget_latest(20.0)
    assert w.count(20.0) == 0


def test_window_forget_latest_frees_a_slot_for_a_later_request() -> None:
    w = SlidingWindowLog(1, window=60.0)
    assert w.try_acquire(5.0)
    assert not w.try_acquire(6.0)
    assert w.forget_latest(5.0)
    assert w.try_acquire(6.0)


@given(
    limit=st.integers(min_value=1, max_value=4),
    gaps=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 7.0]), max_size=30),
)
def test_window_matches_a_model_of_closed_intervals(limit: int, gaps: list[float]) -> None:
    window = 5.0
    w = SlidingWindowLog(limit, window=window)
    admitted: list[float] = []
    rejected = peak = 0
    now = 0.0
    for gap in gaps:
        now += gap
        in_window = [t for t in admitted if now - t <= window]
        fits = len(in_window) < limit
        decision = w.try_acquire(now)
        assert decision.allowed == fits
        if fits:
            admitted.append(now)
            peak = max(peak, len(in_window) + 1)
        else:
            rejected += 1
            assert decision.retry_after == min(in_window) + window - now
        s = w.stats()
        assert (s.admitted, s.rejected, s.peak) == (len(admitted), rejected, peak)
        assert s.in_use == len([t for t in admitted if now - t <= window])


@pytest.mark.parametrize(
    ("limit", "window"), [(0, 60.0), (-1, 60.0), (1.5, 60.0), (True, 60.0), (1, 0.0), (1, -1.0)]
)
def test_window_refuses_bad_settings(limit: object, window: object) -> None:
    with pytest.raises(InvalidValueError):
        SlidingWindowLog(limit, window=window)  # type: ignore[arg-type]


# -- InflightTokenCap --------------------------------------------------------------------------


def test_cap_counts_and_peak_on_a_timeline() -> None:
    cap = InflightTokenCap(100)
    assert cap.limit == 100
    assert cap.try_acquire(60, 0.0)
    assert cap.try_acquire(40, 1.0)  # exactly at the cap
    refused = cap.try_acquire(1, 2.0)
    assert not refused and refused.retry_after is None  # only a release helps
    assert cap.stats() == LimiterStats(limit=100, admitted=2, rejected=1, in_use=100, peak=100)
    cap.release(60, 3.0)
    assert cap.inflight == 40
    assert cap.try_acquire(0, 3.0)  # zero tokens always fit
    assert cap.stats() == LimiterStats(limit=100, admitted=3, rejected=1, in_use=40, peak=100)
    cap.release(40, 4.0)  # releasing exactly what is in flight is fine
    assert cap.inflight == 0
    with pytest.raises(InvalidValueError, match=r"must be <= the 0 tokens in flight"):
        cap.release(1, 5.0)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_cap_refuses_token_counts_that_are_not_counts(bad: object) -> None:
    cap = InflightTokenCap(100)
    assert cap.try_acquire(10, 0.0)
    with pytest.raises(InvalidValueError, match=r"^tokens\(="):
        cap.try_acquire(bad, 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match=r"^tokens\(="):
        cap.release(bad, 1.0)  # type: ignore[arg-type]
    assert cap.stats() == LimiterStats(limit=100, admitted=1, rejected=0, in_use=10, peak=10)


def test_cap_release_checks_time_too() -> None:
    cap = InflightTokenCap(10)
    assert cap.try_acquire(5, 10.0)
    with pytest.raises(InvalidValueError, match=r"time never goes backwards"):
        cap.release(5, 9.0)
    assert cap.inflight == 5


def test_cap_test_consumes_nothing() -> None:
    cap = InflightTokenCap(10)
    assert cap.test(10, 0.0) and not cap.test(11, 0.0)
    assert cap.stats() == LimiterStats(limit=10, admitted=0, rejected=0, in_use=0, peak=0)


# -- TokenBucket -------------------------------------------------------------------------------


def test_bucket_refill_wait_and_stats_on_a_timeline() -> None:
    b = TokenBucket(600, burst=100)  # 10 tokens per second
    assert (b.rate_per_minute, b.burst) == (600.0, 100.0)
    assert b.level(0.0) == 100.0  # starts full
    assert b.try_acquire(80, 0.0)
    assert b.level(1.0) == 30.0  # 20 left + 10 refilled
    refused = b.try_acquire(50, 1.0)
    assert not refused and refused.retry_after == 2.0  # 20 missing at 10 per second
    assert b.stats() == LimiterStats(limit=100.0, admitted=1, rejected=1, in_use=70.0, peak=80.0)
    assert b.try_acquire(30, 1.0)  # exactly the level
    assert b.stats().peak == 100.0
    assert b.level(100.0) == 100.0  # refill stops at the burst
    assert b.try_acquire(100, 100.0)  # exactly the burst
    never = b.try_acquire(101, 1000.0)
    assert not never and never.retry_after is None
    assert b.stats() == LimiterStats(limit=100.0, admitted=3, rejected=2, in_use=0.0, peak=100.0)


def test_bucket_default_burst_and_rate() -> None:
    b = TokenBucket(120)  # 2 tokens per second, burst 120
    assert (b.burst, b.rate_per_minute) == (120.0, 120.0)
    assert b.try_acquire(120, 0.0)
    assert b.level(0.5) == 1.0


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bucket_refuses_bad_token_counts(bad: object) -> None:
    b = TokenBucket(60)
    with pytest.raises(InvalidValueError, match=r"^tokens\(="):
        b.try_acquire(bad, 0.0)  # type: ignore[arg-type]
    assert b.stats().admitted == 0 and b.stats().rejected == 0


def test_fresh_limiters_report_zero_peaks_and_the_default_window() -> None:
    assert SlidingWindowLog(2).window == 60.0
    assert SlidingWindowLog(2).stats() == LimiterStats(2, 0, 0, 0, 0)
    assert InflightTokenCap(5).stats() == LimiterStats(5, 0, 0, 0, 0)
    assert TokenBucket(60).stats() == LimiterStats(60.0, 0, 0, 0.0, 0.0)


def test_an_int_now_equal_to_the_last_time_is_accepted() -> None:
    w = SlidingWindowLog(5)
    assert w.try_acquire(1) and w.try_acquire(1) and w.count(1) == 2
    cap = InflightTokenCap(10)
    assert cap.try_acquire(1, 2) and cap.try_acquire(1, 2)
    cap.release(1, 2)


def test_forget_latest_answers_a_bool() -> None:
    w = SlidingWindowLog(5)
    assert w.forget_latest(0.0) is False
    assert w.try_acquire(1.0)
    assert w.forget_latest(1.0) is True


def test_cap_counts_every_rejection() -> None:
    cap = InflightTokenCap(10)
    for t in range(3):
        assert not cap.try_acquire(11, float(t))
    assert cap.stats().rejected == 3


@pytest.mark.parametrize(
    ("record", "field"), [(ALLOWED, "allowed"), (LimiterStats(1, 0, 0, 0, 0), "admitted")]
)
def test_decisions_and_stats_are_frozen(record: object, field: str) -> None:
    with pytest.raises(AttributeError):
        setattr(record, field, 0)
