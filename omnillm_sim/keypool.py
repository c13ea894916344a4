"""API keys, their per-key state, and the strategies that pick a key for a request.

A `KeyState` is one key: a dead flag (401, and 403 under the faithful policy), a 429 cooldown
(``max(old, now + retry_after)``, kept in integer microseconds; under the faithful policy on
omnillm's millisecond wall clock), a circuit breaker, omnillm's in-flight token cap ("TPM"),
the RPM sliding window, and optionally a true per-minute `TokenBucket`.

A key is *available* when it is not dead, not cooling and its breaker allows a call. RPM is
not part of availability (as in omnillm); a `KeyPool` built with ``rate_in_selection=True``
(the safe policy) also treats a key whose RPM window or token bucket is full as not fitting.

Strategies (`STRATEGIES`, chosen by name) see the pool through a `PoolView` and return the
index of a key that is available and fits, or ``None``:

* ``omnillm`` — uniform random start (from the injected ``random.Random``), one pass over
  the ring, first fit; at most ``attempt_cap`` *available* keys are examined (unavailable
  keys are skipped for free), so with more than ``attempt_cap`` available keys free capacity
  further along the ring can be missed (reference section 3).
* ``round-robin`` — the next key after the previous pick that fits.
* ``least-loaded`` — the fitting key with the smallest in-flight fraction (ties: fewer
  requests in the RPM window, then lowest index).
* ``power-of-two`` — two distinct fitting keys drawn at random, the less loaded one wins.

Cost per choice, flat in the number of keys where the straightforward scan is linear:
``least-loaded`` keeps the keys in a heap by (load, index), refreshed only for keys whose
limiters moved (their ``watch`` hook) or whose RPM window lost an entry with time, and takes
the first available, fitting key from the top; ``power-of-two`` over more than
`SAMPLE_FROM` keys draws keys at random until two distinct ones fit (a uniform pair of
fitting keys, as the scan-and-sample it falls back to after a few misses). The pool's
per-request view converts ``now`` to microseconds once and answers "available and fits" in
one call per key. What stays linear: ``omnillm`` and ``round-robin`` walk past unavailable
and non-fitting keys one by one (free when most keys fit), and `KeyPool.explain` (the
detail of a refusal) counts every key, in one pass.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from omnillm_sim.breaker import BreakerState, BreakerStats, FaithfulBreaker, SafeBreaker
from omnillm_sim.errors import ConfigError, InvalidValueError
from omnillm_sim.ratelimit import InflightTokenCap, LimiterStats, SlidingWindowLog, TokenBucket
from omnillm_sim.timebase import millisecond_deadline, to_micros, to_seconds
from omnillm_sim.validate import positive_float, positive_int

__all__ = [
    "STRATEGIES",
    "KeyConfig",
    "KeyPool",
    "KeyState",
    "KeyStats",
    "KeyStatus",
    "LeastLoadedStrategy",
    "OmnillmStrategy",
    "PoolView",
    "PowerOfTwoStrategy",
    "RoundRobinStrategy",
    "Strategy",
    "make_strategy",
]

RPM_WINDOW = 60.0
DEFAULT_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyConfig:
    """One API key: ``rpm`` requests per 60 s window, ``tpm`` tokens in flight (omnillm's
    "TPM"), and optionally a true ``tokens_per_minute`` limit (enforced by the safe policy).

    Raises:
        ConfigError: empty label; ``rpm``, ``tpm`` or ``tokens_per_minute`` not an int > 0.
    """

    label: str
    rpm: int = 500
    tpm: int = 90_000
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ConfigError("label", self.label, "must be a non-empty string")
        where = f"key {self.label!r}"
        for name in ("rpm", "tpm"):
            _config(positive_int, name, getattr(self, name), where)
        if self.tokens_per_minute is not None:
            _config(positive_int, "tokens_per_minute", self.tokens_per_minute, where)


def _config(check: Callable[..., object], name: str, value: object, source: str) -> None:
    """Run a `validate` check, re-raising its error as a `ConfigError`."""
    try:
        check(name, value, source=source)
    except InvalidValueError as exc:
        raise ConfigError(exc.parameter, exc.value, exc.rule, source=exc.source) from None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A key's state at one moment (what ``Gateway.key_status(now)`` returns)."""

    label: str
    available: bool
    dead: bool
    cooling_until: float | None
    breaker: BreakerState
    inflight_tokens: int
    rpm_used: int
    tpm_limit: int
    rpm_limit: int
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class KeyStats:
    """Counters of one key's limiters and breaker (see `KeyStatus` for its state at a time)."""

    label: str
    dead: bool
    cooling_until: float | None
    inflight: LimiterStats
    rpm: LimiterStats
    bucket: LimiterStats | None
    breaker: BreakerStats


