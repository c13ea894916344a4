"""Hypothesis state machines for the gateway: budget invariants I1-I5 and key invariants.

`GatewayMachine` drives a `Gateway` with random requests, outcomes and clock steps, and after
every step checks, against its own model of what is open:

* I1 and I3 (`check_budget_invariants`), with the model's own sum of underestimates;
* I2 in the form "``used > limit`` only if some charge exceeded its estimate" (under the safe
  policy every in-bounds usage costs at most its estimate, so I2 holds outright; under the
  faithful policy I2 is violated exactly through underestimates);
* I4: the budget's open count equals the admissions not yet finished, and at teardown
  (everything finished) nothing is open;
* I5: a ``BUDGET`` rejection happens only if ``used + estimate > limit``;
* per key: in-flight tokens equal the open estimates on it and stay within the cap; the
  RPM window never holds more than ``rpm``; no admission goes to a dead key; the safe
  breaker never has more than ``half_open_probes`` probes in flight.

Use a subclass per policy in a test module::

    class SafeMachine(GatewayMachine):
        policy = "safe"
    TestSafe = SafeMachine.TestCase
"""

from __future__ import annotations

import random
from typing import ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from omnillm_sim.breaker import SafeBreaker
from omnillm_sim.budget import BudgetTracker, check_budget_invariants
from omnillm_sim.estimate import EstimateRequest, get_estimator
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
from omnillm_sim.keypool import STRATEGIES
from omnillm_sim.policy import get_policy
from omnillm_sim.pricing import Usage, catalogue

__all__ = ["GatewayMachine"]

PRICES = catalogue("omnillm-0.1.5", fallback="gpt-4o")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-haiku", "claude-sonnet-4-5", "o3")
STATUSES = (400, 401, 403, 404, 408, 429, 500, 503)


