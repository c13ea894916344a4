"""Circuit breakers: exact timelines with literal times, bad input, a safe-breaker machine."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from omnillm_sim.breaker import FaithfulBreaker, SafeBreaker, Ticket
from omnillm_sim.errors import InvalidValueError

# -- faithful (omnillm 0.1.5, reference section 4) -------------------------------------------


def test_faithful_trips_at_threshold_opens_for_cooldown_and_resets_count() -> None:
    b = FaithfulBreaker(threshold=5, cooldown=30.0)
    t = b.acquire(0.0)
    for now in (1.0, 2.0, 3.0, 4.0):
        assert not b.record_failure(t, now)
    b.record_success(t, 5.0)  # a success in between resets the count
    assert b.consecutive_failures == 0
    for now in (6.0, 7.0, 8.0, 9.0):
        assert not b.record_failure(t, now)
    assert b.record_failure(t, 10.0)
    assert b.consecutive_failures == 0  # reset right after tripping
    assert b.open_until == 40.0
    assert b.state(39.999) == "open" and not b.allow(39.999)
    assert b.state(40.0) == "closed" and b.allow(40.0)  # no half-open: fully open for traffic


def test_faithful_failures_completing_while_open_count_and_extend_the_cooldown() -> None:
    b = FaithfulBreaker(threshold=2, cooldown=30.0)
    t = b.acquire(0.0)
    b.record_failure(t, 1.0)
    assert b.record_failure(t, 2.0)  # open until 32
    b.record_failure(t, 5.0)
    assert b.record_failure(t, 6.0)  # in-flight failures re-trip: a store of 6 + 30
    assert b.open_until == 36.0


def test_faithful_success_resets_count_but_not_the_cooldown() -> None:
    b = FaithfulBreaker(threshold=1, cooldown=30.0)
    t = b.acquire(0.0)
    assert b.record_failure(t, 1.0)
    b.record_success(t, 2.0)
    assert not b.allow(2.0) and b.open_until == 31.0


def test_faithful_ignored_changes_nothing() -> None:
    b = FaithfulBreaker(threshold=2, cooldown=30.0)
    t = b.acquire(0.0)
    b.record_failure(t, 1.0)
    b.record_ignored(t, 2.0)
    assert b.consecutive_failures == 1
    assert b.record_failure(t, 3.0)


# -- safe ------------------------------------------------------------------------------------


def test_safe_timeline_open_half_open_probe_failure_reopens_probe_success_closes() -> None:
    b = SafeBreaker(threshold=2, cooldown=10.0, probes=1)
    t = b.acquire(0.0)
    b.record_failure(t, 1.0)
    assert b.record_failure(b.acquire(1.5), 2.0)
    assert b.state(11.9) == "open" and not b.allow(11.9)
    with pytest.raises(RuntimeError):
        b.acquire(11.9)
    assert b.state(12.0) == "half-open" and b.allow(12.0)
    probe = b.acquire(12.0)
    assert probe.probe and not b.allow(12.0)  # one probe at a time
    assert b.record_failure(probe, 13.0)  # a probe failure re-opens
    assert b.open_until == 23.0 and b.state(22.0) == "open"
    probe = b.acquire(23.0)
    b.record_success(probe, 24.0)
    assert b.state(24.0) == "closed" and b.consecutive_failures == 0


def test_safe_stale_results_do_not_change_state() -> None:
    b = SafeBreaker(threshold=1, cooldown=10.0, probes=1)
    old = b.acquire(0.0)  # started while closed
    assert b.record_failure(b.acquire(0.0), 1.0)  # open until 11
    b.record_success(old, 2.0)
    assert b.state(2.0) == "open"  # a stale success does not close
    assert not b.record_failure(old, 3.0)  # nor does a stale failure extend the cooldown
    assert b.open_until == 11.0


def test_safe_ignored_probe_frees_its_slot_and_keeps_half_open() -> None:
    b = SafeBreaker(threshold=1, cooldown=5.0, probes=2)
    b.record_failure(b.acquire(0.0), 0.0)
    p1, p2 = b.acquire(5.0), b.acquire(5.0)
    assert not b.allow(5.0)
    b.record_ignored(p1, 6.0)
    assert b.state(6.0) == "half-open" and b.allow(6.0)
    b.record_ignored(p2, 6.0)
    assert b.probes_in_flight == 0


def test_safe_old_probes_still_in_flight_count_against_the_next_half_open() -> None:
    b = SafeBreaker(threshold=1, cooldown=5.0, probes=2)
    b.record_failure(b.acquire(0.0), 0.0)
    p1, p2 = b.acquire(5.0), b.acquire(5.0)
    assert b.record_failure(p1, 6.0)  # re-open until 11; p2 still in flight
    assert b.state(11.0) == "half-open"
    b.acquire(11.0)
    assert not b.allow(11.0)  # p2 + the new probe = 2
    b.record_success(p2, 12.0)  # stale: frees its slot, does not close
    assert b.state(12.0) == "half-open" and b.allow(12.0)


@pytest.mark.parametrize("cls", [FaithfulBreaker, SafeBreaker])
@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"threshold": 0}, "breaker_threshold"),
        ({"threshold": -1}, "breaker_threshold"),
        ({"cooldown": 0}, "breaker_cooldown"),
        ({"cooldown": -30.0}, "breaker_cooldown"),
    ],
)
def test_bad_input(cls: type, kwargs: dict[str, float], parameter: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        cls(**kwargs)
    assert info.value.parameter == parameter


def test_safe_bad_probes() -> None:
    with pytest.raises(InvalidValueError, match=r"half_open_probes\(=0\) must be > 0"):
        SafeBreaker(probes=0)


class SafeBreakerMachine(RuleBasedStateMachine):
    """Never more than `probes` probes in flight; open refuses; closed allows."""

    tickets = Bundle("tickets")

    def __init__(self) -> None:
        super().__init__()
        self.probes = 2
        self.b = SafeBreaker(threshold=2, cooldown=5.0, probes=self.probes)
        self.now = 0.0
        self.outstanding_probes = 0

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 4.999, 5.0, 7.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(target=tickets)
    def acquire(self) -> Ticket:
        if not self.b.allow(self.now):
            with pytest.raises(RuntimeError):
                self.b.acquire(self.now)
            return Ticket(-1)  # a marker the end rules skip
        ticket = self.b.acquire(self.now)
        self.outstanding_probes += ticket.probe
        return ticket

    @rule(ticket=consumes(tickets), how=st.sampled_from(["success", "failure", "ignored"]))
    def end(self, ticket: Ticket, how: str) -> None:
        if ticket.epoch < 0:
            return
        getattr(self.b, f"record_{how}")(ticket, self.now)
        self.outstanding_probes -= ticket.probe

    @invariant()
    def bounded_probes(self) -> None:
        assert self.b.probes_in_flight == self.outstanding_probes
        assert self.b.probes_in_flight <= self.probes
        assert self.b.peak_probes <= self.probes
        state = self.b.state(self.now)
        if state == "open":
            assert not self.b.allow(self.now)
        if state == "closed":
            assert self.b.allow(self.now)


TestSafeBreakerMachine = SafeBreakerMachine.TestCase