class KeyState:
    """One key's mutable state; the pool and the gateway change it, strategies only read it."""

    __slots__ = (
        "_cool_us",
        "breaker",
        "bucket",
        "cap",
        "config",
        "dead",
        "index",
        "label",
        "rpm",
    )

    def __init__(
        self,
        index: int,
        config: KeyConfig,
        breaker: FaithfulBreaker | SafeBreaker,
        *,
        token_bucket: bool,
    ) -> None:
        self.index = index
        self.label = config.label
        self.config = config
        self.cap = InflightTokenCap(config.tpm)
        self.rpm = SlidingWindowLog(config.rpm, RPM_WINDOW)
        self.bucket = (
            TokenBucket(config.tokens_per_minute)
            if token_bucket and config.tokens_per_minute is not None
            else None
        )
        self.breaker = breaker
        self.dead = False
        self._cool_us: int | None = None  # the 429 deadline in microseconds

    @property
    def cooling_until(self) -> float | None:
        """The 429 deadline in seconds (``None``: never rate limited)."""
        return None if self._cool_us is None else to_seconds(self._cool_us)

    @cooling_until.setter
    def cooling_until(self, value: float | None) -> None:
        self._cool_us = None if value is None else to_micros(value, "cooling_until")

    def cooling(self, now: float) -> bool:
        """True while a 429 cooldown runs (``now < cooling_until``, compared in microseconds)."""
        return self._cool_us is not None and to_micros(now) < self._cool_us

    def available(self, now: float) -> bool:
        """Not dead, not cooling, and the breaker allows a call (RPM is not considered)."""
        return not self.dead and not self.cooling(now) and self.breaker.allow(now)

    def unavailable_reason(self, now: float) -> str:
        """Why the key is unavailable ("" if it is available)."""
        if self.dead:
            return "dead"
        if self.cooling(now):
            return "cooling"
        if not self.breaker.allow(now):
            return f"breaker {self.breaker.state(now)}"
        return ""

    def cool_down(self, now: float, retry_after: float, *, wall_clock_ms: bool = False) -> float:
        """A 429: ``cooling_until = max(old, now + retry_after)``; returns the new deadline.

        ``wall_clock_ms``: omnillm's ``now_millis() + retry_after.as_millis()``, both terms
        truncated to whole milliseconds (a 1 s cooldown from 1.000600 s ends at 2.000000 s).
        """
        now_us = to_micros(now)
        delay_us = to_micros(retry_after, "retry_after")
        until = millisecond_deadline(now_us, delay_us) if wall_clock_ms else now_us + delay_us
        if self._cool_us is None or until > self._cool_us:
            self._cool_us = until
        return to_seconds(self._cool_us)

    def status(self, now: float) -> KeyStatus:
        """A `KeyStatus` snapshot at ``now``."""
        return KeyStatus(
            label=self.label,
            available=self.available(now),
            dead=self.dead,
            cooling_until=self.cooling_until if self.cooling(now) else None,
            breaker=self.breaker.state(now),
            inflight_tokens=self.cap.inflight,
            rpm_used=self.rpm.count(now),
            tpm_limit=self.config.tpm,
            rpm_limit=self.config.rpm,
            consecutive_failures=self.breaker.consecutive_failures,
        )

    def stats(self) -> KeyStats:
        """Counters of this key's limiters and breaker."""
        return KeyStats(
            self.label,
            self.dead,
            self.cooling_until,
            self.cap.stats(),
            self.rpm.stats(),
            self.bucket.stats() if self.bucket is not None else None,
            self.breaker.stats(),
        )

    def __repr__(self) -> str:
        flags = " dead" if self.dead else ""
        if self._cool_us is not None:
            flags += f" cooling_until={to_seconds(self._cool_us):g}"
        return (
            f"<KeyState #{self.index} {self.label!r}{flags} inflight={self.cap.inflight}/"
            f"{self.config.tpm} rpm={len(self.rpm._log)}/{self.config.rpm} {self.breaker!r}>"
        )


