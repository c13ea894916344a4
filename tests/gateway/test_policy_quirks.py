"""Each omnillm 0.1.5 behaviour the faithful policy reproduces (reference section in the
comment), next to the safe policy's fix on the same input.

Prices: omnillm's table, gpt-4o = 5 µ$ per input token, 15 µ$ per output token. The default
request has 100 prompt tokens (400 bytes) and max_output 1024, so omnillm estimates
(100 + 1024) x 5 = 5,620 µ$ and the upper bound is 100 x 5 + 1024 x 15 = 15,860 µ$.
"""

import pytest
from gateway_helpers import make_gateway, req

from omnillm_sim.gateway import (
    Admission,
    Gateway,
    Outcome,
    Rejection,
    RejectReason,
    cancelled,
    http_error,
    ok,
    stream_dropped,
    timeout,
)
from omnillm_sim.pricing import Usage

FAITHFUL, SAFE = "omnillm-0.1.5", "safe"


def admitted(result: Admission | Rejection) -> Admission:
    assert isinstance(result, Admission), result
    return result


def rejected(result: Admission | Rejection, reason: RejectReason) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    return result


# -- [2] order TPM -> budget -> RPM on the chosen key only; full refund on a local RPM refusal --


def test_faithful_rpm_checked_after_budget_on_the_chosen_key_only_with_full_refund() -> None:
    gw = make_gateway(FAITHFUL, keys=2, key={"rpm": 1}, strategy="omnillm", start=0)
    assert admitted(gw.admit(req(1), 0.0)).key == 0
    r = rejected(gw.admit(req(2), 1.0), RejectReason.RATE_LIMITED)
    assert r.key == 0  # k1 had room in every respect but was never tried
    assert gw.budget.used == 5_620  # request 2's reservation was refunded in full ...
    s = gw.budget.stats()
    assert (s.admitted, s.settled, s.spent) == (2, 1, 0)  # ... by settle(est, 0)
    k0, k1 = gw.key_status(1.0)
    assert k0.inflight_tokens == 1_124 and k1.rpm_used == 0  # its TPM came back too


def test_safe_skips_a_key_whose_rpm_window_is_full_and_reserves_nothing_on_refusal() -> None:
    gw = make_gateway(SAFE, keys=2, key={"rpm": 1}, strategy="omnillm", start=0)
    assert admitted(gw.admit(req(1), 0.0)).key == 0
    assert admitted(gw.admit(req(2), 1.0)).key == 1
    r = rejected(gw.admit(req(3), 2.0), RejectReason.RATE_LIMITED)
    assert r.key is None and "window full" in r.detail
    assert gw.budget.stats().admitted == 2  # no reservation was made for request 3


def test_faithful_tpm_before_budget_and_budget_before_rpm() -> None:
    gw = make_gateway(FAITHFUL, limit=0, key={"tpm": 1_000, "rpm": 1})
    rejected(gw.admit(req(1), 0.0), RejectReason.NO_KEY)  # 1,124 tokens > cap 1,000
    assert gw.budget.stats().rejected == 0  # the budget was never asked
    gw = make_gateway(FAITHFUL, limit=5_619, key={"rpm": 1})
    rejected(gw.admit(req(1), 0.0), RejectReason.BUDGET)
    (k,) = gw.key_status(0.0)
    assert k.rpm_used == 0 and k.inflight_tokens == 0  # no RPM slot spent, TPM returned


# -- [3] the RPM slot is spent before the call and never returned ------------------------------


def test_faithful_rpm_slot_is_spent_before_the_call_and_never_returned() -> None:
    gw = make_gateway(FAITHFUL, key={"rpm": 1})
    gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(500), 1.0)
    rejected(gw.admit(req(2), 2.0), RejectReason.RATE_LIMITED)
    rejected(gw.admit(req(3), 60.0), RejectReason.RATE_LIMITED)  # exactly 60 s old: counts
    admitted(gw.admit(req(4), 60.5))


@pytest.mark.parametrize(("policy", "at_six"), [(FAITHFUL, "rate-limited"), (SAFE, "admitted")])
def test_rpm_slot_of_a_request_refused_with_429(policy: str, at_six: str) -> None:
    gw = make_gateway(policy, key={"rpm": 1})
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(429, 5.0), 1.0)
    assert s.key_effect == "cooldown"
    rejected(gw.admit(req(2), 3.0), RejectReason.NO_KEY)  # cooling until 6
    got = gw.admit(req(3), 6.0)
    if at_six == "admitted":  # safe: the provider refused it, so its slot is given back
        admitted(got)
    else:  # faithful: the slot stays until 60 s after admission
        rejected(got, RejectReason.RATE_LIMITED)


