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
