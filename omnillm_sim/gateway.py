"""The clock-free gateway: admit a request, later finish it with its outcome.

``Gateway.admit(request, now)`` estimates the request, picks a key, reserves budget and
rate-limit capacity, and returns an `Admission` (or a `Rejection` with a `RejectReason`).
``Gateway.finish(admission, outcome, now)`` settles the budget, releases the key's in-flight
tokens, updates the key's health (dead / 429 cooldown / breaker), and returns a `Settlement`.
Every admission must be finished exactly once; a second finish raises
`ReservationStateError`. Nothing here sleeps or reads a clock.

The policy (``omnillm-0.1.5`` or ``safe``, see `omnillm_sim.policy`) decides the order of the
checks and every behaviour in which the two differ:

* ``omnillm-0.1.5``: acquire a key and its in-flight tokens -> ``budget.try_reserve`` -> the
  chosen key's RPM window (a full window refunds the budget in full, ``settle(est, 0)``, and
  rejects ``RATE_LIMITED``; other keys are not tried).
* ``safe``: choose among keys whose in-flight cap, RPM window and token bucket all have room
  -> ``budget.reserve`` (a `Reservation` handle) -> commit the key's limits.

>>> from random import Random
>>> from omnillm_sim.budget import BudgetTracker
>>> from omnillm_sim.pricing import Usage, catalogue
>>> gw = Gateway(GatewayConfig(keys=(KeyConfig(label="a"),)), budget=BudgetTracker("1.00"),
...              prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=Random(0))
>>> adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=100, max_output_tokens=1024),
...                now=0.0)
>>> adm.estimate.cost            # (400 // 4 + 1024) tokens x $5/M, all at the input rate
5620
>>> gw.finish(adm, ok(Usage(100, 1024)), now=2.0).charged     # 500 + 15,360
15860
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from omnillm_sim.breaker import Ticket
from omnillm_sim.budget import BudgetStats, BudgetTracker, Reservation, SeedBudgetTracker
from omnillm_sim.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidValueError,
    ReservationStateError,
)
from omnillm_sim.estimate import Estimate, EstimateRequest, Estimator, get_estimator
from omnillm_sim.keypool import (
    DEFAULT_RETRY_AFTER,
    STRATEGIES,
    KeyConfig,
    KeyPool,
    KeyState,
    KeyStatus,
)
from omnillm_sim.keypool import _config as _check_config
from omnillm_sim.money import MicroDollar
from omnillm_sim.policy import Policy, get_policy
from omnillm_sim.pricing import PriceTable, Usage
from omnillm_sim.timebase import to_micros
from omnillm_sim.validate import non_negative_float, non_negative_int, positive_float, positive_int

_new = tuple.__new__  # a named tuple built without a Python frame (its checks already done)

__all__ = [
    "Admission",
    "Gateway",
    "GatewayConfig",
    "GatewayStats",
    "KeyConfig",
    "KeyEffect",
    "KeyStatus",
    "Outcome",
    "OutcomeKind",
    "RejectReason",
    "Rejection",
    "Request",
    "Settlement",
    "cancelled",
    "completed_then_cancelled",
    "http_error",
    "ok",
    "omnillm_retry_after",
    "seconds_retry_after",
    "stream_abandoned",
    "stream_dropped",
    "timeout",
]


class _RequestFields(NamedTuple):
    id: int
    model: str
    prompt_tokens: int
    max_output_tokens: int | None
    prompt_bytes: int | None
    stream: bool


class Request(_RequestFields):
    """One LLM request as the gateway sees it (keyword arguments only).

    ``prompt_tokens`` is the true prompt size; ``prompt_bytes`` what omnillm's bytes/4
    heuristic sees (``None``: ``4 * prompt_tokens``).

    An immutable named tuple, not a frozen dataclass: one is made per simulated request, and
    a frozen dataclass costs several times as much to construct. A driver that already holds
    validated values may build one with ``Request._make((id, model, prompt_tokens,
    max_output_tokens, prompt_bytes, stream))``, which skips the checks.

    Raises:
        InvalidValueError: a negative or non-integer count, an empty model, a non-bool stream.
    """

    __slots__ = ()

    def __new__(
        cls,
        *,
        id: int,
        model: str,
        prompt_tokens: int,
        max_output_tokens: int | None = None,
        prompt_bytes: int | None = None,
        stream: bool = False,
    ) -> Request:
        if type(id) is not int:
            raise InvalidValueError("id", id, "must be an integer")
        if not isinstance(model, str) or not model.strip():
            raise InvalidValueError("model", model, "must be a non-empty model name")
        non_negative_int("prompt_tokens", prompt_tokens)
        if max_output_tokens is not None:
            non_negative_int("max_output_tokens", max_output_tokens)
        if prompt_bytes is not None:
            non_negative_int("prompt_bytes", prompt_bytes)
        if not isinstance(stream, bool):
            raise InvalidValueError("stream", stream, "must be True or False")
        return _new(cls, (id, model, prompt_tokens, max_output_tokens, prompt_bytes, stream))

    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, object]]:
        return (), self._asdict()  # copy and pickle through the keyword-only constructor

    @property
    def bytes(self) -> int:
        """The prompt's UTF-8 length as the estimator sees it."""
        return 4 * self.prompt_tokens if self.prompt_bytes is None else self.prompt_bytes