class PoolView(Protocol):
    """What a strategy may ask about the keys for one request at one moment."""

    def __len__(self) -> int: ...
    def available(self, i: int) -> bool: ...
    def fits(self, i: int) -> bool: ...
    def load(self, i: int) -> tuple[float, int]: ...


class Strategy(Protocol):
    """Picks a key index that is available and fits, or returns ``None``."""

    name: str

    def choose(self, view: PoolView) -> int | None: ...


class OmnillmStrategy:
    """omnillm's ``KeyPool::acquire``: random start, one pass, first fit, capped attempts."""

    name = "omnillm"

    def __init__(self, *, rng: random.Random, attempt_cap: int = 5) -> None:
        self.rng = rng
        self.attempt_cap = positive_int("attempt_cap", attempt_cap)
        self.last_attempts = 0

    @property
    def rng(self) -> random.Random:
        """The random stream of the start index."""
        return self._rng

    @rng.setter
    def rng(self, rng: random.Random) -> None:
        self._rng = rng
        self._randrange = _randrange(rng)  # looked up once, not per request

    def choose(self, view: PoolView) -> int | None:
        pool = type(view) is _View  # the pool's own view: its keys' count without __len__
        n = len(view.keys) if pool else len(view)  # type: ignore[attr-defined]
        if n == 0:
            self.last_attempts = 0
            return None
        start = self._randrange(n)
        if pool and view.usable(start):  # type: ignore[attr-defined]  # the first key tried
            self.last_attempts = 1
            return start
        attempts, cap = 0, self.attempt_cap
        for i in range(n):
            if attempts >= cap:
                break
            k = start + i
            if k >= n:
                k -= n
            if not view.available(k):
                continue  # skipped without using an attempt
            attempts += 1
            if view.fits(k):
                self.last_attempts = attempts
                return k
        self.last_attempts = attempts
        return None

    def __repr__(self) -> str:
        return f"<OmnillmStrategy attempt_cap={self.attempt_cap}>"


class RoundRobinStrategy:
    """The first key after the previous pick that is available and fits."""

    name = "round-robin"

    def __init__(self, *, rng: random.Random, attempt_cap: int = 5) -> None:
        self.cursor = 0

    def choose(self, view: PoolView) -> int | None:
        n = len(view)
        usable = _usable_lighter(view)[0]
        for i in range(n):
            k = (self.cursor + i) % n
            if usable(k):
                self.cursor = (k + 1) % n
                return k
        return None

    def __repr__(self) -> str:
        return f"<RoundRobinStrategy cursor={self.cursor}>"


def least_loaded_scan(view: PoolView) -> int | None:
    """``least-loaded`` the straightforward way: every key, the smallest (load, index)."""
    best: int | None = None
    best_load: tuple[float, int] | None = None
    for k in range(len(view)):
        if view.available(k) and view.fits(k):
            load = view.load(k)
            if best_load is None or load < best_load:
                best, best_load = k, load
    return best


