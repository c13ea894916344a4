"""The simulated LLM provider behind each key.

For a request sent on a key at time ``now`` the provider answers, in this order:

1. an injected fault (`FaultSpec`) active on that key, if the request's ``draw`` < its rate:
   the fault's status after ``error_latency`` (429s carry the fault's ``retry_after`` as a
   header string);
2. the provider's own per-key limits (``rpm`` requests and ``tpm`` prompt + max-output tokens
   in any 60 s): 429 with a ``retry-after`` header of the whole seconds until the window has
   room (a share ``odd_retry_after`` of them in fractional seconds, ``"12.3"``);
3. a trace row recorded as failed: 500 after ``error_latency``;
4. otherwise the request queues for one of the key's ``concurrency`` slots (if limited) and is
   served in ``ttft + output / tokens_per_second`` (times the jitter factor), or in its drawn
   ``service`` time. The client cancels at ``cancel_at`` of the service if it chose to, and the
   gateway's ``request_timeout`` (counted from admission) cuts a request that would end later.
   A stream may instead be abandoned by its client at a uniform point of its service
   (``abandon_rate``: reply ``abandoned``, no usage seen) or cancelled just after it completed
   (``late_cancel_rate``: reply ``completed_then_cancelled`` with the full usage).

Replies are plain data (`ProviderReply`); the engine turns them into gateway outcomes.

Cost: `submit` schedules one wake-up per request (`omnillm_sim.sim.wake`: a callback on
SimPy's queue, cheaper than a `simpy.Timeout`, fired at the same time and in the same order)
and delivers the reply from it (no process, no generator). Everything a service will do is
known when it starts (its length, a cancel, an abandon, the deadline), so one wake-up carries
it. Requests waiting
for a slot wait in a FIFO per key; their deadlines are admission time + ``request_timeout``,
so they rise along the queue and one timer per key, armed for the head's deadline, times out
every request still waiting at its deadline (no per-request timeout that never fires).
`serve` is the same model as a SimPy process body, for callers that want to ``yield`` it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import simpy

from omnillm_sim.pricing import Usage
from omnillm_sim.sim.scenario import FaultSpec, Scenario
from omnillm_sim.sim.wake import Wake, waker
from omnillm_sim.sim.workloads import Arrival

__all__ = ["Provider", "ProviderReply", "ReplyFn"]

WINDOW = 60.0
_new = tuple.__new__


class ProviderReply(NamedTuple):
    """What came back: ``kind`` is ok, http_error, timeout or cancelled (one per request).

    A cancelled stream carries the partial usage delivered before the cancel.

    ``start`` is when service began (``None`` if it never did), ``end`` when the reply arrived.
    """

    kind: str
    start: float | None
    end: float
    status: int | None = None
    retry_after: str | None = None
    usage: Usage | None = None


ReplyFn = Callable[[ProviderReply, Any], None]
"""Receives each reply of `Provider.submit` with the token the request was submitted with."""


class _KeyWindow:
    """The provider's own sliding 60 s window of requests and tokens on one key."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.token_sum = 0

    def prune(self, now: float) -> None:
        while self.times and self.times[0] <= now - WINDOW:
            self.times.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW:
            self.token_sum -= self.tokens.popleft()[1]