class RejectReason(enum.Enum):
    """Why `Gateway.admit` refused a request."""

    NO_KEY = "no-key"
    BUDGET = "budget"
    RATE_LIMITED = "rate-limited"


OutcomeKind = Literal[
    "ok",
    "http_error",
    "timeout",
    "cancelled",
    "stream_dropped",
    "stream_abandoned",
    "completed_then_cancelled",
]
_KINDS = frozenset(OutcomeKind.__args__)  # type: ignore[attr-defined]
_ESTIMATES_KEPT = 4096  # request shapes whose estimate a gateway keeps
_STREAM_ONLY = frozenset(("stream_dropped", "stream_abandoned", "completed_then_cancelled"))


class _OutcomeFields(NamedTuple):
    kind: OutcomeKind
    usage: Usage | None
    status: int | None
    retry_after: float | str | None
    cost: MicroDollar | None


class Outcome(_OutcomeFields):
    """How an admitted call ended. Build it with `ok`, `http_error`, `timeout`, `cancelled`,
    `stream_dropped`, `stream_abandoned` or `completed_then_cancelled`.

    ``retry_after`` is the raw ``retry-after`` header (a string; each policy parses it its own
    way) or a number of seconds.

    ``cost`` (µ$), when set, is what the provider really billed (a replayed log's bill): the
    gateway charges exactly that, for any outcome, instead of pricing or guessing.

    An immutable named tuple (one is made per simulated request).

    Raises:
        InvalidValueError: a status outside 400-599, a negative or non-finite numeric
            retry_after, a usage that is not a `Usage`, a cost that is not an int >= 0.
    """

    __slots__ = ()

    def __new__(
        cls,
        kind: OutcomeKind,
        usage: Usage | None = None,
        status: int | None = None,
        retry_after: float | str | None = None,
        cost: MicroDollar | None = None,
    ) -> Outcome:
        if cost is not None:
            non_negative_int("cost", cost)
        if kind not in _KINDS:
            raise InvalidValueError("kind", kind, "is not an outcome kind")
        if usage is not None and not isinstance(usage, Usage):
            raise InvalidValueError("usage", usage, "must be a Usage")
        if kind in ("ok", "completed_then_cancelled") and usage is None:
            raise InvalidValueError("usage", None, f"is required for {kind}()")
        if kind == "http_error":
            if type(status) is not int or not 400 <= status <= 599:
                raise InvalidValueError("status", status, "must be an HTTP error 400-599")
            if retry_after is not None and not isinstance(retry_after, str):
                non_negative_float("retry_after", retry_after)
        return _new(cls, (kind, usage, status, retry_after, cost))


_TIMEOUT = Outcome("timeout")


def ok(usage: Usage) -> Outcome:
    """The call succeeded and the provider reported ``usage``."""
    if type(usage) is Usage:  # the common case, checked here in one test
        return _new(Outcome, ("ok", usage, None, None, None))
    return Outcome("ok", usage)


def http_error(status: int, retry_after: float | str | None = None) -> Outcome:
    """The provider answered ``status`` (400-599).

    ``retry_after``: the raw ``retry-after`` header string (``"7"``, ``"2.0"``; parsed by the
    policy, see `omnillm_retry_after` and `seconds_retry_after`) or seconds as a number.
    """
    return Outcome("http_error", status=status, retry_after=retry_after)


