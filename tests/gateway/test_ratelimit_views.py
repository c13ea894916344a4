"""The limiters' one-conversion forms (issue 15): the key pool's views
(`SlidingWindowLog.count_at`, `InflightTokenCap.has_room_at`) and the gateway's commits
(`SlidingWindowLog.acquire_at`, `InflightTokenCap.acquire_at` / `release_at`) give the same
answers and counters as `count` / `test` / `try_acquire` / `release` for any sequence of
times, refuse time going backwards the same way, and tell the watcher alike."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.ratelimit import InflightTokenCap, SlidingWindowLog
from omnillm_sim.timebase import to_micros

steps = st.lists(st.integers(min_value=0, max_value=40_000_000), min_size=1, max_size=30)


@given(limit=st.integers(1, 5), gaps=steps, acquire=st.lists(st.booleans(), min_size=30))
def test_count_at_answers_what_count_answers(
    limit: int, gaps: list[int], acquire: list[bool]
) -> None:
    # Two logs fed the same admissions; one is asked through count_at, the other through count.
    fast, slow = SlidingWindowLog(limit, window=60.0), SlidingWindowLog(limit, window=60.0)
    t_us = 0
    for gap, take in zip(gaps, acquire, strict=False):
        t_us += gap
        now = t_us / 1_000_000
        assert fast.count_at(now, to_micros(now)) == slow.count(now)
        if take:
            assert bool(fast.try_acquire(now)) == bool(slow.try_acquire(now))


@given(limit=st.integers(1, 100), held=st.integers(0, 100), tokens=st.integers(0, 200))
def test_has_room_at_answers_what_test_answers(limit: int, held: int, tokens: int) -> None:
    cap = InflightTokenCap(limit)
    if held <= limit:
        assert cap.try_acquire(held, 1.0)
    assert cap.has_room_at(tokens, 2.0, to_micros(2.0)) is bool(cap.test(tokens, 2.0))
    assert cap.has_room_at(tokens, 2.0, to_micros(2.0)) is (cap.inflight + tokens <= limit)


def test_an_exact_fit_has_room_and_one_more_token_has_not() -> None:
    cap = InflightTokenCap(100)
    assert cap.try_acquire(60, 0.0)
    assert cap.has_room_at(40, 1.0, 1_000_000) is True  # 60 + 40 = 100: fits
    assert cap.has_room_at(41, 1.0, 1_000_000) is False


cap_ops = st.lists(
    st.tuples(st.sampled_from(["acquire", "release"]), st.integers(0, 60), st.integers(0, 3)),
    max_size=40,
)


@given(limit=st.integers(1, 100), ops=cap_ops)
def test_the_caps_commits_at_a_converted_time_follow_the_token_count(
    limit: int, ops: list[tuple[str, int, int]]
) -> None:
    # The model: tokens in flight, admitted iff they fit, released only if held.
    cap, held, admitted, rejected, peak, t_us = InflightTokenCap(limit), 0, 0, 0, 0, 0
    released = watched = 0

    def watch() -> None:
        nonlocal watched
        watched += 1

    cap.watch = watch
    for op, tokens, gap in ops:
        t_us += gap * 250_000
        now = t_us / 1_000_000
        if op == "acquire":
            fits = held + tokens <= limit
            assert cap.acquire_at(tokens, now, to_micros(now)) is fits
            if fits:
                held, admitted, peak = held + tokens, admitted + 1, max(peak, held + tokens)
            else:
                rejected += 1
        elif tokens <= held:
            cap.release_at(tokens, now, to_micros(now))
            held, released = held - tokens, released + 1
        else:
            with pytest.raises(InvalidValueError, match="tokens in flight"):
                cap.release_at(tokens, now, to_micros(now))
            continue
        assert cap.inflight == held
    stats = cap.stats()
    assert (stats.admitted, stats.rejected, stats.in_use, stats.peak) == (
        admitted, rejected, held, peak
    )
    assert watched == admitted + released  # a refusal or a bad release tells nobody


def test_the_caps_commits_refuse_bad_token_counts() -> None:
    cap = InflightTokenCap(10)
    with pytest.raises(InvalidValueError, match=r"tokens\(=-1\)"):
        cap.acquire_at(-1, 0.0, 0)
    with pytest.raises(InvalidValueError, match=r"tokens\(=1\.5\)"):
        cap.release_at(1.5, 0.0, 0)  # type: ignore[arg-type]
    assert cap.stats().admitted == 0 and cap.inflight == 0


@pytest.mark.parametrize("form", ["window acquire_at", "cap acquire_at", "cap release_at"])
def test_the_commits_refuse_time_going_backwards(form: str) -> None:
    log, cap = SlidingWindowLog(3, window=10.0), InflightTokenCap(10)
    assert log.try_acquire(5.0) and cap.try_acquire(2, 5.0)
    with pytest.raises(InvalidValueError, match=r"^now\(=4\.0\) must be >= 5\.0 "):
        if form == "window acquire_at":
            log.acquire_at(4.0, to_micros(4.0))
        elif form == "cap acquire_at":
            cap.acquire_at(1, 4.0, to_micros(4.0))
        else:
            cap.release_at(1, 4.0, to_micros(4.0))
    assert len(log._log) == 1 and cap.inflight == 2  # nothing changed


@pytest.mark.parametrize("view", ["count_at", "has_room_at"])
def test_the_views_refuse_time_going_backwards_and_remember_the_time_they_saw(view: str) -> None:
    log, cap = SlidingWindowLog(3, window=10.0), InflightTokenCap(10)

    def ask(now: float) -> object:
        if view == "count_at":
            return log.count_at(now, to_micros(now))
        return cap.has_room_at(1, now, to_micros(now))

    ask(5.0)
    ask(5.0)  # the same time again is fine
    with pytest.raises(InvalidValueError, match=r"^now\(=4\.0\) must be >= 5\.0 "):
        ask(4.0)
    # ... and the time a view saw is the limiter's: the plain calls refuse going back too
    with pytest.raises(InvalidValueError, match=r"^now\(=4\.5\) must be >= 5\.0 "):
        log.count(4.5) if view == "count_at" else cap.test(1, 4.5)


def test_forget_latest_tells_the_watcher_only_when_it_removed_an_entry() -> None:
    w = SlidingWindowLog(3, window=60.0)
    assert w.try_acquire(1.0) and w.try_acquire(2.0)
    seen: list[int] = []
    w.watch = lambda: seen.append(len(w._log))
    assert w.forget_latest(3.0) is False  # nothing logged at 3.0
    assert seen == []
    assert w.forget_latest(2.0) is True
    assert seen == [1]
