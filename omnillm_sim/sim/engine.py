"""The SimPy engine: drive the gateway model with a workload and the provider model.

`run(scenario, seed)` builds one `Gateway` (its budget, price table and key pool), then runs
the workload on SimPy time: each arrival asks ``gateway.admit(request, now)``; an admission
is served by the `Provider` on its key and ended with ``gateway.finish(admission, outcome,
now)``. Nothing reads the wall clock and every random number comes from streams derived from
the seed, so a scenario and seed give the same `RunResult` (and byte-identical reports).

The engine steps SimPy one event at a time and runs the `InvariantChecker` after every event
(``check=False`` skips it for speed). A violation stops the run with `InvariantViolation`.

Every run keeps a `Tally` (the aggregates); per-request records and the budget step timeline
are kept unless ``keep_records=False`` (or the scenario's ``records = false``), in which case
memory stays bounded by the requests in flight plus two floats per request.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Generator
from dataclasses import asdict, is_dataclass
from operator import itemgetter
from typing import Any

import simpy

from omnillm_sim import gateway as gw
from omnillm_sim.budget import BudgetTracker, SeedBudgetTracker
from omnillm_sim.errors import OmniLLMError, TraceError
from omnillm_sim.money import format_usd
from omnillm_sim.policy import get_policy
from omnillm_sim.pricing import Usage, catalogue
from omnillm_sim.sim.checker import InvariantChecker
from omnillm_sim.sim.importers import ObservedRow, in_start_order, is_observed, read_observed
from omnillm_sim.sim.metrics import RequestRecord, RunResult, Sample, Tally
from omnillm_sim.sim.provider import Provider, ProviderReply
from omnillm_sim.sim.scenario import Scenario
from omnillm_sim.sim.wake import waker
from omnillm_sim.sim.workloads import Arrival, RequestFactory, open_arrivals

__all__ = ["ProgressFn", "build_gateway", "run"]

ProgressFn = Callable[[float], None]
"""Called now and then with the fraction of the arrival horizon simulated so far."""

_PROGRESS_EVERY = 2_000
_new = tuple.__new__  # RequestRecord._make without a Python frame (one record per request)
_BY_ID = itemgetter(0)  # a RequestRecord's id, read in C (sorting a million records)


def build_gateway(scenario: Scenario, rng: random.Random) -> gw.Gateway:
    """The scenario's gateway: keys, policy, budget tracker and price table.

    Raises:
        ConfigError: an unknown policy, strategy, catalogue or override file.
    """
    keys = tuple(
        gw.KeyConfig(label=label, rpm=spec.rpm, tpm=spec.tpm,
                     tokens_per_minute=spec.tokens_per_minute)
        for spec in scenario.keys
        for label in spec.labels()
    )
    g = scenario.gateway
    config = gw.GatewayConfig(
        keys=keys,
        policy=g.policy,
        strategy=g.strategy,
        attempt_cap=g.attempt_cap,
        breaker_threshold=g.breaker_threshold,
        breaker_cooldown=g.breaker_cooldown,
        request_timeout=g.request_timeout,
    )
    policy = get_policy(g.policy)
    # The faithful policy's stream quirks need omnillm's wrapping u64 counter; without late
    # cancels nothing can wrap, and the reference tracker behaves the same.
    tracker = (
        SeedBudgetTracker
        if policy.stream_quirks and scenario.provider.late_cancel_rate > 0
        else BudgetTracker
    )
    limit = scenario.budget.limit
    budget = (
        tracker.unlimited(name="budget")
        if limit is None
        else tracker.from_micros(policy.budget_limit(limit), name="budget")
    )
    p = scenario.prices
    prices = catalogue(p.catalogue, overrides=p.overrides, fallback=p.fallback)
    return gw.Gateway(config, budget=budget, prices=prices, rng=rng)


def _outcome(reply: ProviderReply) -> Any:
    if reply.kind == "ok":
        assert reply.usage is not None
        return gw.ok(reply.usage)
    if reply.kind == "http_error":
        assert reply.status is not None
        return gw.http_error(reply.status, reply.retry_after)
    if reply.kind == "timeout":
        return gw.timeout()
    if reply.kind == "abandoned":
        return gw.stream_abandoned(reply.usage)
    if reply.kind == "completed_then_cancelled":
        assert reply.usage is not None
        return gw.completed_then_cancelled(reply.usage)
    return gw.cancelled(reply.usage)


def limit_findings(scenario: Scenario, enforced: int | None) -> list[str]:
    """A finding when the gateway enforces another limit than the scenario's (faithful)."""
    configured = scenario.budget.limit
    if configured is None or enforced is None or enforced == configured:
        return []
    return [
        f"budget limit as omnillm sees it: {format_usd(enforced)} (configured "
        f"{format_usd(configured)}; omnillm converts with (usd * 1e6) as u64, which truncates)"
    ]


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a stats record: dataclasses and mappings become dicts, enums names."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _key_state(status: Any, now: float) -> str:
    if status.dead:
        return "dead"
    if status.breaker in ("open", "half-open"):
        return str(status.breaker)
    if status.cooling_until is not None and status.cooling_until > now:
        return "cooling"
    return "available" if status.available else "cooling"


