"""Which ``llm_budget`` marker a test gets: the closest one, on the test, its class or module.

The plugin looks markers up once per collected item, sharing the look-up above the items
(`closest_marker`); these pin that it agrees with pytest's own ``get_closest_marker``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_omnillm.settings import closest_marker

MODULE_A = """
import pytest

pytestmark = pytest.mark.llm_budget("0.30")


def test_module_marker():
    pass


@pytest.mark.llm_budget("0.10")
def test_own_marker():
    pass


@pytest.mark.llm_budget("0.20")
class TestClass:
    def test_class_marker(self):
        pass

    @pytest.mark.llm_budget(None)
    def test_lifted(self):
        pass

    @pytest.mark.parametrize("i", [1, 2])
    def test_param(self, i):
        pass

    @pytest.mark.parametrize("i", [pytest.param(3, marks=pytest.mark.llm_budget("0.03"))])
    def test_param_marker(self, i):
        pass
"""

MODULE_B = """
class TestPlain:
    def test_default(self):
        pass
"""


def test_the_closest_marker_wins_at_every_level(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=MODULE_A, test_b=MODULE_B)
    report = pytester.path / "spend.json"
    result = pytester.runpytest("--llm-budget", "0.50", "--llm-report", str(report))
    result.assert_outcomes(passed=8)
    tests = {t["nodeid"]: t for t in json.loads(report.read_text())["tests"]}
    # Expected by the rule alone: test marker > class marker > module marker > --llm-budget.
    expected = {
        "test_a.py::test_module_marker": 300_000,
        "test_a.py::test_own_marker": 100_000,
        "test_a.py::TestClass::test_class_marker": 200_000,
        "test_a.py::TestClass::test_lifted": None,
        "test_a.py::TestClass::test_param[1]": 200_000,
        "test_a.py::TestClass::test_param[2]": 200_000,
        "test_a.py::TestClass::test_param_marker[3]": 30_000,
        "test_b.py::TestPlain::test_default": 500_000,
    }
    assert {k: tests[k]["limit"] for k in expected} == expected
    assert list(tests) == list(expected)  # in the order the tests ran
    assert tests["test_a.py::TestClass::test_class_marker"]["limit_source"] == (
        "@pytest.mark.llm_budget on test_a.py::TestClass::test_class_marker"
    )
    assert tests["test_b.py::TestPlain::test_default"]["limit_source"] == "--llm-budget option"
    assert len(tests) == 8  # every test has a record, the unmarked one included
    assert tests["test_b.py::TestPlain::test_default"]["requests"] == []


def test_a_bad_class_marker_names_each_test_before_any_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llm_budget("lots")
        class TestBad:
            def test_one(self):
                pass

            def test_two(self):
                pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*on test_a_bad_class_marker_names_each_test_before_any_runs.py::TestBad::test_one*",
            "*on test_a_bad_class_marker_names_each_test_before_any_runs.py::TestBad::test_two*",
        ]
    )


# -- closest_marker against a direct walk, on random node trees --------------------------------


@dataclass(frozen=True)
class _Mark:
    name: str


@dataclass(eq=False)
class _Node:
    own_markers: list[_Mark]
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)


def _walk(node: _Node | None, name: str) -> _Mark | None:
    # What pytest's get_closest_marker does: the item's own markers, then each parent's.
    while node is not None:
        for mark in node.own_markers:
            if mark.name == name:
                return mark
        node = node.parent
    return None


_marks = st.lists(st.builds(_Mark, st.sampled_from(["llm_budget", "parametrize", "slow"])),
                  max_size=3)


@st.composite
def _trees(draw: Any) -> list[_Node]:
    """Leaves (items) of a random tree of nodes, in a random order."""
    root = _Node(draw(_marks))
    nodes, leaves = [root], []
    for _ in range(draw(st.integers(1, 25))):
        parent = draw(st.sampled_from(nodes))
        child = _Node(draw(_marks), parent)
        parent.children.append(child)
        nodes.append(child)
    leaves = [n for n in nodes if not n.children]
    return draw(st.permutations(leaves))


@given(_trees())
def test_closest_marker_agrees_with_a_direct_walk(items: list[_Node]) -> None:
    above: dict[Any, Any] = {}
    for item in items:
        found = closest_marker(item, "llm_budget", above)  # type: ignore[arg-type]
        assert found is _walk(item, "llm_budget")


# -- the records of tests that made no call are made when read -----------------------------------


@given(
    st.lists(st.one_of(st.text(max_size=5), st.builds(dict, spent=st.integers(0, 9))),
             max_size=12),
    st.integers(-14, 14),
    st.integers(-14, 14),
)
def test_test_records_read_like_the_list_they_stand_for(
    records: list[Any], start: int, stop: int
) -> None:
    from pytest_omnillm.report import TestRecords

    def make(nodeid: str) -> dict[str, Any]:
        return {"nodeid": nodeid, "spent": 0}

    full = [make(r) if isinstance(r, str) else r for r in records]
    lazy = TestRecords(records, make)
    assert len(lazy) == len(full) and list(lazy) == full
    assert lazy[start:stop] == full[start:stop]
    if full:
        assert lazy[start % len(full)] == full[start % len(full)]
