"""Plugin start-up stays cheap: heavy modules load only when something asks for them.

Every pytest run loads the plugin, so an import it does not need is paid by every test suite
(benchmarks: ``python -m benchmarks --only plugin_suite``).
"""

from __future__ import annotations

import json
import subprocess
import sys

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
