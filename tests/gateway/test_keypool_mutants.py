"""Key pool: behaviours the mutation run (`make mutate MODULE=keypool`) found untested, and the
least-loaded index's state from before it first chose (issue 13)."""

from __future__ import annotations

import random

import pytest

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.keypool import (
    KeyConfig,
    KeyPool,
    LeastLoadedStrategy,
    PowerOfTwoStrategy,
    RoundRobinStrategy,
    _View,
    least_loaded_scan,
)


def keys(n: int, *, rpm: int = 3, tpm: int = 1000) -> list[KeyConfig]:
    return [KeyConfig(label=f"k{i}", rpm=rpm, tpm=tpm) for i in range(n)]


# -- least-loaded: RPM entries logged before the strategy first chose -------------------------


def test_least_loaded_forgets_an_rpm_entry_logged_before_its_first_choice() -> None:
    """An RPM entry of key 0 logged at 0 s, before the pool ever selected, stops counting
    after 60 s: at 61 s both keys are idle and the lower index wins, as a scan would pick.
    (The heap index used to keep key 0's count of 1 forever: no expiry was scheduled for
    entries it had not seen logged.)"""
    p = KeyPool(keys(2), strategy="least-loaded", rng=random.Random(0))
    assert p.keys[0].rpm.try_acquire(0.0)
    assert p.select(10, 1.0) == 1  # key 0 has 1 entry in its window, key 1 none
    assert p.keys[0].rpm.count(61.0) == 0
    assert p.select(10, 61.0) == 0


def test_least_loaded_forgets_every_entry_logged_before_its_first_choice() -> None:
    """Two entries of key 0 before the first choice, at 0 s and 30 s: at 61 s one still
    counts (key 1, with none, wins); at 91 s none does (key 0 wins the tie by index)."""
    p = KeyPool(keys(2), strategy="least-loaded", rng=random.Random(0))
    assert p.keys[0].rpm.try_acquire(0.0)
    assert p.keys[0].rpm.try_acquire(30.0)
    assert p.keys[1].rpm.count(30.0) == 0
    assert p.select(10, 30.0) == 1
    assert p.select(10, 61.0) == 1
    assert p.select(10, 91.0) == 0


def test_least_loaded_sees_an_entry_stop_counting_one_microsecond_after_the_window() -> None:
    """An entry exactly 60 s old still counts (key 1 wins at 60 s); a microsecond later it does
    not (key 0 wins the tie by index), whether logged before or after the first choice."""
    for log_first in (True, False):
        p = KeyPool(keys(2), strategy="least-loaded", rng=random.Random(0))
        if not log_first:
            assert p.select(10, 0.0) == 0
        assert p.keys[0].rpm.try_acquire(0.0)
        assert p.select(10, 0.0) == 1
        assert p.select(10, 60.0) == 1
        assert p.select(10, 60.000001) == 0


# -- least-loaded: the index picks what a scan picks, over long runs ---------------------------


def drive(p: KeyPool, rng: random.Random, steps: int) -> None:
    """Random admissions (to the picked key, as a gateway does, or to any key), releases, RPM
    entries, cooldowns, deaths and waits (at the window's edges too); after each step the
    pool's pick must be the scan's."""
    held: list[tuple[int, int]] = []
    now = 0.0
    for _ in range(steps):
        op = rng.choice(["admit", "admit", "acquire", "release", "release", "rpm", "wait", "cool",
                         "dead"])  # fmt: skip
        k = rng.randrange(len(p))
        tokens = rng.randrange(1, 400)
        if op == "admit":  # as a gateway does: the picked key takes the request
            picked = p.select(tokens, now)
            k = k if picked is None else picked
        key = p.keys[k]
        if op in ("admit", "acquire") and key.cap.try_acquire(tokens, now):
            held.append((k, tokens))
            if op == "admit":
                key.rpm.try_acquire(now)
        elif op == "release" and held:
            i, t = held.pop(rng.randrange(len(held)))
            p.keys[i].cap.release(t, now)
        elif op == "rpm":
            key.rpm.try_acquire(now)
        elif op == "wait":
            now += rng.choice([0.0, 0.000001, 0.5, 10.0, 59.999999, 60.0, 61.0])
        elif op == "cool":
            key.cool_down(now, rng.choice([0.5, 10.0]))
        elif op == "dead" and rng.random() < 0.1:
            key.dead = True
        view = _View(p.keys, tokens, now, p.rate_in_selection)
        assert p.select(tokens, now) == least_loaded_scan(view)


@pytest.mark.parametrize("seed", range(12))
def test_least_loaded_index_agrees_with_the_scan_over_long_runs(seed: int) -> None:
    """Hundreds of steps: the index's heap fills with superseded entries and is compacted
    more than once; keys of different caps and RPM limits."""
    rng = random.Random(seed)
    n = 1 + seed % 6
    configs = [
        KeyConfig(label=f"k{i}", rpm=rng.randrange(1, 5), tpm=rng.randrange(100, 2000))
        for i in range(n)
    ]
    p = KeyPool(configs, strategy="least-loaded", rng=random.Random(0),
                rate_in_selection=seed % 2 == 0)  # fmt: skip
    drive(p, rng, 600)


