"""Key pool: strategies told apart by inputs where they choose differently, key state and the
explanations of a failed selection (issue 13)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from gateway_helpers import FixedStart

from omnillm_sim.errors import ConfigError
from omnillm_sim.keypool import (
    DEFAULT_RETRY_AFTER,
    STRATEGIES,
    KeyConfig,
    KeyPool,
    LeastLoadedStrategy,
    OmnillmStrategy,
    PowerOfTwoStrategy,
    RoundRobinStrategy,
    make_strategy,
)


def make_pool(
    tpms: Sequence[int], *, strategy: str = "omnillm", rng: random.Random | None = None, **kw: Any
) -> KeyPool:
    extra = kw.pop("key", {})
    keys = [KeyConfig(label=f"k{i}", tpm=tpm, **extra) for i, tpm in enumerate(tpms)]
    return KeyPool(keys, strategy=strategy, rng=rng or FixedStart(0), **kw)


def hold(pool: KeyPool, i: int, tokens: int, now: float = 0.0) -> None:
    assert pool.keys[i].cap.try_acquire(tokens, now)


class Ordered(random.Random):
    """`sample` returns the population in the given order of positions (no randomness)."""

    def __init__(self, order: tuple[int, int]) -> None:
        super().__init__(0)
        self.order = order

    def sample(self, population: Sequence[Any], k: int, **kw: Any) -> list[Any]:  # type: ignore[override]
        return [population[i] for i in self.order]


# -- round-robin -------------------------------------------------------------------------------


def test_round_robin_walks_forward_from_the_last_pick() -> None:
    pool = make_pool([100, 100, 100], strategy="round-robin")
    assert [pool.select(10, 0.0) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_round_robin_skips_a_full_key_forward_not_backward() -> None:
    pool = make_pool([100, 100, 100, 100], strategy="round-robin")
    assert pool.select(10, 0.0) == 0
    hold(pool, 1, 100)  # key 1 full: the next pick after 0 is 2, not 3 or back to 0
    assert [pool.select(10, 0.0) for _ in range(4)] == [2, 3, 0, 2]
    pool.keys[2].dead = True
    assert [pool.select(10, 0.0) for _ in range(2)] == [3, 0]
    assert isinstance(pool.strategy, RoundRobinStrategy)
    assert pool.strategy.cursor == 1


def test_round_robin_with_nothing_fitting_keeps_its_cursor() -> None:
    pool = make_pool([100, 100], strategy="round-robin")
    assert pool.select(10, 0.0) == 0
    assert pool.select(500, 0.0) is None
    assert pool.select(10, 0.0) == 1


# -- least-loaded ------------------------------------------------------------------------------


def test_least_loaded_compares_fractions_of_each_keys_own_cap() -> None:
    pool = make_pool([1000, 100], strategy="least-loaded")
    hold(pool, 0, 300)  # 30% of its cap
    hold(pool, 1, 40)  # 40% of its cap, but fewer tokens
    assert pool.select(10, 0.0) == 0
    hold(pool, 0, 200)  # now 50%
    assert pool.select(10, 0.0) == 1


def test_least_loaded_breaks_ties_by_rpm_then_by_index() -> None:
    pool = make_pool([100, 100, 100], strategy="least-loaded")
    assert pool.select(10, 0.0) == 0  # all equal: the lowest index
    assert pool.keys[0].rpm.try_acquire(0.0)
    assert pool.select(10, 0.0) == 1  # same fraction, fewer requests in the window
    assert pool.keys[1].rpm.try_acquire(0.0)
    assert pool.select(10, 0.0) == 2
    hold(pool, 2, 100)  # full: not fitting, whatever its load
    assert pool.select(10, 0.0) == 0


# -- power-of-two ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_power_of_two_takes_the_less_loaded_of_its_two_draws(order: tuple[int, int]) -> None:
    pool = make_pool([100, 100], strategy="power-of-two", rng=Ordered(order))
    hold(pool, 1, 50)
    assert pool.select(10, 0.0) == 0  # whichever was drawn first
    hold(pool, 0, 60)
    assert pool.select(10, 0.0) == 1


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_power_of_two_tie_goes_to_the_first_draw(order: tuple[int, int]) -> None:
    pool = make_pool([100, 100], strategy="power-of-two", rng=Ordered(order))
    assert pool.select(10, 0.0) == order[0]


def test_power_of_two_with_one_or_no_fitting_key() -> None:
    pool = make_pool([100, 100, 100], strategy="power-of-two", rng=random.Random(1))
    hold(pool, 0, 100)
    hold(pool, 2, 100)
    assert pool.select(10, 0.0) == 1  # the only fitting key, no draw needed
    hold(pool, 1, 100)
    assert pool.select(10, 0.0) is None


def test_power_of_two_only_draws_fitting_keys() -> None:
    pool = make_pool([100] * 4, strategy="power-of-two", rng=random.Random(7))
    hold(pool, 0, 100)
    hold(pool, 3, 100)
    picks = {pool.select(10, 0.0) for _ in range(40)}
    assert picks == {1, 2}


# -- omnillm -----------------------------------------------------------------------------------


def test_omnillm_counts_its_attempts() -> None:
    pool = make_pool([100] * 4, rng=FixedStart(1), attempt_cap=3)
    strategy = pool.strategy
    assert isinstance(strategy, OmnillmStrategy)
    assert pool.select(10, 0.0) == 1 and strategy.last_attempts == 1
    hold(pool, 1, 100)
    hold(pool, 2, 100)
    assert pool.select(10, 0.0) == 3 and strategy.last_attempts == 3  # 1, 2 full; 3 fits
    hold(pool, 3, 100)
    assert pool.select(10, 0.0) is None and strategy.last_attempts == 3  # the cap, not 0
    pool.keys[2].dead = True
    assert pool.select(10, 0.0) == 0 and strategy.last_attempts == 3  # dead 2 is free


def test_omnillm_with_the_cap_above_the_keys_tries_each_key_once() -> None:
    pool = make_pool([100] * 3, rng=FixedStart(2), attempt_cap=10)
    for i in range(3):
        hold(pool, i, 100)
    assert pool.select(10, 0.0) is None
    assert pool.strategy.last_attempts == 3  # type: ignore[attr-defined]


def test_every_strategy_is_built_by_name() -> None:
    rng = random.Random(0)
    for name, cls in [
        ("omnillm", OmnillmStrategy),
        ("round-robin", RoundRobinStrategy),
        ("least-loaded", LeastLoadedStrategy),
        ("power-of-two", PowerOfTwoStrategy),
    ]:
        strategy = make_strategy(name, rng=rng, attempt_cap=2)
        assert isinstance(strategy, cls) and strategy.name == name
    assert set(STRATEGIES) == {"omnillm", "round-robin", "least-loaded", "power-of-two"}
    assert make_strategy("omnillm", rng=rng, attempt_cap=2).attempt_cap == 2  # type: ignore[attr-defined]
    for bad in ("fastest", None):
        with pytest.raises(ConfigError, match=r"must be one of least-loaded, omnillm, power-of"):
            make_strategy(bad, rng=rng)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"attempt_cap"):
        make_strategy("omnillm", rng=rng, attempt_cap=0)


# -- key state ---------------------------------------------------------------------------------


def test_cooldowns_only_grow_and_end_sharp() -> None:
    key = make_pool([100]).keys[0]
    assert not key.cooling(0.0) and key.cooling_until is None
    assert key.cool_down(10.0, 30.0) == 40.0
    assert key.cool_down(20.0, 5.0) == 40.0  # a shorter 429 does not shorten it
    assert key.cool_down(20.0, 25.0) == 45.0
    assert key.cooling(44.9) and not key.cooling(45.0)
    assert key.unavailable_reason(44.0) == "cooling"
    assert key.unavailable_reason(45.0) == ""


def test_key_status_and_stats_report_the_keys_state() -> None:
    pool = make_pool([100], key={"rpm": 7, "tokens_per_minute": 600}, token_buckets=True)
    key = pool.keys[0]
    hold(pool, 0, 30, 1.0)
    assert key.rpm.try_acquire(1.0)
    key.cool_down(1.0, 10.0)
    status = key.status(2.0)
    assert (status.label, status.available, status.dead, status.cooling_until) == (
        "k0", False, False, 11.0,
    )  # fmt: skip
    assert (status.inflight_tokens, status.rpm_used, status.tpm_limit, status.rpm_limit) == (
        30, 1, 100, 7,
    )  # fmt: skip
    assert (status.breaker, status.consecutive_failures) == ("closed", 0)
    assert key.status(11.0).cooling_until is None and key.status(11.0).available
    stats = key.stats()
    assert (stats.label, stats.dead, stats.cooling_until) == ("k0", False, 11.0)
    assert (stats.inflight.in_use, stats.rpm.admitted) == (30, 1)
    assert stats.bucket is not None and stats.bucket.limit == 600.0
    assert [s.label for s in pool.stats()] == ["k0"]
    assert [s.label for s in pool.status(12.0)] == ["k0"]
    assert len(pool) == 1


def test_a_token_bucket_exists_only_when_asked_for_and_configured() -> None:
    assert make_pool([100], key={"tokens_per_minute": 600}).keys[0].bucket is None
    assert make_pool([100], token_buckets=True).keys[0].bucket is None


def test_breaker_kinds_and_their_settings_reach_every_key() -> None:
    pool = make_pool([100, 100], breaker="safe", breaker_threshold=2, breaker_cooldown=7.0)
    key = pool.keys[1]
    t = key.breaker.acquire(0.0)
    assert not key.breaker.record_failure(t, 0.0)
    assert key.breaker.record_failure(key.breaker.acquire(0.0), 1.0)
    assert key.unavailable_reason(2.0) == "breaker open"
    assert key.breaker.state(8.0) == "half-open"
    assert pool.keys[0].breaker is not key.breaker
    with pytest.raises(ConfigError, match=r"must be one of faithful, safe"):
        make_pool([100], breaker="fragile")


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ([], r"must name at least one key"),
        ([KeyConfig(label="a"), KeyConfig(label="b"), KeyConfig(label="a")], r"\['a'\].*unique"),
    ],
)
def test_pool_refuses_bad_key_lists(keys: list[KeyConfig], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        KeyPool(keys, strategy="omnillm", rng=random.Random(0))


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"label": ""}, "label"),
        ({"label": "  "}, "label"),
        ({"label": "a", "rpm": 0}, "rpm"),
        ({"label": "a", "tpm": -1}, "tpm"),
        ({"label": "a", "tokens_per_minute": 0}, "tokens_per_minute"),
    ],
)
def test_key_config_names_the_bad_setting(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyConfig(**kwargs)
    assert info.value.parameter == parameter


# -- explain -----------------------------------------------------------------------------------


def test_explain_counts_unavailable_keys_by_reason() -> None:
    pool = make_pool([100] * 4)
    pool.keys[0].dead = True
    pool.keys[1].dead = True
    pool.keys[2].cool_down(0.0, 10.0)
    t = pool.keys[3].breaker.acquire(0.0)
    for _ in range(5):
        pool.keys[3].breaker.record_failure(t, 0.0)
    assert pool.explain(10, 1.0) == (False, "no available key (1 breaker open, 1 cooling, 2 dead)")


def test_explain_no_room_and_attempt_cap() -> None:
    pool = make_pool([100] * 3, attempt_cap=1)
    pool.keys[0].dead = True
    assert pool.explain(500, 0.0) == (
        False, "no available key has in-flight room for 500 tokens (2 available)",
    )  # fmt: skip
    hold(pool, 1, 100)
    assert pool.explain(10, 0.0) == (
        False, "attempt cap (1) reached: 1 of 2 available keys had room but were not tried",
    )  # fmt: skip


def test_explain_rate_limited_only_when_rate_counts_in_selection() -> None:
    pool = make_pool([100, 100], key={"rpm": 1}, rate_in_selection=True)
    for key in pool.keys:
        assert key.rpm.try_acquire(0.0)
    assert pool.select(10, 1.0) is None
    rate_limited, detail = pool.explain(10, 1.0)
    assert rate_limited and detail.startswith("every available key with room is rate limited")
    assert "'k0': window full" in detail
    loose = make_pool([100], key={"rpm": 1})
    assert loose.keys[0].rpm.try_acquire(0.0)
    assert loose.select(10, 1.0) == 0  # the faithful pool ignores RPM in selection


def test_explain_names_a_drained_token_bucket() -> None:
    pool = make_pool(
        [1000], key={"tokens_per_minute": 60}, rate_in_selection=True, token_buckets=True
    )
    assert pool.keys[0].bucket is not None and pool.keys[0].bucket.try_acquire(60, 0.0)
    assert pool.select(10, 1.0) is None
    rate_limited, detail = pool.explain(10, 1.0)
    assert rate_limited and "10 tokens requested, 1.0 of 60 available" in detail
    assert pool.select(10, 10.0) == 0  # ten seconds refill ten tokens


# -- defaults (omnillm 0.1.5's, reference sections 3-4) ----------------------------------------


def test_key_defaults_are_omnillms() -> None:
    key = KeyConfig(label="a")
    assert (key.rpm, key.tpm, key.tokens_per_minute) == (500, 90_000, None)
    with pytest.raises(TypeError):
        KeyConfig("a")  # type: ignore[misc]  # keyword-only
    assert DEFAULT_RETRY_AFTER == 60.0  # omnillm's cooldown for a 429 without Retry-After


def test_pool_defaults_are_omnillms() -> None:
    pool = KeyPool([KeyConfig(label="a", rpm=1)], strategy="omnillm", rng=random.Random(0))
    strategy = pool.strategy
    assert isinstance(strategy, OmnillmStrategy)
    assert (strategy.attempt_cap, strategy.last_attempts) == (5, 0)
    assert make_strategy("omnillm", rng=random.Random(0)).attempt_cap == 5  # type: ignore[attr-defined]
    assert OmnillmStrategy(rng=random.Random(0)).attempt_cap == 5
    key = pool.keys[0]
    assert key.index == 0
    # The RPM window is 60 s, closed: an admission at 0 still counts at 60.
    assert key.rpm.try_acquire(0.0)
    assert pool.explain(10, 60.0)[0] is False  # faithful selection ignores RPM ...
    assert not key.rpm.test(60.0) and key.rpm.test(60.5)  # ... but the window is 60 s
    # Five failures open the breaker for 30 s.
    t = key.breaker.acquire(0.0)
    for _ in range(5):
        key.breaker.record_failure(t, 1.0)
    assert not key.available(30.9) and key.available(31.0)
    safe = KeyPool([KeyConfig(label="a")], strategy="omnillm", rng=random.Random(0), breaker="safe")
    b = safe.keys[0].breaker
    for _ in range(5):
        b.record_failure(b.acquire(0.0), 0.0)
    assert b.state(30.0) == "half-open"
    b.acquire(30.0)
    assert not b.allow(30.0)  # one probe


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"breaker_threshold": 0}, "breaker_threshold"),
        ({"breaker_cooldown": 0.0}, "breaker_cooldown"),
        ({"half_open_probes": 0}, "half_open_probes"),  # checked even for the faithful breaker
        ({"attempt_cap": 0}, "attempt_cap"),
    ],
)
def test_pool_settings_are_config_errors(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyPool([KeyConfig(label="a")], strategy="omnillm", rng=random.Random(0), **kwargs)
    assert info.value.parameter == parameter


def test_pool_records_are_frozen() -> None:
    pool = make_pool([100])
    for record, field in ((KeyConfig(label="a"), "rpm"), (pool.keys[0].status(0.0), "dead"),
                          (pool.keys[0].stats(), "dead")):  # fmt: skip
        with pytest.raises(AttributeError):
            setattr(record, field, 1)
