"""Wake-ups fire when and in the order `env.timeout` callbacks would (SimPy's own timeline)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from omnillm_sim.sim.wake import Wake, waker

# A program: at t=0 schedule each (delay, fast, children); when one fires it schedules its
# children the same way. ``fast`` picks a wake-up instead of a timeout (when wake-ups are on).
delays = st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.5])  # repeats: many events share an instant
programs = st.recursive(
    st.tuples(delays, st.booleans(), st.just(())),
    lambda inner: st.tuples(delays, st.booleans(), st.lists(inner, max_size=3).map(tuple)),
    max_leaves=25,
)


def timeline(program: list[Any], use_wake: bool, public: bool = False) -> list[tuple[float, str]]:
    """(time, name) of every firing, with SimPy timeouts only or mixed with wake-ups."""
    env = simpy.Environment()
    wake = waker(env, public=public)
    fired: list[tuple[float, str]] = []

    def schedule(nodes: Any, prefix: str) -> None:
        for i, (delay, fast, children) in enumerate(nodes):
            name = f"{prefix}{i}"

            def callback(event: Any, name: str = name, children: Any = children) -> None:
                fired.append((env.now, name))
                assert event._value == name  # the value reaches the callback
                schedule(children, name + ".")

            if use_wake and fast:
                wake(delay, callback, name)
            else:
                env.timeout(delay, name).callbacks.append(callback)

    schedule(program, "")
    env.run()
    return fired


@settings(max_examples=200, deadline=None)
@given(st.lists(programs, min_size=1, max_size=6))
def test_wake_ups_keep_simpys_timeline(program: list[Any]) -> None:
    expected = timeline(program, use_wake=False)
    assert timeline(program, use_wake=True) == expected
    assert timeline(program, use_wake=True, public=True) == expected


def test_same_instant_fires_in_creation_order_across_kinds() -> None:
    # Hand-made: at t=1 a timeout, a wake-up, then a timeout, all created at t=0.
    env = simpy.Environment()
    wake = waker(env)
    order: list[str] = []
    env.timeout(1.0).callbacks.append(lambda e: order.append("timeout-a"))
    wake(1.0, lambda e: order.append("wake"), None)
    env.timeout(1.0).callbacks.append(lambda e: order.append("timeout-b"))
    wake(0.5, lambda e: order.append(f"early@{env.now}"), None)
    env.run()
    assert order == ["early@0.5", "timeout-a", "wake", "timeout-b"]
    assert env.now == 1.0


@pytest.mark.parametrize("public", [False, True])
def test_negative_delay_is_refused_like_a_timeout(public: bool) -> None:
    env = simpy.Environment()
    with pytest.raises(ValueError, match=re.escape("Negative delay -0.5")):
        waker(env, public=public)(-0.5, lambda e: None, None)
    assert env.peek() == float("inf")  # nothing was scheduled


def test_an_environment_without_simpys_internals_gets_timeouts() -> None:
    class Facade:
        """Only SimPy's public scheduling surface (no ``_queue`` / ``_eid``)."""

        def __init__(self, env: simpy.Environment) -> None:
            self.timeout = env.timeout

    env = simpy.Environment()
    fired: list[float] = []
    waker(Facade(env))(2.0, lambda e: fired.append(env.now), None)  # type: ignore[arg-type]
    assert [type(e).__name__ for e in [env._queue[0][3]]] == ["Timeout"]
    env.run()
    assert fired == [2.0]


def test_a_wake_up_is_processed_by_step_and_then_spent() -> None:
    env = simpy.Environment()
    seen: list[Any] = []
    waker(env)(0.0, seen.append, "v")
    event = env._queue[0][3]
    assert isinstance(event, Wake) and "value='v'" in repr(event)
    env.step()
    assert seen == [event] and event.callbacks is None  # SimPy marks it processed
