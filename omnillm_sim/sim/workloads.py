"""Workloads: when requests arrive and what each one looks like.

Open workloads (``poisson``, ``bursty``, ``diurnal``, ``trace``) are generators of `Arrival` in
time order, read lazily by the engine. The ``closed`` workload is driven by the engine's client
processes, which ask a `RequestFactory` for each new request.

Randomness comes from two streams derived from the run's seed: one for arrival times and one
for request contents (sizes and the per-request provider draws: latency jitter, fault draw,
cancellation). Every request draws the same number of values in the same order, so two
policies run on the same seed see exactly the same open-workload arrivals.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import NamedTuple

from omnillm_sim.sim.scenario import Scenario
from omnillm_sim.sim.traces import read_trace

__all__ = ["Arrival", "RequestFactory", "open_arrivals"]

_new = tuple.__new__


class Arrival(NamedTuple):
    """A request as the client sends it, with the provider-side draws made up front.

    A named tuple, not a frozen dataclass: one is made per simulated request, and a frozen
    dataclass costs about five times as much to construct.

    ``output_tokens`` is what the model would generate (the provider stops at
    ``max_output_tokens``); ``draw`` is the uniform number a fault's ``rate`` is compared with;
    ``jitter`` multiplies the latency; ``cancel_at`` is the fraction of the service after which
    the client cancels (``None``: never); ``failed`` marks a trace row recorded as failed.
    """

    id: int
    time: float
    model: str
    prompt_tokens: int
    output_tokens: int
    max_output_tokens: int
    stream: bool
    draw: float
    jitter: float
    ttft: float
    service: float | None
    cancel_at: float | None
    failed: bool = False


class RequestFactory:
    """Makes `Arrival` records for a scenario from the request-content random stream."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self._spec = scenario.requests
        self._provider = scenario.provider
        self._rng = rng
        self._next_id = 0
        # Built once: `make` runs per request and draws these in a fixed order.
        provider = scenario.provider
        self._prompt = self._spec.prompt_tokens.sampler(rng)
        self._output = self._spec.output_tokens.sampler(rng)
        self._ttft = provider.ttft.sampler(rng)
        self._service = provider.service.sampler(rng) if provider.service else None

    def make(
        self,
        time: float,
        *,
        prompt_tokens: int | None = None,
        output_tokens: int | None = None,
        model: str | None = None,
        failed: bool = False,
    ) -> Arrival:
        """The next request, arriving at ``time``; trace values override the drawn sizes."""
        uniform = self._rng.random
        spec = self._spec
        # Always draw every value (even when the trace supplies it) so streams stay aligned.
        drawn_prompt = round(self._prompt()) or 1  # at least one token (draws are >= 0)
        drawn_output = round(self._output()) or 1
        stream = uniform() < spec.stream_fraction
        cancel = uniform() < spec.cancel_rate
        cancel_at = uniform()
        draw = uniform()
        jitter_u = uniform()
        ttft = self._ttft()
        service = self._service() if self._service is not None else None
        jitter = 1.0 + self._provider.jitter * (2.0 * jitter_u - 1.0)
        self._next_id += 1
        # tuple.__new__ is what Arrival._make does, without a Python frame (one per request).
        return _new(Arrival, (
            self._next_id,  # id
            time,  # time
            model or spec.model,  # model
            max(1, prompt_tokens) if prompt_tokens is not None else drawn_prompt,  # prompt_tokens
            output_tokens if output_tokens is not None else drawn_output,  # output_tokens
            spec.max_output_tokens,  # max_output_tokens
            stream,  # stream
            draw,  # draw
            jitter,  # jitter
            ttft,  # ttft
            service,  # service
            cancel_at if cancel else None,  # cancel_at
            failed,  # failed
        ))

    @property
    def made(self) -> int:
        """How many requests were made so far."""
        return self._next_id


def _poisson_times(rate: float, horizon: float, rng: random.Random) -> Iterator[float]:
    if rate <= 0:
        return
    uniform = rng.random
    t = 0.0
    while True:
        t += -math.log(1.0 - uniform()) / rate  # rng.expovariate(rate), without its frame
        if t >= horizon:
            return
        yield t


def _bursty_times(scenario: Scenario, rng: random.Random) -> Iterator[float]:
    w = scenario.workload
    rates = (w.rate, w.burst_rate)
    sojourn = (w.calm_time, w.burst_time)
    state = 0
    t = 0.0
    switch = rng.expovariate(1.0 / sojourn[state])
    while t < scenario.duration:
        rate = rates[state]
        candidate = t + rng.expovariate(rate) if rate > 0 else math.inf
        if candidate >= switch:
            # Memorylessness: restarting the clock at the switch is exact for an MMPP.
            t = switch
            state = 1 - state
            switch = t + rng.expovariate(1.0 / sojourn[state])
            continue
        t = candidate
        if t < scenario.duration:
            yield t


def _diurnal_times(scenario: Scenario, rng: random.Random) -> Iterator[float]:
    w = scenario.workload
    peak = w.rate * (1.0 + w.amplitude)
    for t in _poisson_times(peak, scenario.duration, rng):  # thinning (Lewis-Shedler)
        rate = w.rate * (1.0 + w.amplitude * math.sin(2 * math.pi * (t / w.period + w.phase)))
        if rng.random() * peak < rate:
            yield t


def open_arrivals(
    scenario: Scenario, factory: RequestFactory, rng: random.Random
) -> Iterator[Arrival]:
    """Arrivals of an open workload in time order, up to ``duration`` and ``max_requests``.

    Raises:
        TraceError: a malformed trace row (while iterating).
        ValueError: the workload is ``closed`` (its clients live in the engine).
    """
    w = scenario.workload
    limit = scenario.max_requests
    if w.kind == "closed":
        raise ValueError("a closed workload has no open arrival stream")
    if w.kind == "trace":
        assert w.trace is not None
        spec = w.trace
        models = dict(spec.models)
        rows = read_trace(spec.path, spec.format, columns=dict(spec.columns),
                          time_unit=spec.time_unit, max_line_length=spec.max_line_length)
        for count, row in enumerate(rows, start=1):
            t = row.time / spec.speed
            if t >= scenario.duration or (spec.limit is not None and count > spec.limit):
                return
            if limit is not None and factory.made >= limit:
                return
            model = models.get(row.model, row.model) if row.model else None
            yield factory.make(
                t,
                prompt_tokens=row.prompt_tokens,
                output_tokens=row.output_tokens,
                model=model,
                failed=row.failed,
            )
        return
    if w.kind == "poisson":
        times = _poisson_times(w.rate, scenario.duration, rng)
    elif w.kind == "bursty":
        times = _bursty_times(scenario, rng)
    else:
        times = _diurnal_times(scenario, rng)
    for t in times:
        if limit is not None and factory.made >= limit:
            return
        yield factory.make(t)