class LeastLoadedStrategy:
    """The available, fitting key with the smallest load (in-flight fraction, RPM count).

    Over a pool's own view, an index: a heap of ``(fraction, rpm count, index, version)``,
    an entry per key refreshed when that key's in-flight cap or RPM window changes (the
    limiters' ``watch`` hook marks it) or an RPM entry of it expires (a heap of expiry
    times); the answer is the first available, fitting key from the top, the same key as
    `least_loaded_scan`. Any other `PoolView` is scanned.
    """

    name = "least-loaded"

    def __init__(self, *, rng: random.Random, attempt_cap: int = 5) -> None:
        self._keys: Sequence[KeyState] | None = None
        self._heap: list[tuple[float, int, int, int]] = []
        self._version: list[int] = []
        self._dirty: set[int] = set()
        self._expiries: list[tuple[int, int]] = []  # (last microsecond an RPM entry counts, key)

    def _attach(self, keys: Sequence[KeyState]) -> None:
        self._keys = keys
        self._version = [0] * len(keys)
        self._dirty = set(range(len(keys)))
        self._heap = []
        self._expiries = []
        for i, key in enumerate(keys):
            key.cap.watch = partial(self._dirty.add, i)
            key.rpm.watch = partial(self._logged, i)
            # entries logged before this strategy first saw the pool expire too
            self._expiries.extend((t + key.rpm._window_us, i) for t in key.rpm._log)
        heapq.heapify(self._expiries)

    def _logged(self, i: int) -> None:
        key = self._keys[i]  # type: ignore[index]
        self._dirty.add(i)
        heapq.heappush(self._expiries, (key.rpm._last + key.rpm._window_us, i))

    def _sync(self, now: float, now_us: int) -> None:
        expiries, dirty = self._expiries, self._dirty
        while expiries and expiries[0][0] < now_us:  # an entry counts until exactly then
            dirty.add(heapq.heappop(expiries)[1])
        if dirty:
            keys, version, heap = self._keys, self._version, self._heap
            assert keys is not None
            push = heapq.heappush
            for i in dirty:
                key = keys[i]
                v = version[i] = version[i] + 1
                cap = key.cap
                push(heap, (cap._inflight / cap._limit, key.rpm.count_at(now, now_us), i, v))
            dirty.clear()
            if len(heap) > 4 * len(keys) + 64:  # drop superseded entries now and then
                self._heap = [e for e in heap if e[3] == version[e[2]]]
                heapq.heapify(self._heap)

    def choose(self, view: PoolView) -> int | None:
        if type(view) is not _View:
            return least_loaded_scan(view)
        keys = view.keys
        if keys is not self._keys:
            self._attach(keys)
        self._sync(view.now, view.now_us)
        heap, version = self._heap, self._version
        aside: list[tuple[float, int, int, int]] = []
        chosen: int | None = None
        while heap:
            entry = heap[0]
            i = entry[2]
            if entry[3] != version[i]:
                heapq.heappop(heap)
                continue
            if view.usable(i):
                chosen = i
                break
            aside.append(heapq.heappop(heap))
        for entry in aside:
            heapq.heappush(heap, entry)
        return chosen

    def __repr__(self) -> str:
        return "<LeastLoadedStrategy>"


def _randrange(rng: random.Random) -> Callable[[int], int]:
    """``rng.randrange`` for one argument; a plain `random.Random`'s ``_randbelow``, which
    ``randrange(n)`` returns after checking its arguments (the same numbers, less work)."""
    if type(rng).randrange is random.Random.randrange and hasattr(rng, "_randbelow"):
        return rng._randbelow  # type: ignore[no-any-return]
    return rng.randrange


def _usable_lighter(
    view: PoolView,
) -> tuple[Callable[[int], bool], Callable[[int, int], int]]:
    """``available and fits``, and the less loaded of ``(a, b)`` (ties: ``a``), from the
    pool's own view in one call each, or composed from any other view's methods."""
    if type(view) is _View:
        return view.usable, view.lighter

    def usable(i: int) -> bool:
        return view.available(i) and view.fits(i)

    def lighter(a: int, b: int) -> int:
        return b if view.load(b) < view.load(a) else a

    return usable, lighter


SAMPLE_FROM = 16
"""`PowerOfTwoStrategy` samples keys at random in pools larger than this (else it scans)."""
_DRAWS = 8


class PowerOfTwoStrategy:
    """Two distinct available, fitting keys at random; the less loaded one (ties: first).

    In a pool of more than `SAMPLE_FROM` keys, up to a few random draws per key find the
    two (rejection sampling: a uniform pair of distinct fitting keys); when the draws miss
    (few keys fit), and in small pools, all fitting keys are listed and two sampled.
    """

    name = "power-of-two"

    def __init__(self, *, rng: random.Random, attempt_cap: int = 5) -> None:
        self.rng = rng

    def choose(self, view: PoolView) -> int | None:
        n = len(view)
        if n > SAMPLE_FROM:
            randrange = _randrange(self.rng)
            usable, lighter = _usable_lighter(view)
            for _ in range(_DRAWS):
                a = randrange(n)
                if usable(a):
                    for _ in range(_DRAWS):
                        b = randrange(n)
                        if b != a and usable(b):
                            return lighter(a, b)
                    break
        fitting = [k for k in range(n) if view.available(k) and view.fits(k)]
        if len(fitting) <= 1:
            return fitting[0] if fitting else None
        a, b = self.rng.sample(fitting, 2)
        return b if view.load(b) < view.load(a) else a

    def __repr__(self) -> str:
        return "<PowerOfTwoStrategy>"


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "omnillm": OmnillmStrategy,
    "round-robin": RoundRobinStrategy,
    "least-loaded": LeastLoadedStrategy,
    "power-of-two": PowerOfTwoStrategy,
}
"""Selection strategies by name; each is built with ``(rng=..., attempt_cap=...)``."""