def timeout() -> Outcome:
    """The whole-request timeout fired (for a stream: mid-way, with no usage seen)."""
    return _TIMEOUT


def cancelled(partial_usage: Usage | None = None) -> Outcome:
    """The caller cancelled; ``partial_usage`` if a (streamed) usage report was seen."""
    return Outcome("cancelled", partial_usage)


def stream_dropped(partial_usage: Usage | None) -> Outcome:
    """A streamed call failed mid-way; ``partial_usage`` if a usage report was seen."""
    return Outcome("stream_dropped", partial_usage)


def stream_abandoned(partial_usage: Usage | None = None) -> Outcome:
    """The caller dropped a stream before its end, without cancelling.

    omnillm never settles it: the estimate stays reserved for good and the key gets no report
    (reference 8.2); the safe policy settles it once, at the usage seen or else the estimate.
    """
    return Outcome("stream_abandoned", partial_usage)


def completed_then_cancelled(usage: Usage) -> Outcome:
    """A stream reached ``Completed`` (settled on ``usage``) and then the caller's cancel landed.

    omnillm settles a second time with the same usage (reference 8.1): a second refund of
    ``estimate - actual`` that can wrap its ``u64`` counter; the safe policy settles once.
    """
    return Outcome("completed_then_cancelled", usage)


_U64_MAX = 2**64 - 1
_WHOLE_SECONDS = re.compile(r"\+?[0-9]+")
_DECIMAL_SECONDS = re.compile(r"\s*\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")


def omnillm_retry_after(header: str | None) -> float:
    """omnillm's reading of a ``retry-after`` header: ``value.parse::<u64>()`` seconds, else 60.

    Only ASCII digits with an optional ``+`` are read (`dispatcher.rs` 500-506): ``"2.0"``,
    ``"1e1"``, ``"-1"``, an HTTP-date, blanks or a value above ``u64::MAX`` all give 60 s.
    """
    if header is None or not _WHOLE_SECONDS.fullmatch(header):
        return DEFAULT_RETRY_AFTER
    value = int(header)
    return float(value) if value <= _U64_MAX else DEFAULT_RETRY_AFTER


def seconds_retry_after(header: str | None) -> float:
    """The safe reading of a ``retry-after`` header: decimal seconds >= 0, else 60 s."""
    if header is None or not _DECIMAL_SECONDS.fullmatch(header):
        return DEFAULT_RETRY_AFTER
    value = float(header)
    return value if math.isfinite(value) else DEFAULT_RETRY_AFTER


class Admission(NamedTuple):
    """An admitted request on key index ``key``; pass it to `Gateway.finish` exactly once.

    ``seq``, ``ticket`` and ``reservation`` are the gateway's own bookkeeping (its admission
    number, the key's breaker ticket, the safe policy's budget handle): read them, never use
    them to settle. An immutable named tuple (one is made per admitted request).
    """

    request: Request
    key: int
    key_label: str
    estimate: Estimate
    admitted_at: float
    seq: int
    ticket: Ticket
    reservation: Reservation | None = None


class Rejection(NamedTuple):
    """A refused request: ``reason``, the key involved (if any) and a readable ``detail``."""

    request: Request
    reason: RejectReason
    key: int | None
    detail: str
    estimate: Estimate | None = None


KeyEffect = Literal["none", "success", "failure", "breaker-tripped", "cooldown", "dead"]


