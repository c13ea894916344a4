"""Rate limiters: exact timelines with literal times, bad input, and state machines."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.ratelimit import InflightTokenCap, SlidingWindowLog, TokenBucket
from omnillm_sim.timebase import to_micros

# -- SlidingWindowLog ------------------------------------------------------------------------


def test_window_timeline_entry_exactly_window_old_still_counts() -> None:
    w = SlidingWindowLog(2, window=60.0)
    assert w.try_acquire(0.0)
    assert w.try_acquire(10.0)
    refused = w.try_acquire(20.0)
    assert not refused
    assert refused.retry_after == 40.0  # the entry at 0.0 expires strictly after 60.0
    assert "2 of 2" in refused.reason
    assert not w.try_acquire(60.0)  # 0.0 is exactly 60 s old: still counts
    assert w.try_acquire(60.5)  # now it is more than 60 s old
    assert not w.try_acquire(70.0)  # 10.0 is exactly 60 s old
    assert w.try_acquire(70.25)
    assert w.stats().admitted == 4 and w.stats().rejected == 3


def test_window_rejection_records_nothing() -> None:
    w = SlidingWindowLog(1, window=1.0)
    assert w.try_acquire(0.0)
    for t in (0.1, 0.2, 0.9, 1.0):
        assert not w.try_acquire(t)
    assert w.count(1.0) == 1
    assert w.try_acquire(1.5)  # refusals at 0.1..1.0 did not extend the window


def test_window_test_does_not_consume() -> None:
    w = SlidingWindowLog(1, window=60.0)
    for _ in range(3):
        assert w.test(5.0)
    assert w.count(5.0) == 0
    assert w.try_acquire(5.0)
    assert not w.test(5.0)


def test_window_forget_latest_returns_a_slot() -> None:
    w = SlidingWindowLog(1, window=60.0)
    assert w.try_acquire(3.0)
    assert w.forget_latest(3.0)
    assert not w.forget_latest(3.0)
    assert w.try_acquire(4.0)


@pytest.mark.parametrize(
    ("kwargs", "parameter", "value"),
    [
        ({"limit": 0}, "limit", 0),
        ({"limit": -3}, "limit", -3),
        ({"limit": True}, "limit", True),
        ({"limit": 1, "window": 0}, "window", 0),
        ({"limit": 1, "window": -60.0}, "window", -60.0),
        ({"limit": 1, "window": float("nan")}, "window", None),
    ],
)
def test_window_bad_input(kwargs: dict[str, object], parameter: str, value: object) -> None:
    with pytest.raises(InvalidValueError) as info:
        SlidingWindowLog(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter
    if value is not None:
        assert f"{parameter}(={value!r})" in str(info.value)


def test_window_time_never_goes_back() -> None:
    w = SlidingWindowLog(5)
    w.try_acquire(10.0)
    with pytest.raises(InvalidValueError, match=r"now\(=9\.0\)"):
        w.try_acquire(9.0)


steps = st.one_of(
    st.sampled_from([0.0, 0.25, 1.0, 5.0, 10.0]),
    st.floats(min_value=0.0, max_value=15.0, allow_nan=False),
)


class WindowMachine(RuleBasedStateMachine):
    """At most `limit` admissions in any closed interval of length `window`; and no refusal
    while fewer than `limit` admissions are in [now - window, now]."""

    def __init__(self) -> None:
        super().__init__()
        self.limit, self.window = 3, 10.0
        self.w = SlidingWindowLog(self.limit, self.window)
        self.now = 0.0
        self.admitted: list[float] = []

    @rule(dt=steps)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(how=st.sampled_from(["test", "try_acquire", "acquire_at"]))
    def acquire(self, how: str) -> None:
        # Times compared in integer microseconds, as the limiter does (6.6 s + 10 s - 6.6 s is
        # 10.000000000000002 in floats).
        now, window = to_micros(self.now), to_micros(self.window)
        recent = sum(1 for a in self.admitted if now - to_micros(a) <= window)
        if how == "test":
            assert bool(self.w.test(self.now)) == (recent < self.limit)
            return
        if how == "acquire_at":  # the gateway's form: the time converted once by the caller
            got: object = self.w.acquire_at(self.now, now)
            assert got is (recent < self.limit)  # a bool, not merely truthy
        else:
            got = self.w.try_acquire(self.now)
        assert bool(got) == (recent < self.limit), (self.now, self.admitted)
        if got:
            self.admitted.append(self.now)

    @invariant()
    def never_more_than_limit_in_a_closed_window(self) -> None:
        for i, start in enumerate(self.admitted):
            inside = [
                a
                for a in self.admitted[i:]
                if to_micros(a) - to_micros(start) <= to_micros(self.window)
            ]
            assert len(inside) <= self.limit, (start, inside)


TestWindowMachine = WindowMachine.TestCase

# -- InflightTokenCap ------------------------------------------------------------------------


def test_cap_timeline_equality_admitted_and_time_never_releases() -> None:
    cap = InflightTokenCap(100)
    assert cap.try_acquire(60, 0.0)
    refused = cap.try_acquire(50, 1.0)
    assert not refused and refused.retry_after is None
    assert refused.reason == "in-flight tokens 60 + 50 > cap 100"
    assert cap.test(50, 1.0) == refused  # the same answer without consuming
    assert cap.try_acquire(40, 2.0)  # 60 + 40 == 100 is admitted
    assert not cap.try_acquire(1, 10_000.0)  # no decay with time: it is not a rate
    cap.release(60, 10_001.0)
    assert cap.inflight == 40
    assert cap.try_acquire(50, 10_002.0)
    assert cap.stats().peak == 100


def test_cap_double_release_and_bad_input() -> None:
    cap = InflightTokenCap(10)
    cap.try_acquire(5, 0.0)
    with pytest.raises(InvalidValueError, match="tokens"):
        cap.release(6, 1.0)
    with pytest.raises(InvalidValueError, match=r"tokens\(=-1\)"):
        cap.try_acquire(-1, 1.0)
    with pytest.raises(InvalidValueError, match=r"limit\(=0\) must be > 0"):
        InflightTokenCap(0)


# -- TokenBucket ------------------------------------------------------------------------------


def test_bucket_timeline() -> None:
    b = TokenBucket(600, burst=100)  # 10 tokens per second
    assert b.try_acquire(100, 0.0)
    refused = b.try_acquire(10, 0.5)  # 5 tokens refilled
    assert not refused
    assert refused.retry_after == pytest.approx(0.5)
    assert b.try_acquire(10, 1.0)
    assert b.level(1.0) == 0.0
    assert b.level(100.0) == 100.0  # refill stops at the burst
    assert b.try_acquire(60, 100.0) and b.try_acquire(40, 100.0)


def test_bucket_request_larger_than_burst_is_refused_with_a_reason() -> None:
    b = TokenBucket(6000, burst=1000)
    refused = b.try_acquire(1001, 0.0)
    assert not refused
    assert refused.retry_after is None
    assert "can never be admitted" in refused.reason and "1001" in refused.reason
    assert b.level(1_000.0) == 1000.0  # nothing was taken


def test_bucket_default_burst_is_a_minute_of_tokens() -> None:
    b = TokenBucket(90_000)
    assert b.burst == 90_000
    assert b.try_acquire(90_000, 0.0)
    assert not b.try_acquire(1, 0.0)
    assert b.try_acquire(1_500, 1.0)  # 1,500 tokens per second


@pytest.mark.parametrize(
    ("args", "parameter"),
    [
        ((0,), "rate_per_minute"),
        ((-5,), "rate_per_minute"),
        ((60, 0), "burst"),
        ((60, -1), "burst"),
    ],
)
def test_bucket_bad_input(args: tuple[float, ...], parameter: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        TokenBucket(*args)
    assert info.value.parameter == parameter


class BucketMachine(RuleBasedStateMachine):
    """Admitted tokens over any interval [s, t] <= burst + rate x (t - s); a refused request
    that fits the burst is admitted after waiting `retry_after`."""

    def __init__(self) -> None:
        super().__init__()
        self.rate, self.burst = 120.0, 50.0  # 2 tokens per second
        self.b = TokenBucket(self.rate, burst=self.burst)
        self.now = 0.0
        self.admitted: list[tuple[float, int]] = []

    @rule(dt=steps)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(tokens=st.integers(min_value=0, max_value=60))
    def acquire(self, tokens: int) -> None:
        got = self.b.try_acquire(tokens, self.now)
        if got:
            self.admitted.append((self.now, tokens))
        elif tokens > self.burst:
            assert got.retry_after is None
        else:
            assert got.retry_after is not None and got.retry_after > 0
            later = self.now + got.retry_after * (1 + 1e-9) + 1e-9
            probe = TokenBucket(self.rate, burst=self.burst)  # the same history, replayed
            for t, n in self.admitted:
                assert probe.try_acquire(n, t)
            assert probe.test(tokens, later), "retry_after was too short"

    @invariant()
    def admitted_within_burst_plus_rate(self) -> None:
        for i, (start, _) in enumerate(self.admitted):
            total = 0
            for t, n in self.admitted[i:]:
                total += n
                bound = self.burst + self.rate / 60.0 * (t - start)
                assert total <= bound + 1e-6, (start, t, total, bound)


TestBucketMachine = BucketMachine.TestCase
