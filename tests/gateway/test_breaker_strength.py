"""Breakers' counters and states, read through `stats()` on hand-worked timelines (issue 13)."""

from __future__ import annotations

import pytest

from omnillm_sim.breaker import BREAKERS, BreakerStats, FaithfulBreaker, SafeBreaker, Ticket


def test_registry_names_both_kinds() -> None:
    assert {"faithful": FaithfulBreaker, "safe": SafeBreaker} == BREAKERS


def test_faithful_counters_through_two_trips() -> None:
    b = FaithfulBreaker(threshold=2, cooldown=10.0)
    assert b.open_until is None
    assert b.stats() == BreakerStats("closed", 0, None, 0, 0, 0, 0, 0)
    t = b.acquire(0.0)
    assert t == Ticket(0) and not t.probe
    assert b.record_failure(t, 1.0) is False
    assert b.stats() == BreakerStats("closed", 1, None, 0, 0, 1, 0, 0)
    b.record_success(t, 2.0)  # resets the count
    assert b.record_failure(t, 3.0) is False
    assert b.record_failure(t, 4.0) is True  # two in a row: open until 14
    assert b.stats() == BreakerStats("open", 0, 14.0, 1, 1, 3, 0, 0)
    assert (b.state(13.5), b.allow(13.5)) == ("open", False)
    assert (b.state(14.0), b.allow(14.0)) == ("closed", True)  # the cooldown ends at 14 sharp
    b.record_ignored(t, 14.0)
    assert b.stats() == BreakerStats("closed", 0, 14.0, 1, 1, 3, 1, 0)
    # Failures completing later trip again and move the deadline to the new now + cooldown.
    assert not b.record_failure(t, 20.0)
    assert b.record_failure(t, 21.0)
    assert b.stats() == BreakerStats("open", 0, 31.0, 2, 1, 5, 1, 0)


def test_faithful_stats_state_follows_the_latest_time_seen() -> None:
    b = FaithfulBreaker(threshold=1, cooldown=10.0)
    assert b.record_failure(b.acquire(0.0), 5.0)  # open until 15
    assert b.stats().state == "open"
    assert b.allow(20.0)  # the breaker has now seen t=20
    assert b.stats().state == "closed"
    assert b.state(12.0) == "open"  # asking about an earlier time does not move it back
    assert b.stats().state == "closed"


def test_faithful_threshold_one_trips_on_every_failure() -> None:
    b = FaithfulBreaker(threshold=1, cooldown=1.0)
    t = b.acquire(0.0)
    assert [b.record_failure(t, float(i)) for i in range(3)] == [True, True, True]
    assert b.stats().trips == 3


def test_safe_counters_through_open_half_open_and_closed() -> None:
    b = SafeBreaker(threshold=2, cooldown=10.0, probes=2)
    assert b.stats() == BreakerStats("closed", 0, None, 0, 0, 0, 0, 0)
    t = b.acquire(0.0)
    assert t == Ticket(0, probe=False)
    assert not b.record_failure(t, 1.0)
    assert b.stats() == BreakerStats("closed", 1, None, 0, 0, 1, 0, 0)
    b.record_success(t, 1.5)
    assert b.stats().consecutive_failures == 0
    assert not b.record_failure(b.acquire(2.0), 2.0)
    assert b.record_failure(b.acquire(3.0), 3.0)  # open until 13
    assert b.stats() == BreakerStats("open", 0, 13.0, 1, 1, 3, 0, 0)
    assert b.open_until == 13.0
    with pytest.raises(RuntimeError, match="acquire"):
        b.acquire(12.9)
    assert b.state(13.0) == "half-open"  # the cooldown ends at 13 sharp
    assert b.open_until is None
    p1, p2 = b.acquire(13.0), b.acquire(13.0)
    assert p1.probe and p2.probe and p1.epoch == p2.epoch
    assert not b.allow(13.0)  # both probe slots taken
    assert (b.probes_in_flight, b.peak_probes) == (2, 2)
    b.record_ignored(p1, 14.0)  # frees its slot, changes nothing else
    assert b.stats() == BreakerStats("half-open", 0, None, 1, 1, 3, 1, 1)
    assert b.allow(14.0)
    b.record_success(p2, 15.0)  # a probe success closes
    assert b.stats() == BreakerStats("closed", 0, None, 1, 2, 3, 1, 0)
    assert b.peak_probes == 2


