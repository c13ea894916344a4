"""Plugin start-up stays cheap: heavy modules load only when something asks for them.

Every pytest run loads the plugin, so an import it does not need is paid by every test suite
(benchmarks: ``python -m benchmarks --only plugin_suite``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
import pytest_omnillm.plugin
from omnillm_sim.pricing import catalogue
table = catalogue("current")
before = {m: m in sys.modules for m in ("genai_prices", "omnillm_sim.verify.seed_api",
                                       "hypothesis.stateful")}
price = table.price("gpt-4o-mini")
from pytest_omnillm import check_tracker
after = {m: m in sys.modules for m in ("genai_prices", "omnillm_sim.verify.seed_api")}
print(json.dumps({"before": before, "after": after, "input": price.rates.input,
                  "check_tracker": check_tracker.__module__}))
"""


def test_prices_and_check_tracker_load_on_first_use() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout
    seen = json.loads(out)
    assert seen["before"] == {"genai_prices": False, "omnillm_sim.verify.seed_api": False,
                              "hypothesis.stateful": False}
    assert seen["after"] == {"genai_prices": True, "omnillm_sim.verify.seed_api": True}
    assert seen["input"] > 0 and seen["check_tracker"] == "omnillm_sim.verify.seed_api"


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    import pytest

    import pytest_omnillm

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pytest_omnillm.nope  # noqa: B018


AIOHTTP_PROBE = """
import json, sys
import pytest_omnillm.plugin
before = "aiohttp" in sys.modules
import aiohttp
patched = getattr(aiohttp.ClientSession.__dict__["_request"], "__omnillm_patched__", False)
print(json.dumps({"before": before, "patched": patched}))
"""


def test_aiohttp_is_not_imported_by_the_plugin_but_patched_when_it_is() -> None:
    out = subprocess.run([sys.executable, "-c", AIOHTTP_PROBE], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == {"before": False, "patched": True}


QUIET_SUITE = """
import sys

import pytest

BUDGET_MODULES = ("pytest_omnillm.session", "pytest_omnillm.report", "omnillm_sim.pricing")


@pytest.mark.parametrize("i", range(3))
def test_no_llm_call(i):
    assert [m for m in BUDGET_MODULES if m in sys.modules] == []


@pytest.mark.llm_budget("0.01")
def test_marked_but_no_llm_call():
    assert [m for m in BUDGET_MODULES if m in sys.modules] == []


def test_uses_the_fixture(llm_budget):
    with llm_budget.reserve(300) as r:
        r.settle(250)
    assert "pytest_omnillm.session" in sys.modules
"""


def test_budget_machinery_loads_only_when_a_test_needs_it(tmp_path: Path) -> None:
    # Budgets configured, but the first tests make no LLM call: nothing of the budget session
    # is imported for them; the fixture then brings it in and its spend is still reported.
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_quiet.py").write_text(QUIET_SUITE, encoding="utf-8")
    report = tmp_path / "llm.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-p", "no:xdist", "--llm-budget", "0.50", "--llm-session-budget", "100",
         "--llm-report", str(report), "test_quiet.py"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(report.read_text(encoding="utf-8"))
    tests = {t["nodeid"].split("::")[1]: t for t in summary["tests"]}
    assert len(tests) == 5
    assert tests["test_uses_the_fixture"]["spent"] == 250
    assert tests["test_marked_but_no_llm_call"]["limit"] == 10_000
    assert tests["test_no_llm_call[0]"]["limit"] == 500_000
    assert all(t["spent"] == 0 for name, t in tests.items() if name != "test_uses_the_fixture")
