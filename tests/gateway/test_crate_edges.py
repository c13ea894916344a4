"""Edges where the faithful policy must give the omnillm crate's answer (issue 12).

Every expected value is a fact about the crate at tag v0.1.5 (file and line in the comment),
worked out by hand from its source, next to the safe policy's answer on the same input.
"""

import pytest
from gateway_helpers import PRICES, FixedStart, make_gateway, req
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.breaker import FaithfulBreaker, SafeBreaker
from omnillm_sim.budget import BudgetTracker, SeedBudgetTracker
from omnillm_sim.errors import ReservationStateError
from omnillm_sim.estimate import get_estimator, omnillm_prompt_bytes
from omnillm_sim.gateway import (
    Admission,
    Gateway,
    GatewayConfig,
    KeyConfig,
    Rejection,
    RejectReason,
    completed_then_cancelled,
    http_error,
    ok,
    omnillm_retry_after,
    seconds_retry_after,
    stream_abandoned,
)
from omnillm_sim.keypool import KeyState
from omnillm_sim.money import usd_to_micro
from omnillm_sim.policy import OMNILLM_0_1_5, SAFE
from omnillm_sim.pricing import Usage
from omnillm_sim.ratelimit import SlidingWindowLog

FAITHFUL = "omnillm-0.1.5"


def admitted(result: Admission | Rejection) -> Admission:
    assert isinstance(result, Admission), result
    return result


def rejected(result: Admission | Rejection, reason: RejectReason) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    return result


# -- time: exact edges (window.rs 35-42: `t < now - 60s` evicts, nanosecond Instant) ----------


def test_an_entry_exactly_sixty_seconds_old_still_counts_at_decimal_times() -> None:
    assert 295.343 - 235.343 > 60.0  # in floats; exactly 60 s in decimal
    w = SlidingWindowLog(1, window=60.0)
    assert w.try_acquire(235.343)
    assert not w.try_acquire(295.343)
    assert w.try_acquire(295.343001)


@pytest.mark.parametrize("policy", [FAITHFUL, "safe"])
def test_gateway_refuses_at_exactly_sixty_seconds(policy: str) -> None:
    gw = make_gateway(policy, key={"rpm": 1})
    admitted(gw.admit(req(1), 235.343))
    rejected(gw.admit(req(2), 295.343), RejectReason.RATE_LIMITED)
    admitted(gw.admit(req(3), 295.343001))


def test_safe_cooldown_ends_exactly_at_decimal_sum() -> None:
    assert 0.1 + 0.2 > 0.3  # in floats
    gw = make_gateway("safe")
    gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(429, "0.2"), 0.1)
    rejected(gw.admit(req(2), 0.299999), RejectReason.NO_KEY)
    admitted(gw.admit(req(3), 0.3))


# -- time: the crate's millisecond wall clock (inner.rs 113-118, pool.rs 98 and 112) -----------


def test_faithful_429_deadline_is_truncated_to_whole_milliseconds() -> None:
    # now_millis() = 1000 at 1.000600 s; until = 1000 + 1000 ms: available at 2.000000 s
    gw = make_gateway(FAITHFUL)
    gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(429, "1"), 1.000600)
    assert gw.key_status(1.0006)[0].cooling_until == 2.0
    rejected(gw.admit(req(2), 1.999999), RejectReason.NO_KEY)
    admitted(gw.admit(req(3), 2.0))


def test_safe_429_deadline_is_exact() -> None:
    gw = make_gateway("safe")
    gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(429, "1"), 1.000600)
    rejected(gw.admit(req(2), 2.0), RejectReason.NO_KEY)
    admitted(gw.admit(req(3), 2.0006))


def test_faithful_breaker_deadline_is_truncated_to_whole_milliseconds() -> None:
    # the fifth failure at 4.000999 s: now_millis() = 4000, until = 4000 + 30,000 ms
    gw = make_gateway(FAITHFUL)
    for i in range(5):
        a = admitted(gw.admit(req(i), float(i)))
        gw.finish(a, http_error(500), i + 0.000999)
    rejected(gw.admit(req(9), 33.999999), RejectReason.NO_KEY)
    admitted(gw.admit(req(10), 34.0))
    b = FaithfulBreaker(threshold=1, cooldown=0.0015)  # Duration 1.5 ms: as_millis() = 1
    b.record_failure(b.acquire(0.0), 0.0)
    assert b.open_until == 0.001