def test_safe_keeps_the_rpm_slot_of_a_call_the_provider_processed() -> None:
    gw = make_gateway(SAFE, key={"rpm": 1})
    gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(500), 1.0)
    rejected(gw.admit(req(2), 2.0), RejectReason.RATE_LIMITED)


# -- [3] the attempt cap misses free capacity when more than 5 keys are available -------------


def fill_five(gw: Gateway) -> None:
    """Requests of 100 + 900 = 1,000 tokens fill keys k0..k4 (cap 1,000 each)."""
    for i in range(5):
        assert admitted(gw.admit(req(i, out=900), 0.0)).key == i


def test_faithful_attempt_cap_misses_free_capacity_with_more_than_five_available_keys() -> None:
    gw = make_gateway(FAITHFUL, keys=7, key={"tpm": 1_000}, start=0)
    fill_five(gw)
    r = rejected(gw.admit(req(9, out=900), 1.0), RejectReason.NO_KEY)
    assert "attempt cap (5)" in r.detail  # k5 and k6 are idle


def test_faithful_attempt_cap_counts_only_available_keys() -> None:
    gw = make_gateway(FAITHFUL, keys=7, key={"tpm": 1_000}, start=0)
    fill_five(gw)
    gw.pool.keys[2].dead = True  # skipped without using an attempt
    assert admitted(gw.admit(req(9, out=900), 1.0)).key == 5


def test_safe_default_strategy_sees_every_key_and_finds_the_free_one() -> None:
    gw = make_gateway(SAFE, keys=7, key={"tpm": 1_000}, start=0)
    for i in range(5):
        admitted(gw.admit(req(i, out=900), 0.0))
    assert admitted(gw.admit(req(9, out=900), 1.0)).key in (5, 6)


# -- [4] 401 and 403 kill the key forever ------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_faithful_401_and_403_kill_the_key_forever(status: int) -> None:
    gw = make_gateway(FAITHFUL)
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(status), 1.0)
    assert (s.key_effect, s.charged) == ("dead", 0)
    rejected(gw.admit(req(2), 1_000_000.0), RejectReason.NO_KEY)
    (k,) = gw.key_status(1_000_000.0)
    assert k.dead and not k.available


def test_safe_401_kills_the_key_but_403_is_a_recoverable_failure() -> None:
    gw = make_gateway(SAFE)
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(403), 1.0)
    assert s.key_effect == "failure"
    s = gw.finish(admitted(gw.admit(req(2), 2.0)), http_error(401), 3.0)
    assert s.key_effect == "dead"
    rejected(gw.admit(req(3), 4.0), RejectReason.NO_KEY)


# -- [4] 429: cooldown from an integer retry-after, else 60 s; the breaker is untouched --------


def four_failures_then_two_in_flight(gw: Gateway) -> tuple[Admission, Admission]:
    for i in range(4):
        gw.finish(admitted(gw.admit(req(i), float(i))), http_error(500), float(i))
    return admitted(gw.admit(req(10), 5.0)), admitted(gw.admit(req(11), 5.0))


def test_faithful_429_cooldown_integer_retry_after_else_60s_no_breaker_change() -> None:
    gw = make_gateway(FAITHFUL)
    a, b = four_failures_then_two_in_flight(gw)
    assert gw.finish(a, http_error(429, 7.0), 10.0).key_effect == "cooldown"
    (k,) = gw.key_status(10.0)
    assert k.cooling_until == 17.0 and k.consecutive_failures == 4  # no increment, no reset
    gw.finish(b, http_error(429, 1.0), 11.0)
    assert gw.key_status(11.0)[0].cooling_until == 17.0  # max(old, now + retry_after)
    rejected(gw.admit(req(12), 16.9), RejectReason.NO_KEY)
    c = admitted(gw.admit(req(13), 17.0))
    gw.finish(c, http_error(429, 2.5), 20.0)  # fractional: omnillm falls back to 60 s
    assert gw.key_status(20.0)[0].cooling_until == 80.0
    d = admitted(gw.admit(req(14), 80.0))
    gw.finish(d, http_error(429), 81.0)  # no header: 60 s
    assert gw.key_status(81.0)[0].cooling_until == 141.0