def test_safe_probe_failure_reopens_and_counts_a_trip() -> None:
    b = SafeBreaker(threshold=1, cooldown=5.0, probes=1)
    assert b.record_failure(b.acquire(0.0), 0.0)
    assert b.state(5.0) == "half-open"
    probe = b.acquire(5.0)
    assert b.record_failure(probe, 6.0) is True
    assert b.stats() == BreakerStats("open", 0, 11.0, 2, 0, 2, 0, 0)


def test_safe_results_of_calls_started_before_a_trip_are_stale() -> None:
    b = SafeBreaker(threshold=1, cooldown=5.0, probes=1)
    old_ok, old_bad = b.acquire(0.0), b.acquire(0.0)
    assert b.record_failure(b.acquire(0.0), 1.0)  # trips: the two tickets are now stale
    b.record_success(old_ok, 2.0)
    assert b.record_failure(old_bad, 2.5) is False
    assert b.stats() == BreakerStats("open", 0, 6.0, 1, 1, 2, 0, 0)


def test_safe_non_probe_success_in_half_open_does_not_close() -> None:
    b = SafeBreaker(threshold=1, cooldown=5.0, probes=1)
    assert b.record_failure(b.acquire(0.0), 0.0)
    assert b.state(5.0) == "half-open"
    # A ticket of the current epoch that is not a probe (as a caller could forge).
    b.record_success(Ticket(b.acquire(5.0).epoch, probe=False), 5.5)
    assert b.state(5.5) == "half-open"
    assert b.record_failure(Ticket(2, probe=False), 5.6) is False  # not closed: not counted
    assert b.stats().consecutive_failures == 0


def test_faithful_stats_follow_the_time_of_state_and_failures() -> None:
    b = FaithfulBreaker(threshold=2, cooldown=10.0)
    t = b.acquire(0.0)
    assert not b.record_failure(t, 0.0)
    assert b.record_failure(t, 0.0)  # open until 10
    assert b.state(20.0) == "closed"
    assert b.stats().state == "closed"  # stats see the latest time state() was asked
    b2 = FaithfulBreaker(threshold=2, cooldown=10.0)
    assert not b2.record_failure(t, 0.0)
    assert b2.record_failure(t, 0.0)  # open until 10
    assert not b2.record_failure(t, 20.0)  # a late failure: one of two, no trip
    assert b2.stats().state == "closed"  # ... and it moved the breaker's clock to 20


def test_every_success_and_ignored_result_is_counted() -> None:
    for b in (FaithfulBreaker(), SafeBreaker()):
        t = b.acquire(0.0)
        for _ in range(3):
            b.record_success(t, 0.0)
            b.record_ignored(t, 0.0)
        s = b.stats()
        assert (s.successes, s.ignored) == (3, 3), b


def test_default_settings_are_omnillms() -> None:
    for b in (FaithfulBreaker(), SafeBreaker()):
        t = b.acquire(0.0)
        assert [b.record_failure(t, 1.0) for _ in range(5)] == [False] * 4 + [True]
        assert b.stats().open_until == 31.0
    safe = SafeBreaker()
    assert safe.peak_probes == 0
    t = safe.acquire(0.0)
    for _ in range(5):
        safe.record_failure(t, 0.0)
    assert safe.state(30.0) == "half-open"
    safe.acquire(30.0)
    assert not safe.allow(30.0)  # one probe by default
    assert safe.peak_probes == 1


def test_safe_a_late_result_moves_an_expired_cooldown_to_half_open() -> None:
    b = SafeBreaker(threshold=1, cooldown=5.0)
    old = b.acquire(0.0)
    assert b.record_failure(b.acquire(0.0), 0.0)  # open until 5
    b.record_ignored(old, 6.0)  # no one asked for the state since: the result does
    assert b.stats().state == "half-open"


def test_safe_a_second_probes_failure_after_the_first_closed_is_stale() -> None:
    b = SafeBreaker(threshold=1, cooldown=5.0, probes=2)
    assert b.record_failure(b.acquire(0.0), 0.0)
    assert b.state(5.0) == "half-open"
    p1, p2 = b.acquire(5.0), b.acquire(5.0)
    b.record_success(p1, 6.0)  # closes: p2 belongs to the half-open period that ended
    assert b.record_failure(p2, 7.0) is False
    s = b.stats()
    assert (s.state, s.consecutive_failures, s.trips, s.probes_in_flight) == ("closed", 0, 1, 0)


@pytest.mark.parametrize(
    ("record", "field"),
    [(Ticket(0), "epoch"), (BreakerStats("closed", 0, None, 0, 0, 0, 0, 0), "trips")],
)
def test_tickets_and_stats_are_frozen(record: object, field: str) -> None:
    with pytest.raises(AttributeError):
        setattr(record, field, 3)