def make_strategy(name: str, *, rng: random.Random, attempt_cap: int = 5) -> Strategy:
    """A strategy by name.

    Raises:
        ConfigError: unknown name, or ``attempt_cap`` not an int > 0.
    """
    try:
        cls = STRATEGIES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            "strategy", name, f"must be one of {', '.join(sorted(STRATEGIES))}"
        ) from None
    _config(positive_int, "attempt_cap", attempt_cap, "")
    return cls(rng=rng, attempt_cap=attempt_cap)


class _View:
    """The pool as one request sees it at one moment (``tokens`` at ``now``).

    ``now`` is converted to microseconds once per request, not once per key looked at; the
    answers are those of `KeyState.available`, `InflightTokenCap.test`,
    `SlidingWindowLog.test` and `TokenBucket.test` at ``now``.
    """

    __slots__ = ("keys", "now", "now_us", "rate_in_selection", "tokens")

    def __init__(
        self, keys: Sequence[KeyState], tokens: int, now: float, rate_in_selection: bool,
        now_us: int | None = None,
    ) -> None:
        self.keys = keys
        self.tokens = tokens
        self.now = now
        self.now_us = to_micros(now) if now_us is None else now_us
        self.rate_in_selection = rate_in_selection

    def __len__(self) -> int:
        return len(self.keys)

    def available(self, i: int) -> bool:
        key = self.keys[i]
        if key.dead:
            return False
        cool = key._cool_us
        if cool is not None and self.now_us < cool:
            return False
        return key.breaker.allow(self.now)

    def has_room(self, i: int) -> bool:
        return self.keys[i].cap.has_room_at(self.tokens, self.now, self.now_us)

    def rate_ok(self, i: int) -> bool:
        key = self.keys[i]
        rpm = key.rpm
        if rpm.count_at(self.now, self.now_us) >= rpm.limit:
            return False
        return key.bucket is None or bool(key.bucket.test(self.tokens, self.now))

    def fits(self, i: int) -> bool:
        if not self.keys[i].cap.has_room_at(self.tokens, self.now, self.now_us):
            return False
        return not self.rate_in_selection or self.rate_ok(i)

    def load(self, i: int) -> tuple[float, int]:
        key = self.keys[i]
        cap = key.cap
        return (cap.inflight / cap.limit, key.rpm.count_at(self.now, self.now_us))

    def usable(self, i: int) -> bool:
        """``available(i) and fits(i)`` in one call (the strategies' hot path)."""
        key = self.keys[i]
        if key.dead:
            return False
        cool = key._cool_us
        if cool is not None and self.now_us < cool:
            return False
        if not key.breaker.allow(self.now):
            return False
        if not key.cap.has_room_at(self.tokens, self.now, self.now_us):
            return False
        return not self.rate_in_selection or self.rate_ok(i)

    def lighter(self, a: int, b: int) -> int:
        """``b if load(b) < load(a) else a``."""
        ka, kb = self.keys[a], self.keys[b]
        now, now_us = self.now, self.now_us
        count_b = kb.rpm.count_at(now, now_us)  # both pruned, in `load`'s order
        count_a = ka.rpm.count_at(now, now_us)
        fa = ka.cap._inflight / ka.cap._limit
        fb = kb.cap._inflight / kb.cap._limit
        return b if fb < fa or (fb == fa and count_b < count_a) else a