class Settlement(NamedTuple):
    """What `Gateway.finish` did: ``charged`` µ$ (finally charged to the budget), the effect
    on the key, and ``underestimate`` = ``max(charged - estimate, 0)``.

    ``leaked``: True when nothing was settled, the estimate stays reserved for good (omnillm,
    8.2). ``resettled``: a second settle's ``actual - estimate`` (omnillm's double settle,
    8.1), else ``None``. An immutable named tuple (one is made per finished request).
    """

    admission: Admission
    outcome: Outcome
    charged: MicroDollar
    key_effect: KeyEffect
    underestimate: MicroDollar = 0
    leaked: bool = False
    resettled: MicroDollar | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """A gateway's keys and knobs; the defaults are omnillm 0.1.5's.

    ``strategy=None`` uses the policy's default (``omnillm`` / ``least-loaded``).
    ``half_open_probes`` applies to the safe breaker only. ``request_timeout`` is for the
    driver (the simulator); the gateway itself never waits.

    Raises:
        ConfigError: no keys, duplicate labels, unknown policy or strategy, a zero or
            negative cap, threshold, cooldown or timeout.
    """

    keys: tuple[KeyConfig, ...]
    policy: str | Policy = "omnillm-0.1.5"
    strategy: str | None = None
    attempt_cap: int = 5
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    request_timeout: float = 120.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.keys, tuple):
            object.__setattr__(self, "keys", tuple(self.keys))
        if not self.keys:
            raise ConfigError("keys", self.keys, "must name at least one key")
        for i, key in enumerate(self.keys):
            if not isinstance(key, KeyConfig):
                raise ConfigError(f"keys[{i}]", key, "must be a KeyConfig")
        counts = Counter(k.label for k in self.keys)  # linear: 100,000 keys are allowed
        dupes = sorted(label for label, n in counts.items() if n > 1)
        if dupes:
            raise ConfigError("keys", dupes, "labels must be unique")
        get_policy(self.policy)
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ConfigError(
                "strategy", self.strategy, f"must be one of {', '.join(sorted(STRATEGIES))}"
            )
        for name, check in (
            ("attempt_cap", positive_int),
            ("breaker_threshold", positive_int),
            ("breaker_cooldown", positive_float),
            ("request_timeout", positive_float),
            ("half_open_probes", positive_int),
        ):
            _check_config(check, name, getattr(self, name), "")


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """Counters of one gateway. Money in micro-dollars.

    ``underestimated`` sums ``max(charged - estimate, 0)`` over settlements (the I3 bound);
    ``overshoot`` is the budget's peak ``max(used - limit, 0)``.
    """

    policy: str
    strategy: str
    admitted: int
    rejected_no_key: int
    rejected_budget: int
    rejected_rate_limited: int
    in_flight: int
    succeeded: int
    failed: int
    cancelled: int
    charged: MicroDollar
    underestimated: MicroDollar
    underestimated_requests: int
    overshoot: MicroDollar
    keys_dead: int
    breaker_trips: int
    budget: BudgetStats
    leaked: int = 0
    leaked_reserved: MicroDollar = 0
    double_settled: int = 0

    @property
    def rejected(self) -> int:
        """All rejections."""
        return self.rejected_no_key + self.rejected_budget + self.rejected_rate_limited

    @property
    def finished(self) -> int:
        """Admissions finished so far."""
        return self.succeeded + self.failed + self.cancelled


