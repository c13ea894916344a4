"""The key pool re-aims one view per selection and the omnillm strategy looks its random
draw up once (issue 15): a new random stream and a toggled ``rate_in_selection`` still take
effect at the next selection."""

from __future__ import annotations

import random

from omnillm_sim.keypool import KeyConfig, KeyPool, OmnillmStrategy


def test_a_new_random_stream_for_the_omnillm_strategy_takes_effect() -> None:
    def picks(strategy: OmnillmStrategy) -> list[int | None]:
        pool = KeyPool([KeyConfig(label=str(i)) for i in range(10)], strategy="omnillm",
                       rng=random.Random(0))
        pool.strategy = strategy
        return [pool.select(1, float(t)) for t in range(20)]

    swapped, stream = OmnillmStrategy(rng=random.Random(1)), random.Random(2)
    swapped.rng = stream
    assert swapped.rng is stream
    assert picks(swapped) == picks(OmnillmStrategy(rng=random.Random(2)))
    assert picks(swapped) != picks(OmnillmStrategy(rng=random.Random(1)))


def test_the_pools_rate_in_selection_is_read_at_each_selection() -> None:
    pool = KeyPool([KeyConfig(label="a", rpm=1)], strategy="least-loaded", rng=random.Random(0))
    assert pool.select(1, 0.0) == 0
    assert pool.keys[0].rpm.try_acquire(0.0)  # the window is full now
    assert pool.select(1, 1.0) == 0  # the faithful pool does not look at the window
    pool.rate_in_selection = True
    assert pool.select(1, 2.0) is None
    pool.rate_in_selection = False
    assert pool.select(1, 3.0) == 0


class _NoKeys:
    """A view of an empty pool (a `PoolView` other than the pool's own)."""

    def __len__(self) -> int:
        return 0

    def available(self, i: int) -> bool:
        raise AssertionError("an empty view has no key to ask about")

    fits = available

    def load(self, i: int) -> tuple[float, int]:
        raise AssertionError("an empty view has no key to ask about")


def test_the_omnillm_strategy_counts_no_attempt_on_an_empty_view() -> None:
    strategy = OmnillmStrategy(rng=random.Random(0), attempt_cap=2)
    pool = KeyPool([KeyConfig(label="a", tpm=1)], strategy="omnillm", rng=random.Random(0))
    pool.strategy = strategy
    assert pool.select(5, 0.0) is None and strategy.last_attempts == 1  # tried "a": no room
    assert strategy.choose(_NoKeys()) is None and strategy.last_attempts == 0
