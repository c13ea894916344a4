"""Gateway: its counters, rejection details, time checks and charges, read through the public
API on hand-worked cases (issue 13).

gpt-4o on omnillm's table costs 5 µ$ per input token and 15 µ$ per output token. For
``req(prompt=100, out=1024)`` (400 bytes) the faithful estimate is (400 // 4 + 1024) tokens at
the input rate = 5,620 µ$; the safe one is 100 x 5 + 1024 x 15 = 15,860 µ$.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from gateway_helpers import PRICES, make_gateway, req

from omnillm_sim.errors import ConfigError, InvalidValueError, UnknownModelError
from omnillm_sim.gateway import (
    Admission,
    Gateway,
    GatewayConfig,
    KeyConfig,
    Outcome,
    Rejection,
    RejectReason,
    Request,
    cancelled,
    http_error,
    ok,
    stream_dropped,
    timeout,
)
from omnillm_sim.policy import OMNILLM_0_1_5, SAFE
from omnillm_sim.pricing import Usage

FAITHFUL = "omnillm-0.1.5"
FAITHFUL_EST = 5_620
SAFE_EST = 15_860


def admitted(result: Admission | Rejection) -> Admission:
    assert isinstance(result, Admission), result
    return result


def rejected(result: Admission | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


# -- time --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [FAITHFUL, "safe"])
def test_now_may_be_an_int_but_not_nan_or_a_bool(policy: str) -> None:
    gw = make_gateway(policy)
    adm = admitted(gw.admit(req(1), 0))
    assert adm.admitted_at == 0.0
    for bad in (float("nan"), True, False, "1", None):
        with pytest.raises(InvalidValueError, match=r"^now\(=.*\) must be a number of seconds$"):
            gw.admit(req(2), bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidValueError, match=r"must be a number of seconds$"):
            gw.finish(adm, ok(Usage(1, 1)), bad)  # type: ignore[arg-type]
    assert gw.in_flight == 1  # refused times changed nothing
    gw.finish(adm, ok(Usage(1, 1)), 3)
    with pytest.raises(
        InvalidValueError, match=r"^now\(=2\) must be >= 3.0 \(time never goes back\)"
    ):
        gw.admit(req(3), 2)
    with pytest.raises(InvalidValueError, match=r"time never goes back"):
        gw.key_status(2.5)
    assert [s.label for s in gw.key_status(3)] == ["k0"]
    assert admitted(gw.admit(req(4), 3.0)).admitted_at == 3.0  # the same instant again


# -- rejections --------------------------------------------------------------------------------


def test_faithful_budget_rejection_names_estimate_and_remaining() -> None:
    gw = make_gateway(FAITHFUL, limit=FAITHFUL_EST - 1)
    r = rejected(gw.admit(req(1), 0.0))
    assert (r.reason, r.key) == (RejectReason.BUDGET, 0)
    assert r.detail == f"estimate {FAITHFUL_EST} µ$ > remaining {FAITHFUL_EST - 1} µ$"
    assert r.estimate is not None and r.estimate.cost == FAITHFUL_EST
    assert gw.pool.keys[0].cap.inflight == 0  # the key's tokens were given back
    assert gw.budget.used == 0
    # Exactly the estimate left fits.
    gw2 = make_gateway(FAITHFUL, limit=FAITHFUL_EST)
    assert admitted(gw2.admit(req(1), 0.0)).estimate.cost == FAITHFUL_EST


def test_faithful_rate_limit_rejection_refunds_and_names_the_key() -> None:
    gw = make_gateway(FAITHFUL, key={"rpm": 1})
    first = admitted(gw.admit(req(1), 0.0))
    r = rejected(gw.admit(req(2), 1.0))
    assert (r.reason, r.key) == (RejectReason.RATE_LIMITED, 0)
    assert r.detail == "key 'k0': window full: 1 of 1 admissions in the last 60 s"
    assert gw.budget.used == FAITHFUL_EST  # the second reservation was refunded in full
    assert gw.pool.keys[0].cap.inflight == first.estimate.tokens == 1_124
    s = gw.stats()
    assert (s.admitted, s.rejected_rate_limited, s.rejected, s.in_flight) == (1, 1, 1, 1)
    # The refund is a seed-API settle at 0: one settled reservation that cost nothing.
    assert (s.budget.settled, s.budget.spent, s.budget.open_count) == (1, 0, 1)


def test_no_key_rejection_explains_itself() -> None:
    gw = make_gateway(FAITHFUL, keys=2, key={"tpm": 1_000})
    r = rejected(gw.admit(req(1), 0.0))  # 1,124 tokens > every key's 1,000
    assert (r.reason, r.key) == (RejectReason.NO_KEY, None)
    assert r.detail == "no available key has in-flight room for 1124 tokens (2 available)"
    assert gw.stats().rejected_no_key == 1


def test_safe_budget_rejection_names_estimate_and_remaining() -> None:
    gw = make_gateway("safe", limit=SAFE_EST + 99)
    admitted(gw.admit(req(1, prompt=0, out=0), 0.0))  # costs nothing
    first = admitted(gw.admit(req(2, prompt=20, out=0), 0.0))  # 100 µ$
    assert first.estimate.cost == 100
    r = rejected(gw.admit(req(3), 0.0))
    assert (r.reason, r.key) == (RejectReason.BUDGET, None)
    assert r.detail == f"estimate {SAFE_EST} µ$ > remaining {SAFE_EST - 1} µ$"
    assert gw.stats().rejected_budget == 1
    gw.finish(first, ok(Usage(0, 0)), 1.0)  # cost nothing after all: 100 µ$ come back
    assert admitted(gw.admit(req(4), 1.0)).estimate.cost == SAFE_EST


def test_safe_budget_rejection_when_one_micro_dollar_short() -> None:
    gw = make_gateway("safe", limit=SAFE_EST - 1)
    r = rejected(gw.admit(req(1), 0.0))
    assert r.detail == f"estimate {SAFE_EST} µ$ > remaining {SAFE_EST - 1} µ$"
    key = gw.pool.keys[0]
    assert (key.cap.inflight, key.rpm.count(0.0)) == (0, 0)  # nothing was committed


def test_safe_admission_commits_every_limit_of_the_key() -> None:
    gw = make_gateway("safe", key={"tokens_per_minute": 2_000})
    adm = admitted(gw.admit(req(1), 0.0))
    key = gw.pool.keys[0]
    assert key.bucket is not None
    assert (key.cap.inflight, key.rpm.count(0.0)) == (1_124, 1)
    assert key.bucket.level(0.0) == pytest.approx(2_000 - 1_124)
    assert adm.reservation is not None and adm.reservation.state == "open"
    settlement = gw.finish(adm, ok(Usage(100, 10)), 1.0)
    assert adm.reservation.state == "settled" and adm.reservation.actual == 650
    assert settlement.charged == 650 and key.cap.inflight == 0


# -- counters ----------------------------------------------------------------------------------


def test_every_counter_after_a_mixed_run_faithful() -> None:
    gw = make_gateway(FAITHFUL, keys=2, breaker_threshold=2)
    a = [admitted(gw.admit(req(i), 0.0)) for i in range(1, 6)]
    assert gw.in_flight == 5
    s1 = gw.finish(a[0], ok(Usage(100, 500)), 1.0)  # 500 + 7,500 = 8,000 > 5,620
    assert (s1.charged, s1.underestimate, s1.key_effect) == (8_000, 2_380, "success")
    s2 = gw.finish(a[1], ok(Usage(100, 10)), 1.0)  # 650, under the estimate
    assert (s2.charged, s2.underestimate) == (650, 0)
    s3 = gw.finish(a[2], cancelled(), 1.0)
    assert (s3.charged, s3.key_effect) == (0, "none")
    s4 = gw.finish(a[3], http_error(500), 1.0)
    s5 = gw.finish(a[4], timeout(), 1.0)  # second failure on k0: trips its breaker
    assert (s4.key_effect, s5.key_effect) == ("failure", "breaker-tripped")
    s = gw.stats()
    assert (s.policy, s.strategy) == (FAITHFUL, "omnillm")
    assert (s.admitted, s.in_flight, s.succeeded, s.failed, s.cancelled, s.finished) == (
        5, 0, 2, 2, 1, 5,
    )  # fmt: skip
    assert (s.charged, s.underestimated, s.underestimated_requests) == (8_650, 2_380, 1)
    assert (s.breaker_trips, s.keys_dead) == (1, 0)
    assert (s.budget.used, s.budget.spent, s.budget.settled) == (8_650, 8_650, 5)
    assert s.overshoot == s.budget.overshoot == 0
    assert s.rejected == 0


def test_overshoot_and_dead_keys_are_counted() -> None:
    gw = make_gateway(FAITHFUL, keys=2, limit=FAITHFUL_EST)
    adm = admitted(gw.admit(req(1), 0.0))
    gw.finish(adm, ok(Usage(100, 1024)), 1.0)  # 15,860: 10,240 past the limit
    dead = admitted(make_gateway(FAITHFUL).admit(req(1), 0.0))
    assert dead.key == 0
    s = gw.stats()
    assert (s.overshoot, s.underestimated) == (15_860 - FAITHFUL_EST, 15_860 - FAITHFUL_EST)
    gw2 = make_gateway(FAITHFUL, keys=3)
    for i, status in enumerate((401, 403)):
        effect = gw2.finish(admitted(gw2.admit(req(i), 0.0)), http_error(status), 0.0).key_effect
        assert effect == "dead"
    assert gw2.stats().keys_dead == 2
    assert gw2.stats().failed == 2


@pytest.mark.parametrize(
    ("policy", "status", "effect"),
    [
        ("safe", 408, "breaker-tripped"),  # a request timeout says the key is slow
        ("safe", 403, "breaker-tripped"),
        ("safe", 500, "breaker-tripped"),
        ("safe", 503, "breaker-tripped"),
        ("safe", 404, "none"),  # the caller's mistake, not the key's
        ("safe", 400, "none"),
        ("safe", 499, "none"),
        (FAITHFUL, 404, "breaker-tripped"),  # omnillm counts every error
        (FAITHFUL, 408, "breaker-tripped"),
    ],
)
def test_which_errors_count_against_the_breaker(policy: str, status: int, effect: str) -> None:
    gw = make_gateway(policy, breaker_threshold=1)
    settlement = gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(status), 1.0)
    assert settlement.key_effect == effect
    assert settlement.charged == 0  # the provider refused: nothing billed
    assert gw.stats().breaker_trips == (1 if effect == "breaker-tripped" else 0)
    assert gw.pool.keys[0].available(1.0) is (effect != "breaker-tripped")


@pytest.mark.parametrize(
    ("policy", "retry_after", "cooling_until"),
    [
        (FAITHFUL, None, 61.0),
        (FAITHFUL, 3, 4.0),
        (FAITHFUL, 3.0, 4.0),
        (FAITHFUL, 2.5, 61.0),  # omnillm reads the header as whole seconds only
        ("safe", 2.5, 3.5),
        ("safe", None, 61.0),
    ],
)
def test_429_cooldowns(policy: str, retry_after: float | None, cooling_until: float) -> None:
    gw = make_gateway(policy)
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(429, retry_after), 1.0)
    assert s.key_effect == "cooldown"
    assert gw.pool.keys[0].cooling_until == cooling_until
    assert gw.pool.keys[0].breaker.stats().failures == 0
    # The safe policy gives the RPM slot back (the call never ran); omnillm keeps it spent.
    assert gw.pool.keys[0].rpm.count(1.0) == (0 if policy == "safe" else 1)


# -- charges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "stream", "outcome", "charged"),
    [
        (FAITHFUL, False, timeout(), 0),
        (FAITHFUL, False, cancelled(Usage(100, 10)), 0),  # non-streamed: refunded in full
        (FAITHFUL, True, timeout(), 500),  # est prompt 100 x 5, no completion seen
        (FAITHFUL, True, stream_dropped(None), 500),
        (FAITHFUL, True, stream_dropped(Usage(100, 10)), 650),
        ("safe", False, timeout(), SAFE_EST),  # may have been billed up to the bound
        ("safe", False, cancelled(), SAFE_EST),
        ("safe", False, cancelled(Usage(100, 10)), 650),
        ("safe", True, stream_dropped(Usage(10, 0)), 50),
    ],
)
def test_charges_of_calls_that_did_not_succeed(
    policy: str, stream: bool, outcome: Outcome, charged: int
) -> None:
    gw = make_gateway(policy)
    settlement = gw.finish(admitted(gw.admit(req(1, stream=stream), 0.0)), outcome, 1.0)
    assert settlement.charged == charged
    assert gw.budget.used == gw.budget.spent == charged
    assert gw.stats().charged == charged


# -- inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"id": True}, "id"),
        ({"id": 1.0}, "id"),
        ({"model": ""}, "model"),
        ({"model": "  "}, "model"),
        ({"model": 4}, "model"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"max_output_tokens": -1}, "max_output_tokens"),
        ({"prompt_bytes": -1}, "prompt_bytes"),
        ({"stream": 1}, "stream"),
    ],
)
def test_request_names_the_bad_field(kwargs: dict[str, Any], parameter: str) -> None:
    base: dict[str, Any] = {"id": 1, "model": "gpt-4o", "prompt_tokens": 10}
    with pytest.raises(InvalidValueError) as info:
        Request(**{**base, **kwargs})
    assert info.value.parameter == parameter


def test_request_bytes() -> None:
    assert Request(id=1, model="m", prompt_tokens=10).bytes == 40
    assert Request(id=1, model="m", prompt_tokens=10, prompt_bytes=0).bytes == 0
    assert Request(id=1, model="m", prompt_tokens=10, prompt_bytes=7).bytes == 7


@pytest.mark.parametrize("status", [400, 599, 429])
def test_http_error_accepts_the_error_range(status: int) -> None:
    assert http_error(status).status == status


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: http_error(399), "status"),
        (lambda: http_error(600), "status"),
        (lambda: http_error(True), "status"),  # type: ignore[arg-type]
        (lambda: http_error(429, -1.0), "retry_after"),
        (lambda: http_error(429, float("inf")), "retry_after"),
        (lambda: Outcome("ok"), "usage"),
        (lambda: Outcome("done"), "kind"),  # type: ignore[arg-type]
        (lambda: Outcome("cancelled", (1, 2)), "usage"),  # type: ignore[arg-type]
    ],
)
def test_outcome_names_the_bad_field(make: Any, parameter: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        make()
    assert info.value.parameter == parameter


def test_outcome_builders() -> None:
    assert http_error(429, 0.0).retry_after == 0.0
    assert timeout() == Outcome("timeout")
    assert cancelled() == Outcome("cancelled")
    assert stream_dropped(None).usage is None


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"keys": ()}, "keys"),
        ({"keys": (KeyConfig(label="a"), "b")}, "keys[1]"),
        ({"keys": (KeyConfig(label="a"), KeyConfig(label="a"))}, "keys"),
        ({"policy": "strict"}, "policy"),
        ({"strategy": "fastest"}, "strategy"),
        ({"attempt_cap": 0}, "attempt_cap"),
        ({"breaker_threshold": 0}, "breaker_threshold"),
        ({"breaker_cooldown": 0.0}, "breaker_cooldown"),
        ({"request_timeout": 0.0}, "request_timeout"),
        ({"half_open_probes": 0}, "half_open_probes"),
    ],
)
def test_config_names_the_bad_field(kwargs: dict[str, Any], parameter: str) -> None:
    base: dict[str, Any] = {"keys": (KeyConfig(label="a"),)}
    with pytest.raises(ConfigError) as info:
        GatewayConfig(**{**base, **kwargs})
    assert info.value.parameter == parameter


def test_config_and_gateway_expose_what_they_were_built_from() -> None:
    cfg = GatewayConfig(keys=[KeyConfig(label="a")], policy="safe", strategy="round-robin")
    assert isinstance(cfg.keys, tuple)
    gw = Gateway(cfg, budget=make_gateway("safe").budget, prices=PRICES, rng=random.Random(0))
    assert gw.config is cfg and gw.policy is SAFE and gw.prices is PRICES
    assert gw.pool.strategy.name == "round-robin"
    assert make_gateway(FAITHFUL).policy is OMNILLM_0_1_5
    assert make_gateway("safe").pool.strategy.name == "least-loaded"
    gw.check_models("gpt-4o")
    strict = Gateway(cfg, budget=gw.budget, prices=PRICES.with_fallback(None), rng=random.Random(0))
    with pytest.raises(UnknownModelError):
        strict.check_models("gpt-4o", "no-such-model-xyz")


def test_counters_count_past_one() -> None:
    gw = make_gateway(FAITHFUL, keys=1, limit=2 * FAITHFUL_EST, breaker_threshold=1)
    a1, a2 = admitted(gw.admit(req(1), 0.0)), admitted(gw.admit(req(2), 0.0))
    for rid in (3, 4):
        assert rejected(gw.admit(req(rid), 0.0)).reason == RejectReason.BUDGET
    gw.finish(a1, cancelled(), 1.0)
    gw.finish(a2, cancelled(), 1.0)
    b1, b2 = admitted(gw.admit(req(5), 1.0)), admitted(gw.admit(req(6), 1.0))
    gw.finish(b1, ok(Usage(100, 600)), 2.0)  # 9,500 > 5,620
    gw.finish(b2, ok(Usage(100, 600)), 2.0)
    s = gw.stats()
    assert (s.rejected_budget, s.cancelled, s.underestimated_requests) == (2, 2, 2)
    gw2 = make_gateway(FAITHFUL, breaker_threshold=1, breaker_cooldown=1.0)
    for t in (0.0, 5.0):
        gw2.finish(admitted(gw2.admit(req(int(t) + 1), t)), timeout(), t)
    assert gw2.stats().breaker_trips == 2


@pytest.mark.parametrize(
    ("policy", "outcome"),
    [
        (FAITHFUL, cancelled()),
        (FAITHFUL, http_error(401)),
        (FAITHFUL, http_error(403)),
        (FAITHFUL, http_error(429)),
        ("safe", http_error(404)),
        ("safe", cancelled()),
    ],
)
def test_results_that_say_nothing_about_health_are_recorded_as_ignored(
    policy: str, outcome: Outcome
) -> None:
    gw = make_gateway(policy)
    gw.finish(admitted(gw.admit(req(1), 0.0)), outcome, 1.0)
    breaker = gw.pool.stats()[0].breaker
    assert (breaker.ignored, breaker.failures, breaker.successes) == (1, 0, 0)


def test_a_cancelled_probe_frees_its_slot() -> None:
    gw = make_gateway("safe", breaker_threshold=1, breaker_cooldown=5.0)
    gw.finish(admitted(gw.admit(req(1), 0.0)), timeout(), 0.0)  # open until 5
    probe = admitted(gw.admit(req(2), 5.0))
    assert rejected(gw.admit(req(3), 5.0)).reason == RejectReason.NO_KEY  # one probe at a time
    gw.finish(probe, cancelled(), 6.0)
    assert isinstance(gw.admit(req(4), 6.0), Admission)


def test_public_names_and_defaults() -> None:
    assert {r.value for r in RejectReason} == {"no-key", "budget", "rate-limited"}
    assert Request(id=1, model="m", prompt_tokens=1).stream is False
    with pytest.raises(TypeError):
        Request(1, "m", 1)  # type: ignore[misc]  # keyword-only
    with pytest.raises(TypeError):
        GatewayConfig((KeyConfig(label="a"),))  # type: ignore[misc]


def test_records_are_frozen() -> None:
    gw = make_gateway(FAITHFUL, limit=FAITHFUL_EST)
    adm = admitted(gw.admit(req(1), 0.0))
    rej = rejected(gw.admit(req(2), 0.0))
    settlement = gw.finish(adm, ok(Usage(1, 1)), 1.0)
    records = [
        (req(1), "prompt_tokens"), (ok(Usage(1, 1)), "kind"), (adm, "key"), (rej, "detail"),
        (settlement, "charged"), (gw.config, "attempt_cap"), (gw.stats(), "admitted"),
    ]  # fmt: skip
    for record, field in records:
        with pytest.raises(AttributeError):
            setattr(record, field, 1)
