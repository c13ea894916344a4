"""Fast selection against a straightforward reference, over random key states.

The pool answers a strategy's questions through a per-request view that converts ``now`` once
and reads the limiters directly, and ``least-loaded`` keeps its keys in a heap refreshed by
the limiters' ``watch`` hooks. Here every strategy's pick is compared with a plain scan
written from the module's documented rules, calling each key's own public methods
(`KeyState.available`, `InflightTokenCap.test`, `SlidingWindowLog.test`/`count`,
`TokenBucket.test`), after random admissions, releases, RPM entries that expire with time,
RPM slots given back, dead keys, 429 cooldowns, breakers that trip, cool off, half-open and
probe, ties of load, and waits landing exactly on the window, cooldown and breaker edges;
keys may be used before the strategy first sees the pool.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from omnillm_sim.breaker import Ticket
from omnillm_sim.errors import InvalidValueError
from omnillm_sim.keypool import STRATEGIES, KeyConfig, KeyPool, KeyState, _View

COOLDOWN = 30.0
THRESHOLD = 2


def ref_available(key: KeyState, now: float) -> bool:
    return not key.dead and not key.cooling(now) and key.breaker.allow(now)


def ref_fits(key: KeyState, tokens: int, now: float, safe: bool) -> bool:
    if not key.cap.test(tokens, now):
        return False
    if not safe:
        return True
    if not key.rpm.test(now):
        return False
    return key.bucket is None or bool(key.bucket.test(tokens, now))


def ref_load(key: KeyState, now: float) -> tuple[float, int]:
    return (key.cap.inflight / key.cap.limit, key.rpm.count(now))


def ref_omnillm(keys: tuple[KeyState, ...], tokens: int, now: float, safe: bool,
                rng: random.Random, cap: int) -> int | None:
    """Reference section 3: random start, one pass, first fit, attempts on available keys."""
    n = len(keys)
    start = rng.randrange(n)
    attempts = 0
    for step in range(n):
        if attempts >= cap:
            return None
        k = (start + step) % n
        if not ref_available(keys[k], now):
            continue
        attempts += 1
        if ref_fits(keys[k], tokens, now, safe):
            return k
    return None


def ref_least_loaded(keys: tuple[KeyState, ...], tokens: int, now: float,
                     safe: bool) -> int | None:
    ok = [k for k in range(len(keys))
          if ref_available(keys[k], now) and ref_fits(keys[k], tokens, now, safe)]
    return min(ok, key=lambda k: (*ref_load(keys[k], now), k), default=None)


def ref_round_robin(keys: tuple[KeyState, ...], tokens: int, now: float, safe: bool,
                    cursor: int) -> int | None:
    n = len(keys)
    for step in range(n):
        k = (cursor + step) % n
        if ref_available(keys[k], now) and ref_fits(keys[k], tokens, now, safe):
            return k
    return None


# An operation on key (index % n): what a gateway does to keys between two selections.
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "release", "rpm", "forget", "dead", "cool", "fail",
                         "succeed", "probe", "end", "wait", "select"]),
        st.integers(0, 63),
        st.integers(1, 400),
        st.sampled_from([0.0, 0.000001, 0.5, 1.0, 10.0, COOLDOWN - 0.000001, COOLDOWN,
                         59.999999, 60.0, 61.0]),
    ),
    max_size=80,
)


class _Driver:
    """Applies random operations to a pool's keys, as a gateway would."""

    def __init__(self, pool: KeyPool) -> None:
        self.pool = pool
        self.now = 0.0
        self.held: list[tuple[int, int]] = []
        self.calls: list[tuple[int, Ticket]] = []
        self.logged: list[tuple[int, float]] = []

    def apply(self, op: str, i: int, tokens: int, dt: float) -> None:
        n = len(self.pool.keys)
        key = self.pool.keys[i % n]
        now = self.now
        if op == "acquire" and key.cap.try_acquire(tokens, now):
            self.held.append((i % n, tokens))
        elif op == "release" and self.held:
            k, t = self.held.pop(i % len(self.held))
            self.pool.keys[k].cap.release(t, now)
        elif op == "rpm" and key.rpm.try_acquire(now):
            self.logged.append((i % n, now))
        elif op == "forget" and self.logged:  # the safe policy gives a 429's slot back
            k, at = self.logged.pop(i % len(self.logged))
            self.pool.keys[k].rpm.forget_latest(at)
        elif op == "dead":
            key.dead = True
        elif op == "cool":
            key.cool_down(now, dt)
        elif op in ("fail", "succeed") and key.breaker.allow(now):
            ticket = key.breaker.acquire(now)
            if op == "fail":
                key.breaker.record_failure(ticket, now)
            else:
                key.breaker.record_success(ticket, now)
        elif op == "probe" and key.breaker.allow(now):
            self.calls.append((i % n, key.breaker.acquire(now)))
        elif op == "end" and self.calls:
            k, ticket = self.calls.pop(i % len(self.calls))
            breaker = self.pool.keys[k].breaker
            if tokens % 2:
                breaker.record_failure(ticket, now)
            else:
                breaker.record_success(ticket, now)
        elif op == "wait":
            self.now += dt


