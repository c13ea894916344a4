"""The usage examples in the gateway modules' docstrings run and give what they say."""

import doctest

import pytest

import omnillm_sim.breaker
import omnillm_sim.gateway
import omnillm_sim.ratelimit


@pytest.mark.parametrize(
    "module", [omnillm_sim.ratelimit, omnillm_sim.breaker, omnillm_sim.gateway]
)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
