"""Project exceptions survive SimPy's ``type(exc)(*exc.args)`` re-creation and pickling."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import simpy
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim import errors

text = st.text(max_size=20)
value = st.one_of(st.none(), st.integers(), text, st.lists(st.integers(), max_size=3))

BUILDERS: list[st.SearchStrategy[errors.OmniLLMError]] = [
    st.builds(errors.TraceError, text, st.integers(0, 10**6), text, text, value),
    st.builds(errors.ScenarioError, text, text, text, value),
    st.builds(errors.InvalidValueError, text, value, text, source=text),
    st.builds(errors.ConfigError, text, value, text, source=text),
    st.builds(errors.UnknownModelError, text, text, text),
    st.builds(errors.BudgetExceeded, st.integers(0), st.integers(0), st.integers(0), what=text),
    st.builds(errors.ReservationStateError, text),
    st.builds(errors.InvariantViolation, text, text),
]


def _same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert str(a) == str(b)
    assert vars(a) == vars(b)


@given(st.one_of(BUILDERS))
def test_recreated_and_unpickled_errors_equal_the_original(exc: errors.OmniLLMError) -> None:
    _same(exc, type(exc)(*exc.args))
    _same(exc, pickle.loads(pickle.dumps(exc)))


@given(st.one_of(BUILDERS))
def test_an_error_inside_a_simpy_process_reaches_the_caller_intact(
    exc: errors.OmniLLMError,
) -> None:
    env = simpy.Environment()

    def process() -> Callable[[], object]:
        yield env.timeout(1)
        raise exc

    env.process(process())  # type: ignore[arg-type]
    try:
        env.run()
    except errors.OmniLLMError as raised:
        _same(exc, raised)
    else:  # pragma: no cover - simpy always re-raises
        raise AssertionError("the process's error was lost")