def _state_of(key: Any, now: float) -> str:
    """`_key_state` of ``key.status(now)``, reading only what it needs (the sampler's)."""
    if key.dead:
        return "dead"
    breaker = key.breaker.state(now)
    if breaker in ("open", "half-open"):
        return str(breaker)
    until = key.cooling_until if key.cooling(now) else None
    if until is not None and until > now:
        return "cooling"
    return "available" if key.available(now) else "cooling"


class _Run:
    """The mutable state of one run (private to `run`)."""

    def __init__(self, scenario: Scenario, seed: int, check: bool, keep_records: bool) -> None:
        self.scenario = scenario
        self.seed = seed
        self.env = simpy.Environment()
        self._wake = waker(self.env)  # the per-request events (see `omnillm_sim.sim.wake`)
        self.gateway = build_gateway(scenario, random.Random(f"{seed}/gateway"))
        self.budget: BudgetTracker = self.gateway.budget
        self.labels = tuple(scenario.key_labels())
        self.provider = Provider(
            self.env, scenario, scenario.gateway.request_timeout,
            random.Random(f"{seed}/provider"), on_reply=self._replied,
        )
        self.factory = RequestFactory(scenario, random.Random(f"{seed}/requests"))
        self.arrival_rng = random.Random(f"{seed}/arrivals")
        self.think_rng = random.Random(f"{seed}/think")
        self.keep_records = keep_records
        self.tally = Tally(len(self.labels))
        self.records: list[RequestRecord] = []
        self.samples: list[Sample] = []
        self.budget_steps: list[tuple[float, int, int, int]] = []
        self.in_system = 0
        self.per_key = [0] * len(self.labels)
        self.area = 0.0
        self.key_area = [0.0] * len(self.labels)
        self.changed: set[int] = set(range(len(self.labels)))  # keys the sampler must re-read
        self.end_time = 0.0
        self.arrivals_done = False
        self.failure: Exception | None = None
        limits = {}
        for spec in scenario.keys:
            for label in spec.labels():
                limits[label] = (spec.rpm, spec.tpm)
        self.checker = (
            InvariantChecker(self.budget, limits, self.gateway.pool.keys) if check else None
        )

    # -- bookkeeping ---------------------------------------------------------------------

    def _left(self, key: int, admitted_at: float, now: float) -> None:
        """The request admitted at ``admitted_at`` on key index ``key`` left at ``now``.

        The time integrals of requests in flight (in total and per key) grow by this request's
        own time in the system: the same integrals as summing count x time between changes,
        with no work at the changes. Every admitted request leaves before the run ends (the
        provider answers each one), so nothing is left to close at the end.
        """
        span = now - admitted_at
        self.area += span
        self.key_area[key] += span
        self.in_system -= 1
        self.per_key[key] -= 1
        self.changed.add(key)

    def _budget_step(self) -> None:
        if not self.keep_records:
            return
        budget = self.budget
        used, spent = budget.used, budget.spent
        steps = self.budget_steps
        if steps:
            last = steps[-1]
            if last[1] == used and last[2] == spent:
                return
        steps.append((self.env._now, used, spent, used - spent))  # _now: `now` without a frame

    # -- request life --------------------------------------------------------------------

    def arrive(
        self, arrival: Arrival, observed: ObservedRow | None = None,
        done: simpy.Event | None = None,
    ) -> bool:
        """Admit or reject ``arrival`` now; True if admitted.

        An admitted request goes to the provider, whose reply ends it (`_replied`); ``done``
        (a closed-loop client's) succeeds then. An ``observed`` log row is served as it
        happened (`_replay`), not by the provider.
        """
        # Built without `Request`'s checks: the factory's values are already valid (int
        # counts >= 1, a non-empty model, a bool stream).
        request = _new(gw.Request, (
            arrival.id, arrival.model, arrival.prompt_tokens, arrival.max_output_tokens, None,
            arrival.stream,
        ))
        now = self.env._now  # SimPy's `now` property, read without its frame (per request)
        decision = self.gateway.admit(request, now)
        if now > self.end_time:
            self.end_time = now
        checker = self.checker
        if isinstance(decision, gw.Rejection):
            reason = decision.reason.name
            self.tally.rejected(reason)
            if decision.key is not None:  # without a key, no key's state changed
                self.changed.add(decision.key)
                if checker is not None:
                    checker.touched(decision.key)
            if checker is not None and decision.reason is gw.RejectReason.BUDGET:
                estimate = decision.estimate.cost if decision.estimate is not None else None
                checker.refused(arrival.id, estimate, now)
            if self.keep_records:
                self.records.append(_new(RequestRecord, (
                    arrival.id, arrival.time, arrival.model, arrival.prompt_tokens, 0,
                    "rejected", reason, None, None, now, None, None, "rejected",
                )))
                self._budget_step()
            return False
        if checker is not None:
            checker.touched(decision.key)
            checker.admitted(arrival.id, decision.estimate.cost)
        key = decision.key  # it enters the system (`_left` ends its stay)
        self.in_system += 1
        self.per_key[key] += 1
        self.changed.add(key)
        if self.keep_records:
            self._budget_step()
        if observed is not None:
            self.env.process(self._replay(decision, arrival, observed))
        else:
            self.provider.submit(decision.key_label, arrival, (decision, arrival, done))
        return True

    def _replied(self, reply: ProviderReply, token: Any) -> None:
        """The provider's reply to an admitted request: finish it at the gateway."""
        admission, arrival, done = token
        now = reply.end  # the reply arrives now
        kind = reply.kind
        # An ok reply's outcome is built as `gw.ok` builds it: the provider's usage is a Usage.
        outcome = _new(gw.Outcome, ("ok", reply.usage, None, None, None)) if kind == "ok" else (
            _outcome(reply))
        settlement = self.gateway.finish(admission, outcome, now)
        checker = self.checker
        if checker is not None:
            checker.touched(admission.key)
            if settlement.leaked:
                checker.leaked(arrival.id)
            else:
                checker.settled(arrival.id, settlement.charged)
                if settlement.resettled is not None:
                    checker.resettled(arrival.id, settlement.resettled)
        key = admission.key
        self._left(key, admission.admitted_at, now)
        if now > self.end_time:
            self.end_time = now
        status = kind if kind != "http_error" else f"http_{reply.status}"
        self.tally.served(key, status, arrival.time, reply.start, now)
        if self.keep_records:
            output = reply.usage.output_tokens if reply.usage is not None else 0
            self.records.append(_new(RequestRecord, (
                arrival.id, arrival.time, arrival.model, arrival.prompt_tokens, output,
                "admitted", None, admission.key_label, reply.start, reply.end,
                admission.estimate.cost, settlement.charged, status,
            )))
            self._budget_step()
        if done is not None:
            done.succeed()

    def _replay(
        self, admission: Any, arrival: Arrival, row: ObservedRow
    ) -> Generator[simpy.Event, Any, None]:
        """Observed timing: end ``row`` after its observed duration with its observed outcome.

        The what-if gateway's ``request_timeout`` still cuts a call that took longer.
        """
        start = self.env.now
        duration = row.end - row.start
        limit = self.scenario.gateway.request_timeout
        usage = Usage(arrival.prompt_tokens, row.output_tokens)
        if duration > limit:
            yield self.env.timeout(limit)
            kind, outcome = "timeout", gw.timeout()
        else:
            yield self.env.timeout(duration)
            kind = row.label
            if row.outcome == "ok":
                outcome = gw.Outcome("ok", usage, cost=row.cost)
            elif row.outcome == "http_error":
                outcome = gw.Outcome("http_error", status=row.status, cost=row.cost)
            elif row.outcome == "cancelled":
                partial = usage if row.output_tokens else None
                outcome = gw.Outcome("cancelled", partial, cost=row.cost)
            else:
                outcome = gw.Outcome("timeout", cost=row.cost)
        now = self.env.now
        settlement = self.gateway.finish(admission, outcome, now)
        if self.checker is not None:
            self.checker.touched(admission.key)
            self.checker.settled(arrival.id, settlement.charged)
        self._left(admission.key, admission.admitted_at, now)
        if now > self.end_time:
            self.end_time = now
        self.tally.served(admission.key, kind, arrival.time, start, now)
        if self.keep_records:
            self.records.append(_new(RequestRecord, (
                arrival.id, arrival.time, arrival.model, arrival.prompt_tokens,
                row.output_tokens if kind == "ok" else 0, "admitted", None,
                admission.key_label, start, now, admission.estimate.cost, settlement.charged,
                kind,
            )))
            self._budget_step()

    # -- processes -----------------------------------------------------------------------

    def observed_source(self) -> Generator[simpy.Event, Any, None]:
        """Arrivals of an observed-timing log, at each row's start (x ``1 / speed``)."""
        env, scenario = self.env, self.scenario
        spec = scenario.workload.trace
        assert spec is not None
        models = dict(spec.models)
        rows = in_start_order(read_observed(spec.path, spec.format, columns=dict(spec.columns),
                                            time_unit=spec.time_unit), str(spec.path))
        origin: float | None = None
        count = 0
        while True:
            # A bad row is kept and raised by `execute`: SimPy would re-create the exception
            # from its args, losing the TraceError's file, line and column.
            try:
                row = next(rows, None)
            except (TraceError, ValueError) as exc:
                self.failure = exc
                break
            if row is None:
                break
            count += 1
            if origin is None:
                origin = row.start
            t = (row.start - origin) / spec.speed
            if t >= scenario.duration or (spec.limit is not None and count > spec.limit):
                break
            if scenario.max_requests is not None and self.factory.made >= scenario.max_requests:
                break
            delay = t - env.now
            if delay > 0:
                yield env.timeout(delay)
            model = models.get(row.model, row.model) if row.model else None
            self.arrive(self.factory.make(t, prompt_tokens=row.prompt_tokens,
                                          output_tokens=row.output_tokens, model=model), row)
        self.arrivals_done = True

    def open_source(self) -> None:
        """Start the open workload: arrivals come from wake-up callbacks, one per instant."""
        self._arrivals = iter(open_arrivals(self.scenario, self.factory, self.arrival_rng))
        self._next_arrival: Arrival | None = None
        self._due = self._arrivals_due  # one bound method for every arrival wake-up
        start = self.env.event()
        start._ok, start._value = True, None
        start.callbacks.append(self._arrivals_due)
        self.env.schedule(start, simpy.events.URGENT)  # first at t=0, as a process would be

    def _arrivals_due(self, _event: Any) -> None:
        """Every arrival due now; then a wake-up for the next one."""
        env, arrive, arrivals = self.env, self.arrive, self._arrivals
        arrival = self._next_arrival
        if arrival is None:
            arrival = next(arrivals, None)
        while arrival is not None:
            delay = arrival.time - env._now  # `now` without the property's frame
            if delay > 0:
                self._next_arrival = arrival
                self._wake(delay, self._due, None)
                return
            arrive(arrival)
            arrival = next(arrivals, None)
        self._next_arrival = None
        self.arrivals_done = True

    def client(self) -> Generator[simpy.Event, Any, None]:
        scenario = self.scenario
        think = scenario.workload.think_time
        limit = scenario.max_requests
        while True:
            yield self.env.timeout(think.sample(self.think_rng))
            if self.env.now >= scenario.duration:
                return
            if limit is not None and self.factory.made >= limit:
                return
            done = self.env.event()
            if self.arrive(self.factory.make(self.env.now), done=done):
                yield done

    def closed_source(self) -> Generator[simpy.Event, Any, None]:
        clients = [self.env.process(self.client()) for _ in range(self.scenario.workload.clients)]
        yield self.env.all_of(clients)
        self.arrivals_done = True

    def sampler(self) -> Generator[simpy.Event, Any, None]:
        """A `Sample` every interval.

        A key's state is re-read only if the gateway changed it since the last sample or it
        was neither available nor dead then (cooldowns and open breakers end with time alone;
        an available key stays available until a gateway call on it): per sample the cost
        follows what changed, not the number of keys.
        """
        interval = self.scenario.sample_interval or max(self.scenario.duration / 200.0, 1e-3)
        keys = self.gateway.pool.keys
        states = [""] * len(keys)
        changing: set[int] = set()  # keys whose state may change with time alone
        key_states: tuple[str, ...] = ()
        inflight: tuple[int, ...] = ()
        while True:
            now = self.env.now
            s = self.budget.stats()
            stale = self.changed | changing
            if stale or not key_states:
                for i in stale:
                    state = states[i] = _state_of(keys[i], now)
                    if state in ("available", "dead"):
                        changing.discard(i)
                    else:
                        changing.add(i)
                key_states = tuple(states)
            if self.changed or not inflight:
                inflight = tuple(self.per_key)
            self.changed = set()
            self.samples.append(
                Sample(
                    time=now,
                    used=s.used,
                    spent=s.spent,
                    open_reserved=s.open_reserved,
                    inflight=inflight,
                    key_states=key_states,
                    rejected=tuple(sorted(self.tally.reasons.items())),
                )
            )
            if self.arrivals_done and self.in_system == 0:
                return
            yield self.env.timeout(interval)

    # -- main loop -----------------------------------------------------------------------

    def execute(self, progress: ProgressFn | None) -> RunResult:
        env = self.env
        trace = self.scenario.workload.trace
        if self.scenario.workload.kind == "closed":
            env.process(self.closed_source())
        elif trace is not None and is_observed(trace.format, dict(trace.columns)):
            env.process(self.observed_source())
        else:
            self.open_source()
        env.process(self.sampler())
        self._budget_step()
        checker = self.checker
        horizon = self.scenario.duration
        events = 0
        step = env.step
        while True:
            try:
                step()
            except simpy.core.EmptySchedule:
                break
            except OmniLLMError as exc:
                # SimPy re-raises a process's exception as a copy whose cause is the original:
                # surface the original (its traceback points at the bad row, not at SimPy).
                original = exc.__cause__
                raise (original if type(original) is type(exc) else exc) from None
            events += 1
            if checker is not None:
                checker.check(events, env.now)
            if progress is not None and events % _PROGRESS_EVERY == 0:
                progress(min(env.now / horizon, 1.0))
        if self.failure is not None:
            raise self.failure
        if checker is not None:
            checker.at_end(events, env.now)
        assert self.in_system == 0, f"{self.in_system} admitted requests never ended"
        if progress is not None:
            progress(1.0)
        gateway_stats = _plain(self.gateway.stats())
        return RunResult(
            scenario=self.scenario,
            seed=self.seed,
            policy=self.scenario.gateway.policy,
            key_labels=self.labels,
            records=tuple(sorted(self.records, key=_BY_ID)),
            samples=tuple(self.samples),
            budget_steps=tuple(self.budget_steps),
            end_time=self.end_time,
            inflight_area=self.area,
            key_busy_area=tuple(self.key_area),
            budget=self.budget.stats(),
            gateway_stats=gateway_stats,
            findings=tuple(
                limit_findings(self.scenario, self.budget.limit)
                + (checker.findings if checker is not None else [])
            ),
            events=events,
            checked=checker is not None,
            tally=self.tally,
        )


def run(
    scenario: Scenario,
    seed: int | None = None,
    *,
    check: bool = True,
    keep_records: bool | None = None,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Simulate ``scenario`` with ``seed`` (default: the scenario's own seed).

    Deterministic: the same scenario and seed give the same result. ``keep_records``
    (default: the scenario's ``records``) keeps per-request records and the budget steps;
    without them the metrics are the same (they come from the run's `Tally`).

    Raises:
        InvariantViolation: the checker found a violation (names event number, time, state).
        TraceError: a malformed trace row.
        ConfigError: a bad gateway, price or policy setting.
    """
    chosen = scenario.seed if seed is None else seed
    keep = scenario.records if keep_records is None else keep_records
    return _Run(scenario, chosen, check, keep).execute(progress)
