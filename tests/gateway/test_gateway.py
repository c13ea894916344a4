"""The gateway's API: configuration errors, exactly-once finish, observability, token buckets."""

import random

import pytest
from gateway_helpers import PRICES, make_gateway, req

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.errors import (
    ConfigError,
    InvalidValueError,
    ReservationStateError,
    UnknownModelError,
)
from omnillm_sim.gateway import (
    Admission,
    Gateway,
    GatewayConfig,
    KeyConfig,
    Rejection,
    RejectReason,
    Request,
    cancelled,
    http_error,
    ok,
    stream_dropped,
)
from omnillm_sim.policy import POLICIES, SAFE, get_policy
from omnillm_sim.pricing import Usage, catalogue

KEYS = (KeyConfig(label="a"),)


def test_defaults_are_omnillms() -> None:
    cfg = GatewayConfig(keys=KEYS)
    assert (cfg.policy, cfg.strategy, cfg.attempt_cap) == ("omnillm-0.1.5", None, 5)
    assert (cfg.breaker_threshold, cfg.breaker_cooldown, cfg.request_timeout) == (5, 30.0, 120.0)
    assert (KEYS[0].rpm, KEYS[0].tpm, KEYS[0].tokens_per_minute) == (500, 90_000, None)
    gw = make_gateway("omnillm-0.1.5")
    assert gw.stats().strategy == "omnillm"
    assert make_gateway("safe").stats().strategy == "least-loaded"