class Gateway:
    """An LLM gateway over a pool of keys, a budget and a price table (see the module doc).

    Raises:
        ConfigError: from the config (unknown policy or strategy, bad numbers).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        budget: BudgetTracker,
        prices: PriceTable,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._policy = get_policy(config.policy)
        self._budget = budget
        self._prices = prices
        self._estimator: Estimator = get_estimator(self._policy.estimator)
        # Estimates by request shape: the estimate is a pure function of it and of the fixed
        # estimator and prices, and workloads repeat shapes (bounded; cleared when full).
        self._estimates: dict[tuple[object, ...], Estimate] = {}
        self._costers: dict[str, Callable[[Usage], MicroDollar]] = {}  # `PriceTable.coster`
        self._pool = KeyPool(
            config.keys,
            strategy=config.strategy or self._policy.default_strategy,
            rng=rng,
            attempt_cap=config.attempt_cap,
            breaker=self._policy.breaker,
            breaker_threshold=config.breaker_threshold,
            breaker_cooldown=config.breaker_cooldown,
            half_open_probes=config.half_open_probes,
            rate_in_selection=self._policy.rate_in_selection,
            token_buckets=self._policy.token_buckets,
        )
        self._now = float("-inf")
        self._seq = 0
        self._open: dict[int, Admission] = {}
        self._admitted = 0
        self._rejected = dict.fromkeys(RejectReason, 0)
        self._succeeded = self._failed = self._cancelled = 0
        self._charged = 0
        self._underestimated = 0
        self._underestimated_requests = 0
        self._trips = 0
        self._leaked = 0
        self._leaked_reserved = 0
        self._double_settled = 0

    # -- read-only state -------------------------------------------------------------------

    @property
    def budget(self) -> BudgetTracker:
        """The budget this gateway reserves from."""
        return self._budget

    @property
    def prices(self) -> PriceTable:
        """The price table every estimate and charge uses."""
        return self._prices

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

    @property
    def config(self) -> GatewayConfig:
        """The configuration this gateway was built from."""
        return self._config

    @property
    def pool(self) -> KeyPool:
        """The key pool (read it; change it only through admit/finish)."""
        return self._pool

    @property
    def in_flight(self) -> int:
        """Admissions not yet finished."""
        return len(self._open)

    def check_models(self, *models: str) -> None:
        """Fail now, not mid-run, if the price table cannot price one of ``models``.

        Raises:
            UnknownModelError: a model the table does not know (and no fallback).
        """
        for model in models:
            self._prices.price(model)

    def estimate(self, request: Request) -> Estimate:
        """The estimate this gateway's policy makes for ``request`` (consumes nothing)."""
        # (model, prompt_tokens, max_output_tokens, prompt_bytes): what the estimate reads
        shape = request[1:5]
        est = self._estimates.get(shape)
        if est is None:
            # Built as EstimateRequest._make does: a Request's fields are already checked.
            shaped = _new(EstimateRequest, (
                request.model, request.bytes, request.max_output_tokens, 1,
                request.prompt_tokens, None, 0,
            ))
            est = self._estimator.estimate(shaped, self._prices)
            if len(self._estimates) >= _ESTIMATES_KEPT:
                self._estimates.clear()
            self._estimates[shape] = est
        return est

    def _tick(self, now: float) -> float:
        if type(now) is float and now >= self._now:  # the common case (NaN fails the test)
            self._now = now
            return now
        if isinstance(now, bool) or not isinstance(now, int | float) or now != now:
            raise InvalidValueError("now", now, "must be a number of seconds")
        if now < self._now:
            raise InvalidValueError("now", now, f"must be >= {self._now} (time never goes back)")
        self._now = float(now)
        return self._now

    # -- admit ----------------------------------------------------------------------------

    def admit(self, request: Request, now: float) -> Admission | Rejection:
        """Admit ``request`` at ``now`` or say why not (see the module doc for the order).

        Raises:
            UnknownModelError: the price table cannot price the request's model.
            InvalidValueError: ``now`` is earlier than a time already seen.
        """
        if type(now) is float and now >= self._now:  # `_tick`'s common case, inlined
            self._now = now
        else:
            now = self._tick(now)
        now_us = to_micros(now)  # once per request: the limiters take both forms
        est = self._estimates.get(request[1:5]) or self.estimate(request)  # `estimate`'s cache
        k = self._pool.select(est.tokens, now, now_us)
        if k is None:
            rate_limited, detail = self._pool.explain(est.tokens, now)
            reason = RejectReason.RATE_LIMITED if rate_limited else RejectReason.NO_KEY
            return self._reject(request, reason, None, detail, est)
        key = self._pool.keys[k]
        if self._policy.handles:
            return self._admit_safe(request, key, est, now, now_us)
        # The faithful policy, in omnillm's order (inline: this runs once per request).
        key.cap.acquire_at(est.tokens, now, now_us)  # the strategy checked the room
        if not self._budget.try_reserve(est.cost):
            key.cap.release_at(est.tokens, now, now_us)
            detail = f"estimate {est.cost} µ$ > remaining {self._budget.remaining()} µ$"
            return self._reject(request, RejectReason.BUDGET, key.index, detail, est)
        if not key.rpm.acquire_at(now, now_us):
            self._budget.settle(est.cost, 0)  # omnillm refunds the reservation in full
            key.cap.release_at(est.tokens, now, now_us)
            detail = f"key {key.label!r}: {key.rpm.test(now).reason}"
            return self._reject(request, RejectReason.RATE_LIMITED, key.index, detail, est)
        return self._admission(request, key, est, now, None)

    def _admit_safe(
        self, request: Request, key: KeyState, est: Estimate, now: float, now_us: int
    ) -> Admission | Rejection:
        try:
            reservation = self._budget.reserve(est.cost, label=f"request {request.id}")
        except BudgetExceeded as exc:
            detail = f"estimate {exc.requested} µ$ > remaining {exc.available} µ$"
            return self._reject(request, RejectReason.BUDGET, None, detail, est)
        key.cap.acquire_at(est.tokens, now, now_us)
        key.rpm.acquire_at(now, now_us)
        if key.bucket is not None:
            key.bucket.try_acquire(est.tokens, now)
        return self._admission(request, key, est, now, reservation)

    def _admission(
        self,
        request: Request,
        key: KeyState,
        est: Estimate,
        now: float,
        reservation: Reservation | None,
    ) -> Admission:
        self._seq += 1
        self._admitted += 1
        ticket = key.breaker.acquire(now)
        admission = _new(
            Admission, (request, key.index, key.label, est, now, self._seq, ticket, reservation)
        )
        self._open[self._seq] = admission
        return admission

    def _reject(
        self,
        request: Request,
        reason: RejectReason,
        key: int | None,
        detail: str,
        est: Estimate,
    ) -> Rejection:
        self._rejected[reason] += 1
        return _new(Rejection, (request, reason, key, detail, est))

    # -- finish ---------------------------------------------------------------------------

    def finish(self, admission: Admission, outcome: Outcome, now: float) -> Settlement:
        """End ``admission`` with ``outcome`` at ``now``: settle, release, update the key.

        Raises:
            ReservationStateError: the admission was already finished (or is not ours).
            InvalidValueError: ``stream_dropped`` for a request that was not streamed;
                ``now`` earlier than a time already seen.
        """
        if type(now) is float and now >= self._now:  # `_tick`'s common case, inlined
            self._now = now
        else:
            now = self._tick(now)
        seq = admission.seq
        if self._open.get(seq) is not admission:
            raise ReservationStateError(
                f"{admission!r} was already finished (or comes from another gateway)"
            )
        kind = outcome.kind
        reservation = admission.reservation
        quirks = reservation is None and self._policy.stream_quirks
        if kind in _STREAM_ONLY:
            if not admission.request.stream:
                raise InvalidValueError("outcome", outcome, f"{kind} needs stream=True")
            if quirks and kind == "completed_then_cancelled" and not isinstance(
                self._budget, SeedBudgetTracker
            ):
                raise ReservationStateError(
                    "completed_then_cancelled under the faithful policy settles twice, which "
                    "the reference BudgetTracker refuses: give the gateway a SeedBudgetTracker"
                )
        del self._open[seq]
        est = admission.estimate
        key = self._pool.keys[admission.key]
        key.cap.release_at(est.tokens, now, to_micros(now))  # omnillm: the lease's Drop
        if quirks and kind == "stream_abandoned":
            # omnillm 8.2: nobody polls the stream again, so nothing settles and nothing is
            # reported: the estimate stays reserved for good.
            key.breaker.record_ignored(admission.ticket, now)
            self._leaked += 1
            self._leaked_reserved += est.cost
            self._cancelled += 1
            return _new(Settlement, (admission, outcome, 0, "none", 0, True, None))
        if kind == "ok" and outcome.cost is None:  # `_charge`'s common case, one call less
            model = admission.request.model
            coster = self._costers.get(model)
            if coster is None:
                coster = self._costers[model] = self._prices.coster(model)
            charged = coster(outcome.usage)  # type: ignore[arg-type]
        else:
            charged = self._charge(admission, outcome)
        if reservation is not None:
            reservation.settle(charged)
        else:
            self._budget.settle(est.cost, charged)
        resettled = None
        if quirks and kind == "completed_then_cancelled":
            # omnillm 8.1: the late cancel settles again on the same usage (fetch_sub wraps).
            assert isinstance(self._budget, SeedBudgetTracker)
            self._budget.settle_again(est.cost, charged)
            resettled = charged - est.cost
            self._double_settled += 1
        if kind == "ok":  # `_key_effect`'s common case, one call less
            key.breaker.record_success(admission.ticket, now)
            effect: KeyEffect = "success"
        else:
            effect = self._key_effect(key, admission, outcome, now)
        self._charged += charged
        under = charged - est.cost
        if under > 0:
            self._underestimated += under
            self._underestimated_requests += 1
        else:
            under = 0
        if kind == "ok" or kind == "completed_then_cancelled":
            self._succeeded += 1
        elif kind == "cancelled" or kind == "stream_abandoned":
            self._cancelled += 1
        else:
            self._failed += 1
        return _new(Settlement, (admission, outcome, charged, effect, under, False, resettled))

    def _charge(self, admission: Admission, outcome: Outcome) -> MicroDollar:
        request, est = admission.request, admission.estimate
        if outcome.cost is not None:
            return outcome.cost  # a replayed log's bill: the fact, whatever the outcome
        if outcome.kind in ("ok", "completed_then_cancelled"):
            assert outcome.usage is not None
            return self._prices.cost(request.model, outcome.usage)
        if outcome.kind == "http_error":
            return 0  # the provider refused: nothing billed (both policies)
        faithful = self._policy.unknown_usage == "omnillm"
        if faithful and not request.stream:
            return 0  # omnillm's `call`: cancel and network errors refund in full
        if outcome.usage is not None:
            return self._prices.cost(request.model, outcome.usage)
        if faithful:
            # omnillm's `stream` with no Usage event: {prompt: est_prompt, completion:
            # generated_chars / 4}; the gateway model sees no characters, so completion = 0.
            return self._prices.cost(request.model, Usage(est.prompt_tokens, 0))
        return est.cost  # usage unknown: the provider may have billed up to the bound

    def _key_effect(
        self, key: KeyState, admission: Admission, outcome: Outcome, now: float
    ) -> KeyEffect:
        ticket, policy = admission.ticket, self._policy
        if outcome.kind in ("ok", "completed_then_cancelled"):
            # omnillm's late cancel reports nothing more: Cancelled is not a key error
            key.breaker.record_success(ticket, now)
            return "success"
        if outcome.kind in ("cancelled", "stream_abandoned"):
            key.breaker.record_ignored(ticket, now)
            return "none"
        if outcome.kind == "http_error":
            status = outcome.status
            if status == 401 or (status == 403 and policy.forbidden_kills_key):
                key.dead = True
                key.breaker.record_ignored(ticket, now)
                return "dead"
            if status == 429:
                key.cool_down(
                    now,
                    self._retry_after(outcome.retry_after),
                    wall_clock_ms=policy.wall_clock_ms,
                )
                key.breaker.record_ignored(ticket, now)
                if policy.return_slot_on_429:
                    key.rpm.forget_latest(admission.admitted_at)
                return "cooldown"
            assert status is not None
            counts = policy.client_errors_count or status in (403, 408) or status >= 500
            if not counts:
                key.breaker.record_ignored(ticket, now)
                return "none"
        if key.breaker.record_failure(ticket, now):
            self._trips += 1
            return "breaker-tripped"
        return "failure"

    def _retry_after(self, retry_after: float | str | None) -> float:
        """The cooldown in seconds for a 429's ``retry-after`` (a header string or seconds)."""
        integer = self._policy.integer_retry_after
        if retry_after is None or isinstance(retry_after, str):
            return omnillm_retry_after(retry_after) if integer else seconds_retry_after(retry_after)
        if integer and not float(retry_after).is_integer():
            return DEFAULT_RETRY_AFTER  # omnillm parses the header as u64 seconds only
        return float(retry_after)

    # -- observability ---------------------------------------------------------------------

    def key_status(self, now: float) -> list[KeyStatus]:
        """Every key's state at ``now``."""
        return self._pool.status(self._tick(now))

    def stats(self) -> GatewayStats:
        """A snapshot of the gateway's counters and its budget's."""
        budget = self._budget.stats()
        return GatewayStats(
            policy=self._policy.name,
            strategy=self._pool.strategy.name,
            admitted=self._admitted,
            rejected_no_key=self._rejected[RejectReason.NO_KEY],
            rejected_budget=self._rejected[RejectReason.BUDGET],
            rejected_rate_limited=self._rejected[RejectReason.RATE_LIMITED],
            in_flight=len(self._open),
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            charged=self._charged,
            underestimated=self._underestimated,
            underestimated_requests=self._underestimated_requests,
            overshoot=budget.overshoot,
            keys_dead=sum(k.dead for k in self._pool.keys),
            breaker_trips=self._trips,
            budget=budget,
            leaked=self._leaked,
            leaked_reserved=self._leaked_reserved,
            double_settled=self._double_settled,
        )

    def __repr__(self) -> str:
        return (
            f"<Gateway policy={self._policy.name} strategy={self._pool.strategy.name}"
            f" keys={len(self._pool)} in_flight={len(self._open)} admitted={self._admitted}"
            f" rejected={sum(self._rejected.values())} {self._budget!r}>"
        )