def _pool(strategy: str, n: int, rpm: int, tpms: list[int], safe: bool,
          rng: random.Random) -> KeyPool:
    keys = [KeyConfig(label=f"k{i}", rpm=rpm, tpm=tpms[i],
                      tokens_per_minute=tpms[i] * 2 if safe else None) for i in range(n)]
    return KeyPool(keys, strategy=strategy, rng=rng, rate_in_selection=safe,
                   token_buckets=safe, breaker="safe" if safe else "faithful",
                   breaker_threshold=THRESHOLD, breaker_cooldown=COOLDOWN)


_N = st.one_of(st.integers(1, 4), st.integers(1, 40))  # few keys: each edge decides the pick
_TPMS = st.lists(st.sampled_from([100, 250, 400, 1000]), min_size=40, max_size=40)


@settings(max_examples=150)
@given(n=_N, rpm=st.integers(1, 4), tpms=_TPMS, ops=_OPS, safe=st.booleans(),
       seed=st.integers(0, 2**32), cap=st.integers(1, 6))
def test_omnillm_walk_picks_what_the_reference_walk_picks(
    n: int, rpm: int, tpms: list[int], ops: list[tuple[str, int, int, float]], safe: bool,
    seed: int, cap: int,
) -> None:
    """The same random start (the same seeded stream), the same key, or None, every time."""
    pool = _pool("omnillm", n, rpm, tpms, safe, random.Random(seed))
    pool.strategy.attempt_cap = cap  # type: ignore[attr-defined]
    mirror = random.Random(seed)
    drive = _Driver(pool)
    for op, i, tokens, dt in ops:
        drive.apply(op, i, tokens, dt)
        if op in ("select", "wait"):
            expected = ref_omnillm(pool.keys, tokens, drive.now, safe, mirror, cap)
            assert pool.select(tokens, drive.now) == expected


@settings(max_examples=150)
@given(n=_N, rpm=st.integers(1, 4), tpms=_TPMS, ops=_OPS, safe=st.booleans())
def test_indexed_least_loaded_picks_the_reference_minimum(
    n: int, rpm: int, tpms: list[int], ops: list[tuple[str, int, int, float]], safe: bool,
) -> None:
    """The heap's pick is the smallest (in-flight fraction, RPM count, index) among keys
    available and fitting now, including after breakers trip and cool off and RPM entries
    expire exactly at the window's edge; equal loads go to the lowest index."""
    pool = _pool("least-loaded", n, rpm, tpms, safe, random.Random(0))
    drive = _Driver(pool)
    for op, i, tokens, dt in ops:
        drive.apply(op, i, tokens, dt)
        expected = ref_least_loaded(pool.keys, tokens, drive.now, safe)
        assert pool.select(tokens, drive.now) == expected