def test_safe_breaker_deadline_is_exact() -> None:
    b = SafeBreaker(threshold=1, cooldown=30.0)
    b.record_failure(b.acquire(0.0), 4.000999)
    assert b.state(34.000998) == "open" and b.state(34.000999) == "half-open"


# -- Hypothesis: float times with up to 6 decimals decide like integer microseconds -----------

micros = st.lists(st.integers(min_value=0, max_value=400_000_000), min_size=1, max_size=40)


@given(micros, st.integers(min_value=1, max_value=4))
def test_window_decides_on_decimal_times_as_on_integer_microseconds(
    times: list[int], limit: int
) -> None:
    times.sort()
    seconds = SlidingWindowLog(limit, window=60.0)
    log: list[int] = []  # the exact log in integer microseconds
    for t in times:
        expected = sum(1 for a in log if t - a <= 60_000_000) < limit
        if expected:
            log.append(t)
        assert bool(seconds.try_acquire(t / 1_000_000)) is expected, (t, log)


@given(
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**9),
    st.booleans(),
)
def test_cooldowns_decide_on_decimal_times_as_on_integer_microseconds(
    start: int, retry_ms: int, probe: int, wall_clock_ms: bool
) -> None:
    key = KeyState(0, KeyConfig(label="k"), FaithfulBreaker(), token_bucket=False)
    retry_after = retry_ms / 1000  # a header "1.234" read by the safe policy
    key.cool_down(start / 1e6, retry_after, wall_clock_ms=wall_clock_ms)
    until = (start // 1000 + retry_ms) * 1000 if wall_clock_ms else start + retry_ms * 1000
    at = start + probe
    assert key.cooling(at / 1e6) is (at < until)


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_breakers_decide_on_decimal_times_as_on_integer_microseconds(
    trip: int, probe: int
) -> None:
    faithful, safe = FaithfulBreaker(threshold=1), SafeBreaker(threshold=1)
    faithful.record_failure(faithful.acquire(0.0), trip / 1e6)
    safe.record_failure(safe.acquire(0.0), trip / 1e6)
    at = (trip + probe) / 1e6
    assert faithful.allow(at) is (trip + probe >= (trip // 1000 + 30_000) * 1000)
    assert safe.allow(at) is (trip + probe >= trip + 30_000_000)


# -- retry-after as the crate reads it (dispatcher.rs 500-506: parse::<u64>() else 60 s) -------


@pytest.mark.parametrize(
    ("header", "crate", "safe"),
    [
        ("7", 7.0, 7.0),
        ("+5", 5.0, 5.0),  # Rust's u64 FromStr takes a leading '+'
        ("007", 7.0, 7.0),
        ("2.0", 60.0, 2.0),
        ("2.5", 60.0, 2.5),
        ("1e1", 60.0, 10.0),
        ("-1", 60.0, 60.0),
        ("", 60.0, 60.0),
        (" 7", 60.0, 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0, 60.0),
        ("18446744073709551615", 18446744073709551615.0, 18446744073709551615.0),
        ("18446744073709551616", 60.0, 18446744073709551616.0),  # above u64::MAX
        ("\u0667", 60.0, 60.0),  # a non-ASCII digit
        (None, 60.0, 60.0),
    ],
)
def test_retry_after_header_readings(header: str | None, crate: float, safe: float) -> None:
    assert omnillm_retry_after(header) == crate
    assert seconds_retry_after(header) == safe


@pytest.mark.parametrize(
    ("header", "faithful", "safe"),
    [("2.0", 70.0, 12.0), ("1e1", 70.0, 20.0), ("-1", 70.0, 70.0), ("3", 13.0, 13.0)],
)
def test_gateway_cools_a_key_by_the_header_string(
    header: str, faithful: float, safe: float
) -> None:
    for policy, until in ((FAITHFUL, faithful), ("safe", safe)):
        gw = make_gateway(policy)
        gw.finish(admitted(gw.admit(req(1), 0.0)), http_error(429, header), 10.0)
        assert gw.key_status(10.0)[0].cooling_until == until, policy


# -- the budget limit as the crate sees it (tracker.rs: `(usd * 1e6) as u64`) ------------------


def test_faithful_budget_limit_is_the_truncating_conversion() -> None:
    configured = usd_to_micro("0.0157")
    assert OMNILLM_0_1_5.budget_limit(configured) == 15_699  # 0.0157 * 1e6 = 15699.999...
    assert SAFE.budget_limit(configured) == 15_700
    assert OMNILLM_0_1_5.budget_limit(usd_to_micro("2.01")) == 2_009_999
    assert OMNILLM_0_1_5.budget_limit(usd_to_micro("50")) == 50_000_000


@pytest.mark.parametrize(("limit_of", "fits"), [(OMNILLM_0_1_5, False), (SAFE, True)])
def test_a_reservation_landing_exactly_on_the_limit(limit_of: object, fits: bool) -> None:
    limit = limit_of.budget_limit(usd_to_micro("0.0157"))  # type: ignore[attr-defined]
    gw = make_gateway(FAITHFUL, limit=limit)
    # (100 + 3,040) tokens x 5 µ$ = 15,700 µ$ = $0.0157 exactly
    got = gw.admit(req(1, out=3_040), 0.0)
    assert gw.estimate(req(1, out=3_040)).cost == 15_700
    assert isinstance(got, Admission) is fits


# -- stream outcomes (gateway.rs stream(): reference 8.1 and 8.2) ------------------------------


def test_faithful_dropped_stream_is_never_settled_and_its_key_gets_no_report() -> None:
    gw = make_gateway(FAITHFUL)
    for i in range(4):  # four failures: one more would trip the breaker
        gw.finish(admitted(gw.admit(req(i), float(i))), http_error(500), float(i))
    a = admitted(gw.admit(req(9, stream=True), 5.0))
    s = gw.finish(a, stream_abandoned(), 6.0)
    assert s.leaked and s.charged == 0 and s.key_effect == "none"
    b = gw.budget.stats()
    assert (b.used, b.open_count, b.open_reserved) == (5_620, 1, 5_620)  # reserved for good
    (k,) = gw.key_status(6.0)
    assert k.inflight_tokens == 0 and k.consecutive_failures == 4  # TPM freed by Drop
    st_ = gw.stats()
    assert (st_.leaked, st_.leaked_reserved) == (1, 5_620)


def test_safe_dropped_stream_settles_once_at_the_bound() -> None:
    gw = make_gateway("safe")
    a = admitted(gw.admit(req(1, stream=True), 0.0))
    s = gw.finish(a, stream_abandoned(), 1.0)
    assert not s.leaked and s.charged == 15_860 and gw.budget.stats().open_count == 0


def seed_gateway(policy: str, limit: int) -> Gateway:
    cfg = GatewayConfig(keys=(KeyConfig(label="k0"),), policy=policy)
    budget = SeedBudgetTracker.from_micros(limit) if policy == FAITHFUL else (
        BudgetTracker.from_micros(limit)
    )
    return Gateway(cfg, budget=budget, prices=PRICES, rng=FixedStart())


def test_faithful_cancel_after_completed_settles_twice_and_wraps_the_counter() -> None:
    gw = seed_gateway(FAITHFUL, 10_000_000)
    a = admitted(gw.admit(req(1, stream=True), 0.0))  # est 5,620
    s = gw.finish(a, completed_then_cancelled(Usage(100, 100)), 1.0)  # actual 500 + 1,500
    assert (s.charged, s.resettled, s.key_effect) == (2_000, -3_620, "success")
    # settle(5620, 2000): used = 2,000; again: 2,000 - 3,620 wraps to 2^64 - 1,620
    assert gw.budget.used == 2**64 - 1_620
    assert gw.budget.used_usd() == pytest.approx(1.8446744073709552e13)
    assert gw.budget.remaining() == 0
    budget = gw.budget
    assert isinstance(budget, SeedBudgetTracker)
    assert not budget.try_reserve(0) and not budget.try_reserve(1_619)
    # release build: `cur + estimated` wraps too, so a reservation >= the deficit gets in
    assert budget.try_reserve(1_620) and budget.used == 0


def test_faithful_wrapped_counter_refuses_the_next_small_request() -> None:
    gw = seed_gateway(FAITHFUL, 10_000_000)
    a = admitted(gw.admit(req(1, stream=True), 0.0))
    gw.finish(a, completed_then_cancelled(Usage(100, 100)), 1.0)
    # a request estimated below the 1,620 µ$ deficit: 4 x 5 = 20 ... 300 x 5 = 1,500 µ$
    rejected(gw.admit(req(2, prompt=0, out=300), 2.0), RejectReason.BUDGET)


def test_the_reference_tracker_keeps_refusing_a_double_settle() -> None:
    gw = make_gateway(FAITHFUL)  # a reference BudgetTracker
    a = admitted(gw.admit(req(1, stream=True), 0.0))
    with pytest.raises(ReservationStateError, match="SeedBudgetTracker"):
        gw.finish(a, completed_then_cancelled(Usage(100, 100)), 1.0)
    t = BudgetTracker.from_micros(10_000)
    assert t.try_reserve(5_620)
    t.settle(5_620, 2_000)
    with pytest.raises(ReservationStateError):
        t.settle(5_620, 2_000)


def test_safe_cancel_after_completed_settles_once() -> None:
    gw = seed_gateway("safe", 10_000_000)
    a = admitted(gw.admit(req(1, stream=True), 0.0))
    s = gw.finish(a, completed_then_cancelled(Usage(100, 100)), 1.0)
    assert (s.charged, s.resettled) == (2_000, None) and gw.budget.used == 2_000
    admitted(gw.admit(req(2), 2.0))


def test_faithful_cancel_after_an_underestimated_completion_charges_the_excess_twice() -> None:
    gw = seed_gateway(FAITHFUL, 10_000_000)
    a = admitted(gw.admit(req(1, stream=True), 0.0))
    gw.finish(a, completed_then_cancelled(Usage(100, 1_024)), 1.0)  # actual 15,860
    assert gw.budget.used == 15_860 + (15_860 - 5_620)  # fetch_add twice


@pytest.mark.parametrize("outcome", [stream_abandoned(), completed_then_cancelled(Usage(1, 1))])
def test_stream_outcomes_need_a_stream(outcome: object) -> None:
    gw = make_gateway(FAITHFUL)
    a = admitted(gw.admit(req(1), 0.0))
    with pytest.raises(ValueError, match="needs stream=True"):
        gw.finish(a, outcome, 1.0)  # type: ignore[arg-type]
    assert ok(Usage(1, 1)).kind == "ok"


# -- usage wire shapes, from the provider's JSON (pricing.rs 79-113) ---------------------------


def test_usage_shapes_from_provider_json_priced_as_the_crate() -> None:
    from pytest_omnillm.adapters import usage_from_anthropic, usage_from_openai

    anthropic = usage_from_anthropic({
        "input_tokens": 100, "output_tokens": 300,
        "cache_read_input_tokens": 10_000, "cache_creation_input_tokens": 2_000,
    })
    openai = usage_from_openai({
        "prompt_tokens": 1_000, "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 800},
    })
    assert (anthropic.shape, openai.shape) == ("anthropic", "openai")
    gw = make_gateway(FAITHFUL)
    a = admitted(gw.admit(req(1, model="claude-3-7-sonnet-20250219"), 0.0))
    assert gw.finish(a, ok(anthropic), 1.0).charged == 5_000  # catch-all: cache tokens free
    b = admitted(gw.admit(req(2, model="claude-sonnet-4-5"), 2.0))
    assert gw.finish(b, ok(openai), 3.0).charged == 4_500  # whole prompt at $3/M


# -- omnillm's prompt size of a request body (types/request.rs 100-142, message.rs) ------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # system text (9 bytes) is an input item and, with no `instructions`, folded in again
        ({"messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Hello, world"}]}, 9 + 12 + 9),
        # system and developer folded as "abc\n\nde" (7 bytes) on top of 3 + 2 + 2
        ({"messages": [{"role": "system", "content": "abc"}, {"role": "developer", "content": "de"},
                       {"role": "user", "content": "hi"}]}, 3 + 2 + 2 + 7),
        ({"messages": [{"role": "user", "content": "h\u00e9llo"}]}, 6),  # UTF-8 bytes
        # tool definitions are not counted
        ({"messages": [{"role": "user", "content": "hi"}],
          "tools": [{"type": "function", "function": {"name": "x" * 500}}]}, 2),
        # an image URL counts its length, even a data: URL (26 characters)
        ({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 3 + 26),
        # a tool result is its JSON string: "42" with quotes is 4 bytes
        ({"messages": [{"role": "tool", "tool_call_id": "c1", "content": "42"}]}, 4),
        # a tool call: its arguments parsed and re-serialised compactly ({"a":1}: 7) + name (3)
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "add", "arguments": "{\"a\": 1}"}}]}]}, 7 + 3),
    ],
)
def test_omnillm_prompt_bytes_of_openai_chat_bodies(body: dict[str, object], expected: int) -> None:
    assert omnillm_prompt_bytes(body, "openai-chat") == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # `system` becomes the instructions *and* a first system message: counted twice
        ({"system": "You are terse.", "messages": [{"role": "user", "content": "Hi"}]},
         14 + 14 + 2),
        ({"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
          "messages": [{"role": "user", "content": "Hi"}]}, 3 + 3 + 2),  # "A\nB"
        # base64 image: 80 characters / 8; a document: 17 / 8 = 2
        ({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "A" * 80}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": "B" * 17}}]}]}, 10 + 2),
        # tool use: {"a":1,"b":2} (13) + "add" (3); tool result: text "3" as JSON "\"3\"" (3)
        ({"messages": [
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 1, "b": 2}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1",
                 "content": [{"type": "text", "text": "3"}]}]}]}, 13 + 3 + 3),
        ({"tools": [{"name": "y" * 300, "input_schema": {}}],
          "messages": [{"role": "user", "content": "Hi"}]}, 2),
    ],
)
def test_omnillm_prompt_bytes_of_anthropic_bodies(body: dict[str, object], expected: int) -> None:
    assert omnillm_prompt_bytes(body, "anthropic-messages") == expected


