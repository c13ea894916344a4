"""Wake-ups: call a function at ``now + delay`` of SimPy time, for the per-request events.

The engine and the provider schedule two events per simulated request (the next arrival and
the reply), and neither needs a full `simpy.Timeout`: nobody yields it, nobody reads its
``delay``. `waker(env)` returns a ``wake(delay, callback, value)`` that puts a `Wake` (an
object with only what `Environment.step` reads: ``callbacks``, ``_ok`` and ``_value``) on the
environment's own queue, with the priority and the sequence number `env.timeout` would give
it. So a wake-up fires at the same time and in the same order, among every other event, as
``env.timeout(delay, value).callbacks.append(callback)`` would (SimPy's order is time, then
priority, then creation), at about half the cost.

The queue and the counter are SimPy internals (``_queue``, ``_eid``; the same since SimPy 3,
and the dependency is pinned below SimPy 5). An environment without them, such as a future
SimPy, gets the public ``env.timeout`` instead: slower, the same timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from itertools import count
from typing import Any

import simpy
from simpy.events import NORMAL

__all__ = ["Wake", "WakeFn", "waker"]

WakeFn = Callable[[float, Callable[[Any], None], Any], None]
"""``wake(delay, callback, value)``: ``callback(event)`` at ``now + delay``; ``event._value``
is ``value``."""


class Wake:
    """A scheduled call: the three attributes `simpy.Environment.step` uses, nothing else."""

    __slots__ = ("_ok", "_value", "callbacks")

    def __init__(self, callback: Callable[[Any], None], value: Any) -> None:
        self.callbacks: list[Callable[[Any], None]] | None = [callback]
        self._ok = True
        self._value = value

    def __repr__(self) -> str:
        return f"<Wake {self.callbacks!r} value={self._value!r}>"


def waker(env: simpy.Environment, *, public: bool = False) -> WakeFn:
    """The ``wake(delay, callback, value)`` of ``env`` (``public=True``: through `env.timeout`).

    Raises (from ``wake``):
        ValueError: a negative delay (as `env.timeout` says).
    """
    queue = getattr(env, "_queue", None)
    eid = getattr(env, "_eid", None)
    if public or not isinstance(queue, list) or not isinstance(eid, count):

        def wake_public(delay: float, callback: Callable[[Any], None], value: Any) -> None:
            env.timeout(delay, value).callbacks.append(callback)

        return wake_public

    def wake(delay: float, callback: Callable[[Any], None], value: Any) -> None:
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        heappush(queue, (env._now + delay, NORMAL, next(eid), Wake(callback, value)))

    return wake