def test_one_least_loaded_strategy_serving_two_pools_in_turn() -> None:
    """A strategy moved to another pool indexes that pool's keys; moved back, it indexes the
    first pool's again, with nothing left over from the other pool's keys."""
    a = KeyPool(keys(3), strategy="least-loaded", rng=random.Random(0))
    b = KeyPool(keys(3), strategy="least-loaded", rng=random.Random(0))
    b.strategy = a.strategy
    # a: k0 holds half its cap, k1 a tenth, k2 none but has an RPM entry: k2 is lightest
    assert a.keys[0].cap.try_acquire(500, 0.0) and a.keys[1].cap.try_acquire(100, 0.0)
    assert a.keys[2].rpm.try_acquire(0.0)
    assert a.select(10, 0.0) == 2
    # b: k0 has an RPM entry, k1 nothing, k2 holds 90%: k1 is lightest
    assert b.keys[0].rpm.try_acquire(0.0) and b.keys[2].cap.try_acquire(900, 0.0)
    assert b.select(10, 1.0) == 1
    # back to a: b's "k1 is idle" must not stand for a's k1 (which holds 100 tokens)
    assert a.select(10, 2.0) == 2
    for pool_, now in ((b, 3.0), (a, 61.0), (b, 61.0)):
        assert pool_.select(10, now) == least_loaded_scan(_View(pool_.keys, 10, now, False))


# -- least-loaded over a view that is not a pool's: a plain scan -------------------------------


