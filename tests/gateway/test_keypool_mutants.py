"""Key pool: behaviours the mutation run (`make mutate MODULE=keypool`) found untested, and the
least-loaded index's state from before it first chose (issue 13)."""

from __future__ import annotations

import random

from omnillm_sim.keypool import KeyConfig, KeyPool


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