@settings(max_examples=100)
@given(n=_N, rpm=st.integers(1, 4), tpms=_TPMS, ops=_OPS, safe=st.booleans())
def test_round_robin_picks_the_reference_next_fitting_key(
    n: int, rpm: int, tpms: list[int], ops: list[tuple[str, int, int, float]], safe: bool,
) -> None:
    pool = _pool("round-robin", n, rpm, tpms, safe, random.Random(0))
    drive = _Driver(pool)
    cursor = 0
    for op, i, tokens, dt in ops:
        drive.apply(op, i, tokens, dt)
        expected = ref_round_robin(pool.keys, tokens, drive.now, safe, cursor)
        assert pool.select(tokens, drive.now) == expected
        if expected is not None:
            cursor = (expected + 1) % n


@settings(max_examples=100)
@given(n=st.integers(17, 60), tpms=_TPMS, ops=_OPS, safe=st.booleans(),
       seed=st.integers(0, 2**32))
def test_sampled_power_of_two_picks_a_fitting_key_no_heavier_than_its_partner(
    n: int, tpms: list[int], ops: list[tuple[str, int, int, float]], safe: bool, seed: int,
) -> None:
    """Above SAMPLE_FROM keys: a key available and fitting by the reference predicates, None
    only when none is, and never the heavier key of a fitting pair when it is the only one
    heavier than every other (the lighter of two distinct fitting keys)."""
    pool = _pool("power-of-two", n, 4, (tpms * 2)[:n], safe, random.Random(seed))
    drive = _Driver(pool)
    for op, i, tokens, dt in ops:
        drive.apply(op, i, tokens, dt)
        now = drive.now
        ok = [k for k in range(n)
              if ref_available(pool.keys[k], now) and ref_fits(pool.keys[k], tokens, now, safe)]
        chosen = pool.select(tokens, now)
        if not ok:
            assert chosen is None
            continue
        assert chosen in ok
        if len(ok) >= 2:
            loads = sorted(ref_load(pool.keys[k], now) for k in ok)
            heaviest_alone = loads[-1] > loads[-2]
            assert not (heaviest_alone and ref_load(pool.keys[chosen], now) == loads[-1])


_EDGES = [  # an RPM entry exactly a window old; a 429 cooldown and a breaker at their ends
    [("rpm", 0, 1, 0.0), ("wait", 0, 1, 60.0), ("wait", 0, 1, 0.000001)],
    [("cool", 0, 1, COOLDOWN), ("wait", 0, 1, COOLDOWN - 0.000001), ("wait", 0, 1, 0.000001)],
    [("fail", 0, 1, 0.0), ("fail", 0, 1, 0.0), ("wait", 0, 1, COOLDOWN - 0.000001),
     ("wait", 0, 1, 0.000001), ("probe", 0, 1, 0.0)],
]


@settings(max_examples=150)
@given(n=st.integers(1, 6), rpm=st.integers(1, 4), tpms=_TPMS, ops=_OPS, safe=st.booleans())
@example(n=1, rpm=2, tpms=[1000] * 40, ops=_EDGES[0], safe=False)
@example(n=1, rpm=2, tpms=[1000] * 40, ops=_EDGES[0], safe=True)
@example(n=1, rpm=2, tpms=[1000] * 40, ops=_EDGES[1], safe=False)
@example(n=1, rpm=2, tpms=[1000] * 40, ops=_EDGES[2], safe=False)
@example(n=1, rpm=2, tpms=[1000] * 40, ops=_EDGES[2], safe=True)
def test_the_per_request_view_answers_as_each_keys_own_methods(
    n: int, rpm: int, tpms: list[int], ops: list[tuple[str, int, int, float]], safe: bool,
) -> None:
    """What every strategy asks (available, fits, load), for every key after every step."""
    pool = _pool("omnillm", n, rpm, tpms, safe, random.Random(0))
    drive = _Driver(pool)
    for op, i, tokens, dt in ops:
        drive.apply(op, i, tokens, dt)
        now = drive.now
        # the reference reads first: an RPM window prunes as it counts, so a view that
        # dropped an entry exactly one window old would otherwise hide it from the reference
        expected = [(ref_available(key, now), ref_fits(key, tokens, now, safe),
                     ref_load(key, now)) for key in pool.keys]
        view = _View(pool.keys, tokens, now, safe)
        assert [(view.available(k), view.fits(k), view.load(k)) for k in range(n)] == expected
        assert [view.usable(k) for k in range(n)] == [a and f for a, f, _ in expected]
        for a in range(n):
            for b in range(n):
                lighter = b if expected[b][2] < expected[a][2] else a
                assert view.lighter(a, b) == lighter


