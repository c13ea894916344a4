"""The gateway's per-request records are immutable named tuples (issue 15: a frozen dataclass
cost several times as much to build): they keep the checks, keyword-only construction and
immutability of the dataclasses they replaced, and survive copy and pickle."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random

import pytest

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.errors import InvalidValueError
from omnillm_sim.estimate import EstimateRequest
from omnillm_sim.gateway import (
    Admission,
    Gateway,
    GatewayConfig,
    KeyConfig,
    Outcome,
    Request,
    Settlement,
    completed_then_cancelled,
    http_error,
    ok,
    stream_abandoned,
    timeout,
)
from omnillm_sim.policy import OMNILLM_0_1_5
from omnillm_sim.pricing import Usage, catalogue


@pytest.mark.parametrize(
    "record",
    [
        Request(id=7, model="gpt-4o", prompt_tokens=3, max_output_tokens=9, stream=True),
        EstimateRequest(model="gpt-4o", prompt_bytes=40, messages=2, thinking_tokens=5),
        Outcome("http_error", status=429, retry_after="7"),
    ],
)
def test_records_survive_copy_and_pickle(record: object) -> None:
    # Request and EstimateRequest take keywords only: a named tuple's default copy and pickle
    # call the constructor with positional arguments, which they refuse.
    for again in (copy.copy(record), copy.deepcopy(record), pickle.loads(pickle.dumps(record))):
        assert again == record and type(again) is type(record)
        assert repr(again) == repr(record)


def test_keyword_only_records_still_refuse_positional_arguments() -> None:
    with pytest.raises(TypeError):
        Request(1, "m", 1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        EstimateRequest("m", 10)  # type: ignore[misc]


def test_ok_checks_its_usage_although_it_skips_the_generic_checks() -> None:
    assert ok(Usage(3, 4)) == Outcome("ok", Usage(3, 4))
    assert ok(Usage(3, 4)).kind == "ok" and ok(Usage(3, 4)).cost is None
    with pytest.raises(InvalidValueError, match="usage"):
        ok((3, 4, 0, 0, 0, None))  # type: ignore[arg-type]  # a tuple is not a Usage
    with pytest.raises(InvalidValueError, match="usage"):
        ok(None)  # type: ignore[arg-type]
    assert timeout() == Outcome("timeout") and timeout() is timeout()  # immutable: shared


def test_records_refuse_assignment() -> None:
    gw = Gateway(GatewayConfig(keys=(KeyConfig(label="a"),)), budget=BudgetTracker("1.00"),
                 prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=random.Random(0))
    adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=10), 0.0)
    settlement = gw.finish(adm, ok(Usage(10, 1)), 1.0)  # type: ignore[arg-type]
    for record in (adm, settlement, adm.estimate, Usage(1, 1), EstimateRequest(model="m")):
        with pytest.raises(AttributeError):
            record.cost = 1  # type: ignore[misc,union-attr]
        with pytest.raises(AttributeError):
            record.anything = 1  # type: ignore[union-attr]  # no __dict__ either


def _gateway() -> Gateway:
    return Gateway(GatewayConfig(keys=(KeyConfig(label="a"),)), budget=BudgetTracker("1.00"),
                   prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=random.Random(0))


def test_a_settlement_built_by_hand_has_the_documented_defaults() -> None:
    gw = _gateway()
    adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=10), 0.0)
    s = Settlement(adm, ok(Usage(1, 1)), 5, "success")  # type: ignore[arg-type]
    assert (s.underestimate, s.leaked, s.resettled) == (0, False, None)


def test_an_abandoned_stream_leaks_its_estimate_and_underestimates_nothing() -> None:
    gw = _gateway()  # the faithful policy (omnillm 8.2)
    adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=10, stream=True), 0.0)
    assert isinstance(adm, Admission)
    s = gw.finish(adm, stream_abandoned(), 1.0)
    assert s.leaked is True and (s.charged, s.underestimate, s.key_effect) == (0, 0, "none")
    assert gw.budget.used == adm.estimate.cost  # reserved for good


@pytest.mark.parametrize("seen_by", ["admit", "finish", "key_status"])
def test_the_gateway_remembers_the_latest_time_whoever_saw_it(seen_by: str) -> None:
    # Two keys taken in turn: the key the refused request would get has never seen 5.0, so
    # only the gateway's own clock can refuse it, before it touches any budget or key.
    gw = Gateway(
        GatewayConfig(keys=(KeyConfig(label="a"), KeyConfig(label="b")), strategy="round-robin"),
        budget=BudgetTracker("1.00"), prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"),
        rng=random.Random(0),
    )
    adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=10), 1.0)
    if seen_by == "admit":
        gw.finish(adm, ok(Usage(10, 1)), 1.0)  # type: ignore[arg-type]
        gw.admit(Request(id=3, model="gpt-4o", prompt_tokens=10), 5.0)  # takes key "b"
    elif seen_by == "finish":
        gw.finish(adm, ok(Usage(10, 1)), 5.0)  # type: ignore[arg-type]
    else:
        gw.key_status(5.0)
    before = (gw.budget.used, gw.in_flight, [k.cap.inflight for k in gw.pool.keys])
    with pytest.raises(InvalidValueError, match=r"^now\(=4\.0\) must be >= 5\.0"):
        gw.admit(Request(id=2, model="gpt-4o", prompt_tokens=10), 4.0)
    assert (gw.budget.used, gw.in_flight, [k.cap.inflight for k in gw.pool.keys]) == before


def test_without_the_stream_quirks_a_faithful_gateway_settles_an_abandoned_stream() -> None:
    # An ablation: omnillm's handle-less budget calls without its stream quirks (8.2). The
    # quirk needs both: no reservation handle and the policy's quirk flag.
    no_quirks = dataclasses.replace(OMNILLM_0_1_5, name="faithful-without-8.2", stream_quirks=False)
    gw = Gateway(GatewayConfig(keys=(KeyConfig(label="a"),), policy=no_quirks),
                 budget=BudgetTracker("1.00"),
                 prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=random.Random(0))
    adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=10, stream=True), 0.0)
    assert isinstance(adm, Admission) and adm.reservation is None
    s = gw.finish(adm, stream_abandoned(), 1.0)
    assert s.leaked is False and gw.budget.stats().open_count == 0
    assert gw.stats().leaked == 0 and gw.stats().cancelled == 1


@pytest.mark.parametrize("policy", ["omnillm-0.1.5", "safe"])
def test_an_underestimate_counts_from_one_micro_dollar_over_the_estimate(policy: str) -> None:
    """A replayed bill (an outcome with ``cost``) charges exactly that: at the estimate or
    below it nothing is underestimated; one micro-dollar over is one µ$ and one request."""
    gw = Gateway(GatewayConfig(keys=(KeyConfig(label="a"),), policy=policy),
                 budget=BudgetTracker("1.00"),
                 prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=random.Random(0))
    seen = []
    for i, over in enumerate((0, -1, 1)):
        adm = gw.admit(Request(id=i, model="gpt-4o", prompt_tokens=400), float(i))
        assert isinstance(adm, Admission) and adm.estimate.cost > 1
        bill = adm.estimate.cost + over
        s = gw.finish(adm, Outcome("ok", Usage(1, 1), cost=bill), float(i))
        seen.append((s.charged - bill, s.underestimate, gw.stats().underestimated_requests,
                     gw.stats().underestimated))
    assert seen == [(0, 0, 0, 0), (0, 0, 0, 0), (0, 1, 1, 1)]


def test_an_ok_reply_with_a_replayed_bill_is_charged_the_bill_not_the_price() -> None:
    gw = _gateway()
    adm = gw.admit(Request(id=1, model="gpt-4o", prompt_tokens=10), 0.0)
    assert isinstance(adm, Admission)
    usage = Usage(10, 5)
    priced = gw.prices.cost("gpt-4o", usage)
    s = gw.finish(adm, Outcome("ok", usage, cost=priced + 7), 1.0)
    assert s.charged == priced + 7 and gw.stats().charged == priced + 7
    adm = gw.admit(Request(id=2, model="gpt-4o", prompt_tokens=10), 2.0)
    assert gw.finish(adm, ok(usage), 3.0).charged == priced  # type: ignore[arg-type]


def _safe_gateway(threshold: int) -> Gateway:
    return Gateway(GatewayConfig(keys=(KeyConfig(label="a"),), policy="safe",
                                 breaker_threshold=threshold),
                   budget=BudgetTracker("1.00"),
                   prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=random.Random(0))


def test_a_late_cancel_after_completed_is_a_success_for_the_keys_breaker() -> None:
    """failure, completed-then-cancelled, failure: the middle one resets the consecutive
    count, so a threshold of 2 does not trip (two failures in a row do)."""

    def effects(*outcomes: Outcome) -> list[str]:
        gw = _safe_gateway(threshold=2)
        seen = []
        for i, outcome in enumerate(outcomes):
            adm = gw.admit(Request(id=i, model="gpt-4o", prompt_tokens=10, stream=True),
                           float(i))
            assert isinstance(adm, Admission)
            seen.append(gw.finish(adm, outcome, float(i)).key_effect)
        return seen

    late = completed_then_cancelled(Usage(10, 3))
    assert effects(http_error(500), late, http_error(500)) == ["failure", "success", "failure"]
    assert effects(http_error(500), http_error(500)) == ["failure", "breaker-tripped"]


def test_without_the_quirks_an_abandoned_stream_says_nothing_about_the_key() -> None:
    gw = _safe_gateway(threshold=1)  # one failure would trip it
    for i in range(3):
        adm = gw.admit(Request(id=i, model="gpt-4o", prompt_tokens=10, stream=True), float(i))
        assert isinstance(adm, Admission), adm  # still admitted: the key never tripped
        assert gw.finish(adm, stream_abandoned(), float(i)).key_effect == "none"
    assert gw.stats().breaker_trips == 0


def test_completed_then_cancelled_needs_the_usage_it_completed_with() -> None:
    with pytest.raises(InvalidValueError, match="usage"):
        Outcome("completed_then_cancelled")
    assert Outcome("completed_then_cancelled", Usage(1, 2)).usage == Usage(1, 2)


def test_the_faithful_quirks_count_each_double_settle_and_ignore_each_abandoned_stream() -> None:
    """omnillm 8.1 and 8.2, counted: every late cancel settles a second time, and every
    abandoned stream is reported to the key's breaker as saying nothing."""
    from omnillm_sim.budget import SeedBudgetTracker

    gw = Gateway(GatewayConfig(keys=(KeyConfig(label="a"),)),
                 budget=SeedBudgetTracker.from_micros(10**9, name="seed"),
                 prices=catalogue("omnillm-0.1.5", fallback="gpt-4o"), rng=random.Random(0))
    # The leaks first: their estimates stay reserved, so the late cancels' second refunds
    # (charge - estimate each) do not wrap the u64 counter below zero.
    endings = [stream_abandoned(), stream_abandoned(), stream_abandoned(),
               completed_then_cancelled(Usage(10, 3)), completed_then_cancelled(Usage(10, 4))]
    for i, outcome in enumerate(endings):
        adm = gw.admit(Request(id=i, model="gpt-4o", prompt_tokens=10, stream=True), float(i))
        assert isinstance(adm, Admission)
        gw.finish(adm, outcome, float(i))
    assert gw.stats().double_settled == 2 and gw.stats().leaked == 3
    breaker = gw.pool.keys[0].breaker.stats()
    assert (breaker.successes, breaker.ignored, breaker.failures) == (2, 3, 0)