class Table:
    """A `PoolView` of its own: per key (available, fits, load)."""

    def __init__(self, rows: list[tuple[bool, bool, tuple[float, int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def available(self, i: int) -> bool:
        return self.rows[i][0]

    def fits(self, i: int) -> bool:
        return self.rows[i][1]

    def load(self, i: int) -> tuple[float, int]:
        return self.rows[i][2]


class TableWithKeys(Table):
    keys = ("a", "b", "c", "d")  # an attribute of that name, but not a pool's keys


class TableWithNow(Table):
    now = 5.0


ROWS = [
    (True, True, (0.5, 0)),
    (False, True, (0.0, 0)),  # unavailable
    (True, False, (0.0, 0)),  # does not fit
    (True, True, (0.25, 3)),
]


@pytest.mark.parametrize("view_type", [Table, TableWithKeys, TableWithNow])
def test_least_loaded_scans_a_view_that_is_not_a_pools(view_type: type[Table]) -> None:
    strategy = LeastLoadedStrategy(rng=random.Random(0))
    assert strategy.choose(view_type(ROWS)) == 3
    assert strategy.choose(view_type([*ROWS[:3], (True, True, (0.5, 0))])) == 0  # tie: index
    assert strategy.choose(view_type(ROWS[1:3])) is None
    assert strategy.choose(view_type([])) is None


# -- power-of-two in a large pool (random draws) ----------------------------------------------


def test_power_of_two_with_two_fitting_keys_always_takes_the_lighter() -> None:
    """40 keys, two fit: both are always the two candidates, so the lighter one (by the
    fraction of its own cap: 50 of 1,000 beats 10 of 100) is taken every time."""
    configs = [KeyConfig(label=f"k{i}", tpm=100 if i == 7 else 1000) for i in range(40)]
    p = KeyPool(configs, strategy="power-of-two", rng=random.Random(3))
    for key in p.keys:
        key.dead = key.index not in (7, 31)
    assert p.keys[7].cap.try_acquire(10, 0.0)  # 10% of its cap
    assert p.keys[31].cap.try_acquire(50, 0.0)  # 5% of its cap
    assert {p.select(10, 0.0) for _ in range(300)} == {31}


class Scripted(random.Random):
    """`randrange` returns the scripted values in turn."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = values

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return self.values.pop(0)


@pytest.mark.parametrize(("first", "second"), [(3, 12), (12, 3)])
def test_power_of_two_in_a_large_pool_gives_a_tie_to_the_first_draw(
    first: int, second: int
) -> None:
    p = KeyPool(keys(20), strategy="power-of-two", rng=Scripted([first, second]))
    assert p.select(10, 0.0) == first


# -- key state -----------------------------------------------------------------------------


def test_cooling_until_can_be_set_and_cleared() -> None:
    key = KeyPool(keys(1), strategy="omnillm", rng=random.Random(0)).keys[0]
    key.cooling_until = 5.0
    assert key.cooling_until == 5.0 and key.cooling(4.999999) and not key.cooling(5.0)
    assert key.unavailable_reason(1.0) == "cooling"
    key.cooling_until = None
    assert key.cooling_until is None and not key.cooling(1.0) and key.available(1.0)
    with pytest.raises(InvalidValueError, match=r"^cooling_until\(=nan\)"):
        key.cooling_until = float("nan")


def test_cool_down_names_a_bad_retry_after() -> None:
    key = KeyPool(keys(1), strategy="omnillm", rng=random.Random(0)).keys[0]
    with pytest.raises(InvalidValueError, match=r"^retry_after\(=inf\)"):
        key.cool_down(0.0, float("inf"))
    assert key.cooling_until is None


@pytest.mark.parametrize("seed", range(3))
def test_least_loaded_index_agrees_with_the_scan_in_a_large_pool(seed: int) -> None:
    """40 keys of different caps: the compacted heap must still be a heap."""
    rng = random.Random(100 + seed)
    configs = [KeyConfig(label=f"k{i}", rpm=3, tpm=rng.randrange(100, 2000)) for i in range(40)]
    drive(KeyPool(configs, strategy="least-loaded", rng=random.Random(0)), rng, 1500)


def test_cool_down_is_exact_unless_asked_for_omnillms_whole_milliseconds() -> None:
    """By default a 1 s cooldown from 1.0006 s ends at 2.0006 s; omnillm's wall clock
    truncates both terms to whole milliseconds: 1 s + 1 s = 2.000 s."""
    exact = KeyPool(keys(1), strategy="omnillm", rng=random.Random(0)).keys[0]
    assert exact.cool_down(1.0006, 1.0) == 2.0006
    crate = KeyPool(keys(1), strategy="omnillm", rng=random.Random(0)).keys[0]
    assert crate.cool_down(1.0006, 1.0, wall_clock_ms=True) == 2.0


def test_round_robin_and_power_of_two_over_a_view_that_is_not_a_pools() -> None:
    """Strategies work over any `PoolView`: round-robin skips what is unavailable or does
    not fit; power-of-two (20 rows: random draws) takes the lighter of the two usable rows,
    and the first drawn on a tie; nothing usable gives None."""
    rows = [(True, True, (0.0, 0)), (False, True, (0.0, 0)), (True, False, (0.0, 0)),
            (True, True, (0.0, 0))]  # fmt: skip
    rr = RoundRobinStrategy(rng=random.Random(0))
    assert [rr.choose(Table(rows)) for _ in range(4)] == [0, 3, 0, 3]
    assert rr.choose(Table(rows[1:3])) is None
    big = [(True, False, (0.0, 0))] * 20
    big[3], big[17] = (True, True, (0.5, 0)), (True, True, (0.1, 0))
    p2 = PowerOfTwoStrategy(rng=random.Random(5))
    assert {p2.choose(Table(big)) for _ in range(200)} == {17}
    big[3] = (True, True, (0.1, 0))
    for first, second in ((3, 17), (17, 3)):
        assert PowerOfTwoStrategy(rng=Scripted([first, second])).choose(Table(big)) == first
    assert p2.choose(Table([(True, False, (0.0, 0))] * 20)) is None


# -- found by the mutation run after the key-count work (issue 15) ----------------------------


def test_least_loaded_expires_entries_logged_before_its_first_choice_in_time_order() -> None:
    """Entries logged before the first choice, key 0's later than key 1's: at 62 s key 1's
    entry (1 s) has aged out and key 0's (5 s) has not, so key 1 is the lighter, as a scan
    says. (The expiries of such entries must form a heap: listed in key order, key 0's expiry
    at 65 s hid key 1's at 61 s, and key 1 kept its stale count.)"""
    p = KeyPool(keys(2), strategy="least-loaded", rng=random.Random(0))
    assert p.keys[0].rpm.try_acquire(5.0)
    assert p.keys[1].rpm.try_acquire(1.0)
    assert p.select(10, 10.0) == 0  # one entry each: the tie goes to the lower index
    assert (p.keys[0].rpm.count(62.0), p.keys[1].rpm.count(62.0)) == (1, 0)
    assert p.select(10, 62.0) == 1
    assert least_loaded_scan(_View(p.keys, 10, 62.0, False)) == 1


def test_the_lighter_of_two_with_equal_in_flight_shares_is_the_one_with_fewer_rpm_entries() -> None:
    p = KeyPool(keys(2), strategy="power-of-two", rng=random.Random(0))
    assert p.keys[0].rpm.try_acquire(1.0)  # key 0: 1 entry; both keys: nothing in flight
    view = _View(p.keys, 10, 2.0, False)
    assert view.lighter(0, 1) == 1
    assert view.lighter(1, 0) == 1
    assert p.keys[1].rpm.try_acquire(2.0)  # a tie on both: the first argument stays
    view = _View(p.keys, 10, 2.0, False)
    assert (view.lighter(0, 1), view.lighter(1, 0)) == (0, 1)


def test_a_refusal_by_the_attempt_cap_counts_every_key_that_had_room() -> None:
    # (only the crate's strategy has an attempt cap; the others always take a key that fits)
    p = KeyPool(keys(3), strategy="omnillm", rng=random.Random(0))
    assert p.explain(10, 0.0) == (
        False,
        "attempt cap (5) reached: 3 of 3 available keys had room but were not tried",
    )