def test_least_loaded_sees_an_rpm_entry_stop_counting_one_microsecond_past_the_window() -> None:
    """Key 0 logs 2 requests at t=0, key 1 one at t=0.5 (rpm windows of 60 s, nothing in
    flight). At t=60 both of key 0's entries still count (exactly a window old): key 1 has
    the lighter window. At t=60.000001 they have expired: key 0 (0 entries) is lighter."""
    pool = _pool("least-loaded", 2, 5, [1000, 1000], False, random.Random(0))
    assert pool.select(10, 0.0) == 0  # index the heap before the entries are logged
    pool.keys[0].rpm.try_acquire(0.0)
    pool.keys[0].rpm.try_acquire(0.0)
    pool.keys[1].rpm.try_acquire(0.5)
    assert [pool.select(10, t) for t in (1.0, 60.0, 60.000001)] == [1, 1, 0]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_selection_earlier_than_a_key_has_seen_is_refused(strategy: str) -> None:
    """Time never goes backwards: the view's microsecond fast path keeps the limiters' check
    (a selection one microsecond before an admission the key has seen raises, naming now)."""
    pool = _pool(strategy, 1, 5, [1000], False, random.Random(0))
    assert pool.keys[0].cap.try_acquire(10, 10.0)
    with pytest.raises(InvalidValueError, match=r"now\(=9\.999999\) must be >= 10"):
        pool.select(10, 9.999999)
    assert pool.select(10, 10.0) == 0


def ref_explain(pool: KeyPool, tokens: int, now: float, safe: bool) -> tuple[bool, str]:
    """`KeyPool.explain` as it was written first: a list per stage, each key's methods."""
    keys = pool.keys
    reasons: dict[str, int] = {}
    for key in keys:
        why = key.unavailable_reason(now)
        if why:
            reasons[why] = reasons.get(why, 0) + 1
    available = [i for i in range(len(keys)) if ref_available(keys[i], now)]
    if not available:
        parts = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        return False, f"no available key ({parts})"
    roomy = [i for i in available if keys[i].cap.test(tokens, now)]
    if not roomy:
        return False, (f"no available key has in-flight room for {tokens} tokens"
                       f" ({len(available)} available)")
    fitting = [i for i in roomy if ref_fits(keys[i], tokens, now, safe)]
    if not fitting:
        first = keys[roomy[0]]
        why = first.rpm.test(now).reason or (
            first.bucket.test(tokens, now).reason if first.bucket is not None else "")
        return True, f"every available key with room is rate limited (e.g. {first.label!r}: {why})"
    cap = getattr(pool.strategy, "attempt_cap", None)
    return False, (f"attempt cap ({cap}) reached: {len(fitting)} of {len(available)} available"
                   " keys had room but were not tried")


@settings(max_examples=150)
@given(n=_N, rpm=st.integers(1, 4), tpms=_TPMS, ops=_OPS, safe=st.booleans())
# a key whose RPM window is full still fits under the faithful policy, not under the safe one
@example(n=2, rpm=1, tpms=[1000] * 40, ops=[("rpm", 0, 1, 0.0)], safe=False)
@example(n=2, rpm=1, tpms=[1000] * 40, ops=[("rpm", 0, 1, 0.0)], safe=True)
def test_a_refusals_detail_in_one_pass_says_what_the_staged_reference_says(
    n: int, rpm: int, tpms: list[int], ops: list[tuple[str, int, int, float]], safe: bool,
) -> None:
    """Dead, cooling and breaker counts, no room, rate limited, attempt cap: the same words."""
    pool = _pool("omnillm", n, rpm, tpms, safe, random.Random(0))
    drive = _Driver(pool)
    for op, i, tokens, dt in ops:
        drive.apply(op, i, tokens, dt)
        expected = ref_explain(pool, tokens, drive.now, safe)
        assert pool.explain(tokens, drive.now) == expected