class GatewayMachine(RuleBasedStateMachine):
    """A gateway under random traffic, checked against budget and key invariants."""

    policy: ClassVar[str] = "safe"
    admissions = Bundle("admissions")

    def __init__(self) -> None:
        super().__init__()
        self.gw: Gateway | None = None
        self.now = 0.0
        self.next_id = 0
        self.open: dict[int, Admission] = {}
        self.underestimated = 0
        self.probes = 1

    @property
    def g(self) -> Gateway:
        assert self.gw is not None
        return self.gw

    @initialize(
        limit=st.integers(min_value=0, max_value=300_000),
        nkeys=st.integers(min_value=1, max_value=4),
        rpm=st.integers(min_value=1, max_value=6),
        tpm=st.integers(min_value=300, max_value=6_000),
        per_minute=st.none() | st.integers(min_value=500, max_value=20_000),
        strategy=st.none() | st.sampled_from(sorted(STRATEGIES)),
        threshold=st.integers(min_value=1, max_value=3),
        probes=st.integers(min_value=1, max_value=2),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
    )
    def create(
        self,
        limit: int,
        nkeys: int,
        rpm: int,
        tpm: int,
        per_minute: int | None,
        strategy: str | None,
        threshold: int,
        probes: int,
        seed: int,
    ) -> None:
        keys = tuple(
            KeyConfig(label=f"k{i}", rpm=rpm, tpm=tpm, tokens_per_minute=per_minute)
            for i in range(nkeys)
        )
        config = GatewayConfig(
            keys=keys,
            policy=self.policy,
            strategy=strategy,
            breaker_threshold=threshold,
            breaker_cooldown=10.0,
            half_open_probes=probes,
        )
        self.probes = probes
        self.estimator = get_estimator(get_policy(self.policy).estimator)
        self.gw = Gateway(
            config, budget=BudgetTracker.from_micros(limit), prices=PRICES, rng=random.Random(seed)
        )

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 10.0, 30.0, 60.0, 61.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(
        target=admissions,
        model=st.sampled_from(MODELS),
        prompt=st.integers(min_value=0, max_value=400),
        out=st.none() | st.integers(min_value=0, max_value=800),
        stream=st.booleans(),
        prompt_bytes=st.none() | st.integers(min_value=0, max_value=3_000),
    )
    def admit(
        self, model: str, prompt: int, out: int | None, stream: bool, prompt_bytes: int | None
    ) -> object:
        self.next_id += 1
        request = Request(
            id=self.next_id,
            model=model,
            prompt_tokens=prompt,
            max_output_tokens=out,
            stream=stream,
            prompt_bytes=prompt_bytes,
        )
        expected = self.estimator.estimate(
            EstimateRequest(
                model=model,
                prompt_bytes=request.bytes,
                max_output_tokens=out,
                prompt_tokens=prompt,
            ),
            PRICES,
        )
        before = self.g.budget.stats()
        dead = [k.dead for k in self.g.pool.keys]
        result = self.g.admit(request, self.now)
        assert result.estimate == expected
        if isinstance(result, Rejection):
            if result.reason is RejectReason.BUDGET:
                assert before.used + expected.cost > before.limit, "I5: spurious denial"
            assert self.g.budget.used == before.used, "a rejection changed the budget"
            return multiple()
        assert before.used + expected.cost <= before.limit, "admitted beyond the limit"
        assert not dead[result.key], "admitted to a dead key"
        self.open[id(result)] = result
        return result

    def _usage(self, data: st.DataObject, adm: Admission) -> tuple[Usage, bool]:
        """A usage, and whether it lies within the request's bounds."""
        request = adm.request
        out_bound = request.max_output_tokens
        if out_bound is None:
            out_bound = adm.estimate.output_tokens
        wild = data.draw(st.integers(0, 9)) == 0  # a provider that exceeds the bounds
        if wild:
            usage = Usage(
                data.draw(st.integers(0, 2 * request.prompt_tokens + 10)),
                data.draw(st.integers(0, 2 * out_bound + 10)),
            )
        else:
            usage = Usage(
                data.draw(st.integers(0, request.prompt_tokens)),
                data.draw(st.integers(0, out_bound)),
            )
        within = usage.input_tokens <= request.prompt_tokens and usage.output_tokens <= out_bound
        return usage, within

    @rule(adm=consumes(admissions), data=st.data())
    def finish(self, adm: Admission, data: st.DataObject) -> None:
        kinds = ["ok", "ok", "ok", "http", "timeout", "cancelled"]
        if adm.request.stream:
            kinds.append("dropped")
        kind = data.draw(st.sampled_from(kinds))
        usage, within = self._usage(data, adm)
        outcome: Outcome
        if kind == "ok":
            outcome = ok(usage)
        elif kind == "http":
            outcome = http_error(
                data.draw(st.sampled_from(STATUSES)),
                data.draw(st.none() | st.sampled_from([0.0, 1.0, 2.5, 30.0])),
            )
        elif kind == "timeout":
            outcome = timeout()
        elif kind == "cancelled":
            outcome = cancelled(usage if data.draw(st.booleans()) else None)
        else:
            outcome = stream_dropped(usage if data.draw(st.booleans()) else None)
        used = self.g.budget.used
        settlement = self.g.finish(adm, outcome, self.now)
        del self.open[id(adm)]
        est = adm.estimate.cost
        if kind == "ok":
            assert settlement.charged == PRICES.cost(adm.request.model, usage)
        if kind == "http":
            assert settlement.charged == 0
        if self.policy == "safe" and within:
            assert settlement.charged <= est, "safe: an in-bounds usage exceeded its estimate"
        assert self.g.budget.used == used - est + settlement.charged
        assert settlement.underestimate == max(settlement.charged - est, 0)
        self.underestimated += settlement.underestimate

    @invariant()
    def budget_invariants(self) -> None:
        if self.gw is None:
            return
        s = self.g.budget.stats()
        check_budget_invariants(
            used=s.used,
            limit=s.limit,
            spent=s.spent,
            open_reserved=s.open_reserved,
            underestimated=self.underestimated,
            all_within_estimate=self.underestimated == 0,
        )
        assert s.open_count == len(self.open), "I4: open reservations != open admissions"
        assert s.open_reserved == sum(a.estimate.cost for a in self.open.values())
        assert self.g.stats().underestimated == self.underestimated

    @invariant()
    def key_invariants(self) -> None:
        if self.gw is None:
            return
        for key in self.g.pool.keys:
            held = sum(a.estimate.tokens for a in self.open.values() if a.key == key.index)
            assert key.cap.inflight == held <= key.config.tpm
            assert len(key.rpm._log) <= key.config.rpm
            if isinstance(key.breaker, SafeBreaker):
                assert key.breaker.probes_in_flight <= self.probes

    def teardown(self) -> None:
        if self.gw is None:
            return
        for adm in list(self.open.values()):
            self.g.finish(adm, cancelled(), self.now)
            del self.open[id(adm)]
        s = self.g.budget.stats()
        assert s.open_count == 0 and s.open_reserved == 0, "I4: something was left open"
        assert s.used == s.spent
        assert self.g.in_flight == 0