def test_safe_429_cooldown_honours_a_fractional_retry_after() -> None:
    gw = make_gateway(SAFE)
    a, _ = four_failures_then_two_in_flight(gw)
    gw.finish(a, http_error(429, 2.5), 10.0)
    (k,) = gw.key_status(10.0)
    assert k.cooling_until == 12.5 and k.consecutive_failures == 4


# -- [4] breaker: 5 failures / 30 s, count reset after tripping, 400/404/timeouts count --------

FAILURES = {
    "400": http_error(400),
    "404": http_error(404),
    "timeout": timeout(),
    "500": http_error(500),
}


def five_failures(gw: Gateway, failure: Outcome) -> list[str]:
    effects = []
    for i in range(5):
        a = admitted(gw.admit(req(i), float(i)))
        effects.append(gw.finish(a, failure, i + 0.5).key_effect)
    return effects


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_faithful_breaker_five_failures_thirty_seconds_client_errors_and_timeouts_count(
    name: str,
) -> None:
    gw = make_gateway(FAITHFUL)
    assert five_failures(gw, FAILURES[name]) == ["failure"] * 4 + ["breaker-tripped"]
    (k,) = gw.key_status(4.5)
    assert k.breaker == "open" and k.consecutive_failures == 0  # reset after tripping
    rejected(gw.admit(req(9), 34.4), RejectReason.NO_KEY)
    admitted(gw.admit(req(10), 34.5))  # 4.5 + 30


def test_faithful_breaker_has_no_half_open_full_traffic_after_cooldown() -> None:
    gw = make_gateway(FAITHFUL)
    five_failures(gw, timeout())
    for i in range(3):
        admitted(gw.admit(req(20 + i), 34.5))
    assert gw.key_status(34.5)[0].breaker == "closed"


@pytest.mark.parametrize("name", ["400", "404"])
def test_safe_breaker_ignores_client_errors(name: str) -> None:
    gw = make_gateway(SAFE)
    assert five_failures(gw, FAILURES[name]) == ["none"] * 5
    assert gw.key_status(5.0)[0].breaker == "closed"


def test_safe_breaker_half_open_lets_one_probe_through() -> None:
    gw = make_gateway(SAFE)
    assert five_failures(gw, timeout())[-1] == "breaker-tripped"
    rejected(gw.admit(req(9), 34.4), RejectReason.NO_KEY)
    probe = admitted(gw.admit(req(10), 34.5))
    r = rejected(gw.admit(req(11), 34.5), RejectReason.NO_KEY)
    assert "half-open" in r.detail
    gw.finish(probe, ok(Usage(100, 10)), 35.0)
    assert gw.key_status(35.0)[0].breaker == "closed"
    admitted(gw.admit(req(12), 35.0))
    admitted(gw.admit(req(13), 35.0))


# -- [2] estimate = bytes/4 + max_output (1024 default), all at the input rate -----------------


def test_faithful_estimate_is_bytes_over_four_plus_max_output_at_the_input_rate() -> None:
    gw = make_gateway(FAITHFUL)
    e = gw.estimate(req(1))
    assert (e.tokens, e.cost, e.bounded) == (1_124, 5_620, False)
    assert gw.estimate(req(2, out=None)).tokens == 1_124  # 1024 when max_output is unset
    # 100 CJK tokens of 3 bytes each: bytes/4 over-counts the prompt 3x.
    assert gw.estimate(req(3, prompt_bytes=1_200)).cost == (300 + 1_024) * 5
    # an unknown model is priced as gpt-4o through the fallback
    assert gw.estimate(req(4, model="gpt-4.1-mini")).cost == 5_620


def test_safe_estimate_is_an_upper_bound_at_the_output_rate() -> None:
    gw = make_gateway(SAFE)
    e = gw.estimate(req(1))
    assert (e.tokens, e.cost, e.bounded) == (1_124, 100 * 5 + 1_024 * 15, True)
    unbounded = gw.estimate(req(2, out=None))
    assert unbounded.cost == 100 * 5 + 4_096 * 15 and not unbounded.bounded


# -- [5] settle has no limit guard: overshoot when actual > estimate --------------------------