def test_plugin_request_parsing_feeds_the_omnillm_estimator_the_crates_byte_count() -> None:
    import json

    from pytest_omnillm.adapters import match_endpoint, parse_request

    body = {"model": "gpt-4o", "max_tokens": 100,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Hello, world"}],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}
    endpoint = match_endpoint("POST", "/v1/chat/completions")
    assert endpoint is not None
    parsed = parse_request(endpoint, json.dumps(body).encode())
    assert parsed.estimate_request is not None
    est = get_estimator("omnillm").estimate(parsed.estimate_request, PRICES)
    # 30 bytes -> 7 prompt tokens + 100 -> 107 tokens x 5 µ$ (gpt-4o, all at the input rate)
    assert (est.prompt_tokens, est.tokens, est.cost) == (7, 107, 535)


def test_stream_quirk_counters_add_up_over_a_mixed_faithful_run() -> None:
    # Each counter is read after a run that moves every one of them by a different amount.
    from omnillm_sim.gateway import cancelled

    gw = seed_gateway(FAITHFUL, 10_000_000)
    first = gw.finish(admitted(gw.admit(req(1, stream=True), 0.0)), ok(Usage(100, 100)), 0.5)
    assert first.charged == 2_000
    for i, t in ((2, 1.0), (3, 2.0)):  # two dropped streams: 5,620 µ$ each stays reserved
        gw.finish(admitted(gw.admit(req(i, stream=True), t)), stream_abandoned(), t + 0.5)
    gw.finish(admitted(gw.admit(req(4), 3.0)), cancelled(), 3.5)
    late = admitted(gw.admit(req(5, stream=True), 4.0))
    gw.finish(late, completed_then_cancelled(Usage(100, 100)), 4.5)
    s = gw.stats()
    assert (s.leaked, s.leaked_reserved, s.double_settled) == (2, 11_240, 1)
    assert (s.admitted, s.succeeded, s.cancelled, s.failed, s.in_flight) == (5, 2, 3, 0, 0)


def test_an_observed_cost_is_charged_exactly_whatever_the_outcome() -> None:
    from omnillm_sim.errors import InvalidValueError
    from omnillm_sim.gateway import Outcome

    for policy in (FAITHFUL, "safe"):
        gw = make_gateway(policy)
        s = gw.finish(admitted(gw.admit(req(1), 0.0)), Outcome("http_error", status=500, cost=7),
                      1.0)
        assert s.charged == 7 and gw.stats().charged == 7
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidValueError, match=r"^cost\(="):
            Outcome("ok", Usage(1, 1), cost=bad)  # type: ignore[arg-type]
