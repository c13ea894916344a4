"""pytest-xdist: two workers share the session budget through the SQLite ledger.

Model "free-input" costs nothing per input token and 1 µ$ per output token, and every
request asks for at most 100 output tokens, so each estimate is exactly 100 µ$ whatever the
prompt. These runs are subprocesses (xdist needs them); they are the slowest plugin tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fakellm import FakeLLM, Reply

TESTS = """
import openai, pytest

@pytest.mark.parametrize("i", range(12))
def test_call(i):
    client = openai.OpenAI(base_url={url!r} + "/v1", api_key="k", max_retries=0)
    r = client.chat.completions.create(
        model="free-input", messages=[{{"role": "user", "content": "hi"}}], max_tokens=100
    )
    assert r.choices[0].message.content == "hi"
"""


def _run(
    pytester: pytest.Pytester, llm: FakeLLM, prices_file: Path
) -> tuple[dict[str, Any], pytest.RunResult]:
    pytester.makepyfile(TESTS.format(url=llm.url))
    report = pytester.path / "spend.json"
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "-p",
        "xdist",
        "--tb=line",
        "--llm-prices",
        str(prices_file),
        "--llm-session-budget",
        "0.00055",
        "--llm-report",
        str(report),
    )
    return json.loads(report.read_text()), result


def test_billed_equals_estimate_admits_exactly_five(
    pytester: pytest.Pytester, llm: FakeLLM, prices_file: Path
) -> None:
    # Each request settles at exactly its 100 µ$ estimate, so whatever the interleaving of
    # the workers the ledger admits exactly floor(550 / 100) = 5 and refuses the other 7.
    llm.default = Reply(output="max")
    data, result = _run(pytester, llm, prices_file)
    result.assert_outcomes(passed=5, failed=7)
    assert len(llm.received) == 5
    billed = sum(b.output * 1 for b in llm.billed)
    assert billed == 500 and data["session"]["spent"] == billed
    ledger = data["session"]["ledger"]
    assert (ledger["admitted"], ledger["rejected"], ledger["used"], ledger["open_count"]) == (
        5,
        7,
        500,
        0,
    )
    refused = [r for t in data["tests"] for r in t["requests"] if r["status"] == "refused"]
    assert len(refused) == 7 and all(r["detail"] == "session budget" for r in refused)
    result.stdout.fnmatch_lines(
        ["session: $0.000500 spent in 12 LLM request(s) from 12 test(s), 7 refused*"]
    )
    # The controller shows each refused test with the budget's own status letter.
    progress = re.search(r"^([.B]+)\s+\[100%\]$", result.stdout.str(), re.MULTILINE)
    assert progress is not None and sorted(progress.group(1)) == ["."] * 5 + ["B"] * 7


def test_every_decision_matches_the_ledger(
    pytester: pytest.Pytester, llm: FakeLLM, prices_file: Path
) -> None:
    # Requests settle at 5 µ$ (< 100 µ$ estimates): how many fit depends on how the two
    # workers interleave, but every decision must match the ledger's state at that moment,
    # and the reported total must equal what the server billed.
    data, result = _run(pytester, llm, prices_file)
    entries = data["session"]["ledger_entries"]
    assert len(entries) == 12
    for e in entries:
        admitted = e["state"] != "rejected"
        assert admitted == (e["used_before"] + e["estimate"] <= 550), e
    admitted = [e for e in entries if e["state"] != "rejected"]
    assert len(llm.received) == len(admitted) == data["session"]["ledger"]["admitted"]
    billed = sum(b.output * 1 for b in llm.billed)
    assert billed == 5 * len(admitted) == data["session"]["spent"]
    assert {e["owner"].split(":")[0] for e in entries} <= {"gw0", "gw1"}
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == len(admitted) and outcomes.get("failed", 0) == 12 - len(admitted)


def test_dist_without_workers_runs_here_and_reports_every_test(
    pytester: pytest.Pytester, llm: FakeLLM, prices_file: Path
) -> None:
    # `--dist load` in addopts and no `-n`: xdist starts no worker, the tests run in this
    # process, and each must still be in the report (and a refusal show its own status).
    pytester.makeini(f"[pytest]\naddopts = --dist load\nllm_prices = {prices_file}\n")
    pytester.makepyfile(
        f"""
        import openai, pytest

        @pytest.mark.parametrize("i", range(3))
        def test_quiet(i):
            pass

        @pytest.mark.llm_budget("0.000001")
        def test_refused():
            client = openai.OpenAI(base_url={llm.url!r} + "/v1", api_key="k", max_retries=0)
            try:
                client.chat.completions.create(
                    model="test-model", messages=[{{"role": "user", "content": "hi"}}],
                    max_tokens=100,
                )
            except Exception:
                pass  # swallowed: the plugin fails the test anyway
        """
    )
    report = pytester.path / "spend.json"
    result = pytester.runpytest("--llm-report", str(report), "--llm-session-budget", "1")
    result.assert_outcomes(passed=3, failed=1)
    assert llm.received == []
    tests = json.loads(report.read_text())["tests"]
    assert [t["nodeid"].split("::")[1] for t in tests] == [
        "test_quiet[0]", "test_quiet[1]", "test_quiet[2]", "test_refused",
    ]
    assert [r["status"] for r in tests[3]["requests"]] == ["refused"]
    result.stdout.fnmatch_lines(["*...B*"])