def test_faithful_settle_without_limit_guard_overshoots_when_actual_exceeds_estimate() -> None:
    gw = make_gateway(FAITHFUL, limit=6_000)
    a = admitted(gw.admit(req(1), 0.0))
    s = gw.finish(a, ok(Usage(100, 1_024)), 2.0)
    assert (s.charged, s.underestimate) == (15_860, 15_860 - 5_620)
    b = gw.budget.stats()
    assert b.used == 15_860 and b.overshoot == 15_860 - 6_000
    st = gw.stats()
    assert st.overshoot == 9_860 and st.underestimated == 10_240
    assert st.underestimated_requests == 1
    rejected(gw.admit(req(2, prompt=0, out=0), 3.0), RejectReason.BUDGET)  # even est 5 fails


def test_safe_refuses_what_it_cannot_afford_in_the_worst_case() -> None:
    gw = make_gateway(SAFE, limit=6_000)
    r = rejected(gw.admit(req(1), 0.0), RejectReason.BUDGET)
    assert "15860" in r.detail and gw.budget.used == 0
    gw = make_gateway(SAFE, limit=15_860)
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), ok(Usage(100, 1_024)), 2.0)
    assert s.underestimate == 0 and gw.budget.stats().overshoot == 0


def test_safe_reports_overshoot_when_a_provider_exceeds_max_output() -> None:
    gw = make_gateway(SAFE, limit=15_860)
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), ok(Usage(100, 1_100)), 2.0)
    assert s.underestimate == 76 * 15
    assert gw.stats().overshoot == 76 * 15 and gw.stats().underestimated_requests == 1


# -- [2] errors and cancellations of non-streamed calls refund fully ---------------------------

ENDINGS = {"500": http_error(500), "cancelled": cancelled(), "timeout": timeout()}


@pytest.mark.parametrize("name", sorted(ENDINGS))
def test_faithful_errors_and_cancellations_of_non_streamed_calls_refund_fully(name: str) -> None:
    gw = make_gateway(FAITHFUL)
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), ENDINGS[name], 1.0)
    assert s.charged == 0 and gw.budget.used == 0


@pytest.mark.parametrize(
    ("name", "charged"), [("500", 0), ("cancelled", 15_860), ("timeout", 15_860)]
)
def test_safe_charges_the_bound_when_the_provider_may_have_billed(name: str, charged: int) -> None:
    gw = make_gateway(SAFE)
    s = gw.finish(admitted(gw.admit(req(1), 0.0)), ENDINGS[name], 1.0)
    assert s.charged == charged == gw.budget.used


# -- [2] streamed calls dropped or failed mid-way settle on partial usage ----------------------


def test_faithful_streamed_calls_dropped_mid_way_settle_on_partial_usage() -> None:
    gw = make_gateway(FAITHFUL)
    a = admitted(gw.admit(req(1, stream=True), 0.0))
    s = gw.finish(a, stream_dropped(Usage(100, 300)), 1.0)
    assert (s.charged, s.key_effect) == (100 * 5 + 300 * 15, "failure")
    # no usage seen: {prompt: est_prompt = bytes/4, completion: 0}
    a = admitted(gw.admit(req(2, stream=True), 2.0))
    assert gw.finish(a, stream_dropped(None), 3.0).charged == 100 * 5
    # cancelling a stream charges the partial cost; cancelling a call refunds everything
    a = admitted(gw.admit(req(3, stream=True), 4.0))
    s = gw.finish(a, cancelled(), 5.0)
    assert (s.charged, s.key_effect) == (500, "none")
    a = admitted(gw.admit(req(4, stream=True, prompt_bytes=2_000), 6.0))
    assert gw.finish(a, timeout(), 7.0).charged == 500 * 5


def test_safe_streams_with_no_usage_charge_the_bound() -> None:
    gw = make_gateway(SAFE)
    a = admitted(gw.admit(req(1, stream=True), 0.0))
    assert gw.finish(a, stream_dropped(Usage(100, 300)), 1.0).charged == 5_000
    a = admitted(gw.admit(req(2, stream=True), 2.0))
    assert gw.finish(a, stream_dropped(None), 3.0).charged == 15_860
    a = admitted(gw.admit(req(3, stream=True), 4.0))
    assert gw.finish(a, cancelled(), 5.0).charged == 15_860