@pytest.mark.parametrize(
    ("kwargs", "parameter", "value"),
    [
        ({"policy": "yolo"}, "policy", "yolo"),
        ({"strategy": "random"}, "strategy", "random"),
        ({"attempt_cap": 0}, "attempt_cap", 0),
        ({"breaker_threshold": 0}, "breaker_threshold", 0),
        ({"breaker_threshold": -2}, "breaker_threshold", -2),
        ({"breaker_cooldown": 0.0}, "breaker_cooldown", 0.0),
        ({"request_timeout": -1.0}, "request_timeout", -1.0),
        ({"half_open_probes": 0}, "half_open_probes", 0),
        ({"keys": ()}, "keys", ()),
        ({"keys": (KeyConfig(label="a"), KeyConfig(label="a"))}, "keys", ["a"]),
    ],
)
def test_config_bad_input_names_field_and_value(
    kwargs: dict[str, object], parameter: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        GatewayConfig(**{"keys": KEYS, **kwargs})  # type: ignore[arg-type]
    assert (info.value.parameter, info.value.value) == (parameter, value)
    assert f"{parameter}(={value!r})" in str(info.value)


def test_config_accepts_a_list_of_keys_and_a_policy_record() -> None:
    from dataclasses import replace

    ablation = replace(SAFE, name="safe-but-omnillm-estimates", estimator="omnillm")
    cfg = GatewayConfig(keys=[KeyConfig(label="a")], policy=ablation)  # type: ignore[arg-type]
    assert isinstance(cfg.keys, tuple)
    gw = Gateway(cfg, budget=BudgetTracker.unlimited(), prices=PRICES, rng=random.Random(1))
    assert gw.estimate(req(1)).cost == 5_620 and gw.policy.breaker == "safe"
    with pytest.raises(ConfigError, match="estimator"):
        replace(SAFE, estimator="guess")
    assert get_policy("safe") is POLICIES["safe"]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"max_output_tokens": -5}, "max_output_tokens"),
        ({"prompt_bytes": -4}, "prompt_bytes"),
        ({"model": ""}, "model"),
        ({"id": 1.5}, "id"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_request_bad_input(kwargs: dict[str, object], parameter: str) -> None:
    base: dict[str, object] = {"id": 1, "model": "gpt-4o", "prompt_tokens": 10}
    with pytest.raises(InvalidValueError) as info:
        Request(**{**base, **kwargs})  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_outcome_bad_input() -> None:
    with pytest.raises(InvalidValueError, match=r"status\(=200\)"):
        http_error(200)
    with pytest.raises(InvalidValueError, match=r"retry_after\(=-1\.0\)"):
        http_error(429, -1.0)
    with pytest.raises(InvalidValueError, match="usage"):
        ok(None)  # type: ignore[arg-type]


def test_unknown_model_fails_up_front() -> None:
    strict = catalogue("omnillm-0.1.5")  # no fallback: unknown models are errors
    gw = Gateway(
        GatewayConfig(keys=KEYS), budget=BudgetTracker("1"), prices=strict, rng=random.Random(0)
    )
    gw.check_models("gpt-4o", "claude-3-haiku")
    with pytest.raises(UnknownModelError, match=r"gpt-4\.1-mini"):
        gw.check_models("gpt-4o", "gpt-4.1-mini")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_finish_exactly_once(policy: str) -> None:
    gw = make_gateway(policy)
    a = gw.admit(req(1), 0.0)
    assert isinstance(a, Admission)
    gw.finish(a, ok(Usage(10, 10)), 1.0)
    before = gw.budget.stats()
    with pytest.raises(ReservationStateError):
        gw.finish(a, cancelled(), 2.0)
    assert gw.budget.stats() == before
    assert gw.in_flight == 0 and gw.budget.stats().open_count == 0


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_stream_dropped_needs_a_streamed_request_and_time_never_goes_back(policy: str) -> None:
    gw = make_gateway(policy)
    a = gw.admit(req(1), 5.0)
    assert isinstance(a, Admission)
    with pytest.raises(InvalidValueError, match="stream"):
        gw.finish(a, stream_dropped(None), 6.0)
    with pytest.raises(InvalidValueError, match=r"now\(=4\.0\)"):
        gw.finish(a, ok(Usage(1, 1)), 4.0)
    assert gw.finish(a, ok(Usage(1, 1)), 6.0).charged == 5 + 15


def test_key_status_stats_and_repr_show_live_state() -> None:
    gw = make_gateway("omnillm-0.1.5", keys=2, key={"rpm": 3, "tpm": 5_000})
    a = gw.admit(req(1), 0.0)
    assert isinstance(a, Admission) and a.key_label == "k0"
    k0, k1 = gw.key_status(0.0)
    assert (k0.label, k0.available, k0.dead, k0.cooling_until, k0.breaker) == (
        "k0",
        True,
        False,
        None,
        "closed",
    )
    assert (k0.inflight_tokens, k0.rpm_used, k0.tpm_limit, k0.rpm_limit) == (1_124, 1, 5_000, 3)
    assert k1.inflight_tokens == 0
    assert "in_flight=1" in repr(gw) and "used=5620" in repr(gw)
    assert "inflight=1124/5000" in repr(gw.pool)
    gw.finish(a, http_error(401), 1.0)
    st = gw.stats()
    assert (st.admitted, st.failed, st.keys_dead, st.in_flight, st.finished) == (1, 1, 1, 0, 1)
    assert st.budget.used == 0


def test_rejections_are_counted_by_reason() -> None:
    gw = make_gateway("omnillm-0.1.5", limit=6_000, key={"rpm": 1})
    assert isinstance(gw.admit(req(1), 0.0), Admission)
    r = gw.admit(req(2, prompt=0, out=0), 0.0)  # 5 µ$ fits the budget; RPM does not
    assert isinstance(r, Rejection) and r.reason is RejectReason.RATE_LIMITED
    r = gw.admit(req(3), 0.0)
    assert isinstance(r, Rejection) and r.reason is RejectReason.BUDGET
    st = gw.stats()
    assert (st.rejected_no_key, st.rejected_budget, st.rejected_rate_limited) == (0, 1, 1)
    assert st.rejected == 2


def test_safe_enforces_a_true_per_minute_token_limit() -> None:
    gw = make_gateway("safe", key={"tokens_per_minute": 2_248})  # two 1,124-token requests
    for i in range(2):
        a = gw.admit(req(i), 0.0)
        assert isinstance(a, Admission)
        gw.finish(a, ok(Usage(100, 10)), 0.0)  # the in-flight cap is free again ...
    r = gw.admit(req(3), 1.0)  # ... but the minute's tokens are spent: 37.5 refilled
    assert isinstance(r, Rejection) and r.reason is RejectReason.RATE_LIMITED
    assert isinstance(gw.admit(req(4), 31.0), Admission)  # >= 1,124 tokens refilled by 31 s
    huge = gw.admit(req(5, prompt=3_000, out=0), 60.0)
    assert isinstance(huge, Rejection) and "can never be admitted" in huge.detail


def test_faithful_ignores_tokens_per_minute_its_tpm_is_in_flight_only() -> None:
    gw = make_gateway("omnillm-0.1.5", key={"tokens_per_minute": 1_124})
    for i in range(5):
        a = gw.admit(req(i), 0.0)
        assert isinstance(a, Admission)
        gw.finish(a, ok(Usage(100, 10)), 0.0)


def test_safe_cancelled_with_partial_usage_charges_it() -> None:
    gw = make_gateway("safe")
    a = gw.admit(req(1, stream=True), 0.0)
    assert isinstance(a, Admission)
    assert gw.finish(a, cancelled(Usage(100, 20)), 1.0).charged == 500 + 300


def test_an_admission_from_another_gateway_is_refused() -> None:
    one, two = make_gateway("safe"), make_gateway("safe")
    a = one.admit(req(1), 0.0)
    assert isinstance(a, Admission) and isinstance(two.admit(req(1), 0.0), Admission)
    with pytest.raises(ReservationStateError):
        two.finish(a, ok(Usage(1, 1)), 1.0)  # same sequence number, different gateway
    assert two.in_flight == 1


def test_pool_stats_count_each_limiter_and_breaker() -> None:
    gw = make_gateway("safe", key={"rpm": 1, "tokens_per_minute": 5_000})
    a = gw.admit(req(1), 0.0)
    assert isinstance(a, Admission)
    assert isinstance(gw.admit(req(2), 0.0), Rejection)
    gw.finish(a, http_error(500), 1.0)
    (k,) = gw.pool.stats()
    assert (k.inflight.admitted, k.inflight.in_use, k.rpm.admitted) == (1, 0, 1)
    assert k.bucket is not None and k.bucket.admitted == 1
    assert (k.breaker.failures, k.breaker.consecutive_failures, k.breaker.state) == (1, 1, "closed")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_estimates_match_the_estimator_for_every_request_shape(policy: str) -> None:
    # The gateway keeps estimates by request shape: over more shapes than it keeps, and
    # each shape asked twice, every estimate is still the policy estimator's own.
    from omnillm_sim.estimate import EstimateRequest, get_estimator

    gateway = make_gateway(policy=policy)
    estimator = get_estimator(get_policy(policy).estimator)
    rng = random.Random(5)
    shapes = [
        (rng.choice(["gpt-4o", "gpt-4o-mini"]), rng.randrange(1, 200_000),
         rng.choice([None, rng.randrange(1, 9_000)]), rng.choice([None, rng.randrange(0, 50_000)]))
        for _ in range(5_000)
    ]
    for i, (model, prompt, max_out, size) in enumerate(shapes + shapes[::-1]):
        request = Request(id=i, model=model, prompt_tokens=prompt, max_output_tokens=max_out,
                          prompt_bytes=size)
        expected = estimator.estimate(
            EstimateRequest(model=model, prompt_bytes=request.bytes, max_output_tokens=max_out,
                            prompt_tokens=prompt),
            PRICES,
        )
        assert gateway.estimate(request) == expected