class KeyPool:
    """The keys of one gateway and the strategy that picks among them.

    ``breaker`` is ``"faithful"`` or ``"safe"``; ``rate_in_selection`` makes a key whose RPM
    window (or token bucket, with ``token_buckets``) is full not fit.

    Raises:
        ConfigError: no keys, duplicate labels, unknown strategy or breaker, bad numbers.
    """

    def __init__(
        self,
        keys: Sequence[KeyConfig],
        *,
        strategy: str,
        rng: random.Random,
        attempt_cap: int = 5,
        breaker: str = "faithful",
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        half_open_probes: int = 1,
        rate_in_selection: bool = False,
        token_buckets: bool = False,
    ) -> None:
        if not keys:
            raise ConfigError("keys", tuple(keys), "must name at least one key")
        labels = [k.label for k in keys]
        counts = Counter(labels)
        dupes = sorted(label for label, n in counts.items() if n > 1)
        if dupes:
            raise ConfigError("keys", dupes, "labels must be unique")
        _config(positive_int, "breaker_threshold", breaker_threshold, "")
        _config(positive_float, "breaker_cooldown", breaker_cooldown, "")
        _config(positive_int, "half_open_probes", half_open_probes, "")

        def make_breaker() -> FaithfulBreaker | SafeBreaker:
            if breaker == "faithful":
                return FaithfulBreaker(breaker_threshold, breaker_cooldown)
            if breaker == "safe":
                return SafeBreaker(breaker_threshold, breaker_cooldown, half_open_probes)
            raise ConfigError("breaker", breaker, "must be one of faithful, safe")

        self.keys: tuple[KeyState, ...] = tuple(
            KeyState(i, k, make_breaker(), token_bucket=token_buckets) for i, k in enumerate(keys)
        )
        self.strategy = make_strategy(strategy, rng=rng, attempt_cap=attempt_cap)
        self.rate_in_selection = rate_in_selection
        # placeholders: `select` sets tokens, now and now_us before every use
        self._view = _View(self.keys, 0, 0.0, rate_in_selection, 0)  # pragma: no mutate

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, tokens: int, now: float, now_us: int | None = None) -> int | None:
        """The index of the key the strategy picks for ``tokens`` at ``now``, or ``None``.

        ``now_us`` is ``to_micros(now)`` if the caller has it already. Consumes nothing: the
        caller commits the key's limits.
        """
        view = self._view  # one view, re-aimed per request (strategies keep no reference)
        view.tokens = tokens
        view.now = now
        view.now_us = to_micros(now) if now_us is None else now_us
        view.rate_in_selection = self.rate_in_selection
        return self.strategy.choose(view)

    def explain(self, tokens: int, now: float) -> tuple[bool, str]:
        """Why `select` found no key: ``(rate_limited, detail)``.

        ``rate_limited`` is True when some available key had in-flight room but every such
        key was refused by its RPM window or token bucket (only with ``rate_in_selection``).
        """
        view = _View(self.keys, tokens, now, self.rate_in_selection)
        reasons: dict[str, int] = {}
        available = fitting = 0
        first: KeyState | None = None  # the first available key with in-flight room
        for i, key in enumerate(self.keys):  # one pass: a refusal reads each key once
            if not view.available(i):
                why = key.unavailable_reason(now)
                reasons[why] = reasons.get(why, 0) + 1
                continue
            available += 1
            if view.has_room(i):
                if first is None:
                    first = key
                if not self.rate_in_selection or view.rate_ok(i):
                    fitting += 1
        if not available:
            parts = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
            return False, f"no available key ({parts})"
        if first is None:
            return False, (
                f"no available key has in-flight room for {tokens} tokens"
                f" ({available} available)"
            )
        if not fitting:
            why = first.rpm.test(now).reason or (
                first.bucket.test(tokens, now).reason if first.bucket is not None else ""
            )
            return True, (
                f"every available key with room is rate limited (e.g. {first.label!r}: {why})"
            )
        cap = getattr(self.strategy, "attempt_cap", None)
        return False, (
            f"attempt cap ({cap}) reached: {fitting} of {available} available keys"
            " had room but were not tried"
        )

    def status(self, now: float) -> list[KeyStatus]:
        """Every key's `KeyStatus` at ``now``."""
        return [key.status(now) for key in self.keys]

    def stats(self) -> list[KeyStats]:
        """Every key's counters."""
        return [key.stats() for key in self.keys]

    def __repr__(self) -> str:
        return f"<KeyPool {len(self.keys)} keys strategy={self.strategy.name} {list(self.keys)}>"