class Provider:
    """Serves admitted requests on SimPy time; one instance per run."""

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        timeout: float,
        rng: random.Random | None = None,
        on_reply: ReplyFn | None = None,
    ) -> None:
        """``rng`` draws the odd retry-after headers and stream endings (needed only when
        the scenario's ``odd_retry_after``, ``abandon_rate`` or ``late_cancel_rate`` > 0);
        ``on_reply`` receives the replies of `submit`."""
        self._env = env
        self._on_reply = on_reply
        self._spec = scenario.provider
        self._timeout = timeout
        self._rng = rng if rng is not None else random.Random(0)
        self._stream_endings = self._spec.abandon_rate > 0 or self._spec.late_cancel_rate > 0
        self._faults: dict[str, list[FaultSpec]] = {}
        for fault in scenario.faults:
            self._faults.setdefault(fault.key, []).append(fault)
        self._limited = self._spec.rpm is not None or self._spec.tpm is not None
        labels = scenario.key_labels()
        self._windows = {label: _KeyWindow() for label in labels}
        self._slots: dict[str, simpy.Resource] = {}
        if self._spec.concurrency > 0:
            self._slots = {
                label: simpy.Resource(env, capacity=self._spec.concurrency) for label in labels
            }
        # `submit`'s slots: busy count, FIFO of (expiry, deadline, arrival, token), timer armed
        self._capacity = self._spec.concurrency
        self._busy = dict.fromkeys(labels, 0) if self._capacity > 0 else {}
        self._queues: dict[str, deque[tuple[float, float, Arrival, Any]]] = {
            label: deque() for label in self._busy
        }
        self._armed = dict.fromkeys(self._busy, False)
        self._arrived_cb = self._arrived  # one bound method for every reply
        self._wake = waker(env)

    def _fault(self, key: str, arrival: Arrival, now: float) -> FaultSpec | None:
        if not self._faults:
            return None
        for fault in self._faults.get(key, ()):
            if fault.start <= now < fault.end and arrival.draw < fault.rate:
                return fault
        return None

    def _rate_limited(self, key: str, arrival: Arrival, now: float) -> float | None:
        """Seconds to wait if the provider's own limits refuse the request, else ``None``."""
        if not self._limited:
            return None
        spec = self._spec
        window = self._windows[key]
        window.prune(now)
        tokens = arrival.prompt_tokens + arrival.max_output_tokens
        if spec.rpm is not None and len(window.times) >= spec.rpm:
            return window.times[0] + WINDOW - now
        if spec.tpm is not None and window.token_sum + tokens > spec.tpm:
            free, needed = 0, window.token_sum + tokens - spec.tpm
            for t, n in window.tokens:
                free += n
                if free >= needed:
                    return t + WINDOW - now
            return WINDOW  # a request larger than the whole limit never fits
        window.times.append(now)
        window.tokens.append((now, tokens))
        window.token_sum += tokens
        return None

    def _retry_after(self, wait: float) -> str:
        """The ``retry-after`` header of a provider 429: whole seconds, or an odd fraction."""
        odd = self._spec.odd_retry_after
        if odd > 0 and self._rng.random() < odd:
            return f"{max(0.1, math.ceil(wait * 10) / 10):.1f}"  # "12.3": not a u64
        return str(max(1, math.ceil(wait)))

    def _stream_ending(self, arrival: Arrival) -> float | None:
        """For a stream: the fraction of service at which its client abandons it (< 1), or 1.0
        for a cancel after ``Completed``; ``None`` for a normal ending."""
        if not self._stream_endings or not arrival.stream:
            return None
        spec, rng = self._spec, self._rng
        u = rng.random()
        if u < spec.abandon_rate:
            return rng.random()
        if u < spec.abandon_rate + spec.late_cancel_rate:
            return 1.0
        return None

    def service_time(self, arrival: Arrival) -> float:
        """How long the provider takes to answer ``arrival`` in full."""
        if arrival.service is not None:
            return arrival.service
        output = min(arrival.output_tokens, arrival.max_output_tokens)
        return (arrival.ttft + output / self._spec.tokens_per_second) * arrival.jitter

    def serve(self, key: str, arrival: Arrival) -> Generator[simpy.Event, Any, ProviderReply]:
        """SimPy process body: the reply to ``arrival`` sent on key ``key``."""
        env = self._env
        now = env.now
        deadline = now + self._timeout
        fault = self._fault(key, arrival, now)
        if fault is not None:
            yield env.timeout(self._spec.error_latency)
            retry = None
            if fault.status == 429 and fault.retry_after is not None:
                retry = f"{fault.retry_after:g}"  # 2.0 -> "2", 2.5 -> "2.5"
            return ProviderReply("http_error", None, env.now, fault.status, retry)
        wait = self._rate_limited(key, arrival, now)
        if wait is not None:
            yield env.timeout(self._spec.error_latency)
            return ProviderReply("http_error", None, env.now, 429, self._retry_after(wait))
        if arrival.failed:
            yield env.timeout(self._spec.error_latency)
            return ProviderReply("http_error", None, env.now, 500)
        slots = self._slots.get(key)
        request = None
        if slots is not None:
            request = slots.request()
            expiry = env.timeout(deadline - env.now)
            yield request | expiry
            if not request.triggered:
                request.cancel()
                return ProviderReply("timeout", None, env.now)
        try:
            start = env.now
            service = self.service_time(arrival)
            output = min(arrival.output_tokens, arrival.max_output_tokens)
            cancel_after = service * arrival.cancel_at if arrival.cancel_at is not None else None
            if cancel_after is not None and start + cancel_after < deadline:
                yield env.timeout(cancel_after)
                partial = None
                if arrival.stream:  # a stream has delivered (and billed) part of its output
                    done = math.floor(output * arrival.cancel_at)  # type: ignore[operator]
                    partial = Usage(input_tokens=arrival.prompt_tokens, output_tokens=done)
                return ProviderReply("cancelled", start, env.now, usage=partial)
            ending = self._stream_ending(arrival)
            if ending is not None and ending < 1.0 and start + service * ending < deadline:
                yield env.timeout(service * ending)  # the client drops the stream
                return ProviderReply("abandoned", start, env.now)
            if start + service > deadline:
                yield env.timeout(deadline - start)
                return ProviderReply("timeout", start, env.now)
            yield env.timeout(service)
            usage = Usage(arrival.prompt_tokens, output)
            if ending is not None:  # the client's cancel lands after Completed
                return ProviderReply("completed_then_cancelled", start, env.now, 200, None, usage)
            # The common reply, built as ProviderReply._make does (no Python frame).
            return _new(ProviderReply, ("ok", start, env.now, 200, None, usage))
        finally:
            if slots is not None and request is not None:
                slots.release(request)

    # -- callbacks: one timeout per request ----------------------------------------------

    def submit(self, key: str, arrival: Arrival, token: Any) -> None:
        """Send ``arrival`` on key ``key`` now; ``on_reply(reply, token)`` gets the reply when
        it arrives (the same replies, at the same times, as `serve`)."""
        now = self._env._now  # SimPy's `now` property, read without its frame (per request)
        fault = self._fault(key, arrival, now) if self._faults else None
        if fault is not None:
            retry = None
            if fault.status == 429 and fault.retry_after is not None:
                retry = f"{fault.retry_after:g}"  # 2.0 -> "2", 2.5 -> "2.5"
            self._later(self._spec.error_latency, "http_error", None, fault.status, retry, None,
                        None, token)
            return
        if self._limited:
            wait = self._rate_limited(key, arrival, now)
            if wait is not None:
                self._later(self._spec.error_latency, "http_error", None, 429,
                            self._retry_after(wait), None, None, token)
                return
        if arrival.failed:
            self._later(self._spec.error_latency, "http_error", None, 500, None, None, None,
                        token)
            return
        deadline = now + self._timeout
        if self._capacity > 0:
            queue = self._queues[key]
            if queue or self._busy[key] >= self._capacity:
                # When a SimPy timeout of (deadline - now) created now would fire.
                queue.append((now + (deadline - now), deadline, arrival, token))
                if not self._armed[key]:  # `_arm`'s test first: its timer is usually set
                    self._arm(key)
                return
            self._busy[key] += 1
            self._start(key, arrival, token, deadline, now)
        else:
            self._start(None, arrival, token, deadline, now)

    def _later(
        self, delay: float, kind: str, start: float | None, status: int | None,
        retry: str | None, usage: Usage | None, key: str | None, token: Any,
    ) -> None:
        self._wake(delay, self._arrived_cb, (kind, start, status, retry, usage, key, token))

    def _start(
        self, key: str | None, arrival: Arrival, token: Any, deadline: float, start: float
    ) -> None:
        """Service begins now, at ``start`` (on a slot of ``key``, or with no slot limit if
        ``None``)."""
        output = min(arrival.output_tokens, arrival.max_output_tokens)
        service = arrival.service  # `service_time`, inline (once per request)
        if service is None:
            service = (arrival.ttft + output / self._spec.tokens_per_second) * arrival.jitter
        cancel_at = arrival.cancel_at
        if cancel_at is not None:
            cancel_after = service * cancel_at
            if start + cancel_after < deadline:
                partial = None
                if arrival.stream:  # a stream has delivered (and billed) part of its output
                    done = math.floor(output * cancel_at)
                    partial = Usage(input_tokens=arrival.prompt_tokens, output_tokens=done)
                self._later(cancel_after, "cancelled", start, None, None, partial, key, token)
                return
        ending = self._stream_ending(arrival) if self._stream_endings else None
        if ending is not None and ending < 1.0 and start + service * ending < deadline:
            self._later(service * ending, "abandoned", start, None, None, None, key, token)
            return
        if start + service > deadline:
            self._later(deadline - start, "timeout", start, None, None, None, key, token)
            return
        kind = "ok" if ending is None else "completed_then_cancelled"
        usage = _new(Usage, (arrival.prompt_tokens, output, 0, 0, 0, None))  # valid counts
        self._wake(service, self._arrived_cb, (kind, start, 200, None, usage, key, token))

    def _arrived(self, event: Wake) -> None:
        kind, start, status, retry, usage, key, token = event._value
        now = self._env._now  # `now` without the property's frame
        on_reply = self._on_reply
        assert on_reply is not None, "Provider.submit needs on_reply"
        on_reply(_new(ProviderReply, (kind, start, now, status, retry, usage)), token)
        if key is not None and start is not None:  # a slot frees: the next waiting one starts
            queue = self._queues[key]
            if queue and queue[0][0] <= now:  # `_expire`'s test first: its call is rare
                self._expire(key, now)
            if queue:
                _, deadline, arrival, waiting = queue.popleft()
                self._start(key, arrival, waiting, deadline, now)
            else:
                self._busy[key] -= 1

    def _arm(self, key: str) -> None:
        """Arm ``key``'s timer for the deadline of the head of its queue (if not armed)."""
        queue = self._queues[key]
        if queue and not self._armed[key]:
            self._armed[key] = True
            env = self._env
            now, expiry = env.now, queue[0][0]
            delay = max(expiry - now, 0.0)
            while now + delay < expiry:  # fire at the expiry itself, not an ulp off
                delay = math.nextafter(delay, math.inf)
            while delay > 0 and now + delay > expiry:
                delay = math.nextafter(delay, 0.0)
            self._wake(delay, self._timer, key)

    def _timer(self, event: Wake) -> None:
        key = event._value
        self._armed[key] = False
        self._expire(key, self._env.now)
        self._arm(key)

    def _expire(self, key: str, now: float) -> None:
        """Time out every request of ``key``'s queue whose deadline has come."""
        queue = self._queues[key]
        on_reply = self._on_reply
        assert on_reply is not None, "Provider.submit needs on_reply"
        while queue and queue[0][0] <= now:
            token = queue.popleft()[3]
            on_reply(_new(ProviderReply, ("timeout", None, now, None, None, None)), token)
