"""Whole pytest runs (subprocesses): patch order, the xdist controller, killed workers, secrets.

Model "free-input" costs nothing per input token and 1 µ$ per output token; with
``max_tokens=100`` and the fake server answering ``output="max"``, every estimate and every
billed cost is exactly 100 µ$, so budgets admit a known number of calls whatever the prompt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakellm import FakeLLM, Reply

CALL = """
import httpx, httpx2, openai

URL = {url!r}
BODY = {{"model": "free-input", "messages": [{{"role": "user", "content": "hi"}}],
        "max_tokens": 100}}

def sdk_call(**kw):
    client = openai.OpenAI(base_url=URL + "/v1", api_key="k", max_retries=0)
    return client.chat.completions.create(
        model="free-input", messages=[{{"role": "user", "content": "hi"}}], max_tokens=100, **kw
    )

def raw_call(lib):
    with lib.Client() as client:
        response = client.post(URL + "/v1/chat/completions", json=BODY)
        response.raise_for_status()
        return response.json()
"""


def _report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _records(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for t in data["tests"] for r in t["requests"]] + data["outside_tests"]


@pytest.fixture
def run(
    pytester: pytest.Pytester, llm: FakeLLM, prices_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    llm.default = Reply(output="max")
    pytester.makepyfile(llm_calls=CALL.format(url=llm.url))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))

    def go(*args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
        report = pytester.path / "spend.json"
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--llm-prices", str(prices_file),
            "--llm-report", str(report), *args,
        )  # fmt: skip
        return result, _report(report) if report.exists() else {}

    return go


# -- item 2: another library replacing _send_single_request -------------------------------------

HOSTILE = """
# Like vcrpy 7: saves Client._send_single_request when imported, puts a stub calling the saved
# method in place during a "cassette", and puts the saved method back afterwards.
import httpx, httpx2

SAVED = {lib: lib.Client.__dict__["_send_single_request"] for lib in (httpx, httpx2)}

def start():
    for lib, saved in SAVED.items():
        def stub(self, request, _saved=saved):
            return _saved(self, request)
        lib.Client._send_single_request = stub

def stop():
    for lib, saved in SAVED.items():
        lib.Client._send_single_request = saved
"""

HOSTILE_TESTS = """
import httpx, httpx2, pytest
import hostile_lib
from llm_calls import raw_call

@pytest.fixture
def cassette():
    hostile_lib.start()
    yield
    hostile_lib.stop()

@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_inside_the_cassette(cassette, lib):
    raw_call(lib)

@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_after_the_cassette(lib):
    raw_call(lib)
"""


@pytest.mark.parametrize("loaded", ["by-conftest", "before-the-plugin"])
def test_a_library_replacing_the_send_method_never_hides_requests(
    pytester: pytest.Pytester, run: Any, llm: FakeLLM, loaded: str
) -> None:
    pytester.makepyfile(hostile_lib=HOSTILE, test_hostile=HOSTILE_TESTS)
    if loaded == "by-conftest":  # the reported vcrpy 7 case: a conftest imports it
        pytester.makeconftest("import hostile_lib\n")
        result, data = run("--llm-budget", "1")
    else:  # imported before our plugin: it saved the unpatched method
        result, data = run("-p", "hostile_lib", "--llm-budget", "1")
    result.assert_outcomes(passed=4)
    assert len(llm.billed) == 4
    records = _records(data)
    assert [(r["status"], r["charged"]) for r in records] == [("ok", 100)] * 4  # each once
    assert data["session"]["spent"] == sum(b.output for b in llm.billed) == 400
    if loaded == "before-the-plugin":
        result.stdout.fnmatch_lines(
            ["interception: httpx.Client._send_single_request was replaced by hostile_lib*"]
        )


VCR_TESTS = """
import httpx, httpx2, pytest, vcr, vcr.patch
from llm_calls import raw_call

# vcrpy 7 patches httpx's Client._send_single_request; vcrpy 9 patches httpx and httpx2
# transports.
LIBS = [httpx] + ([httpx2] if hasattr(vcr.patch, "_Httpx2HttpTransport_handle_request") else [])

@pytest.mark.parametrize("mode", ["all", "none"])
@pytest.mark.parametrize("lib", LIBS, ids=[lib.__name__ for lib in LIBS])
def test_cassette(lib, mode, tmp_path_factory):
    path = str(tmp_path_factory.getbasetemp() / f"{lib.__name__}.yaml")
    with vcr.use_cassette(path, record_mode=mode):
        raw_call(lib)
"""


def test_real_vcrpy_recording_is_live_and_replaying_is_not(
    pytester: pytest.Pytester, run: Any, llm: FakeLLM
) -> None:
    pytester.makeconftest("import vcr\n")
    pytester.makepyfile(test_vcr=VCR_TESTS)
    result, data = run("--llm-budget", "1", "-p", "no:randomly")
    libs = ["httpx"] + (["httpx2"] if _vcr_patches_httpx2() else [])
    result.assert_outcomes(passed=2 * len(libs))
    assert len(llm.billed) == len(libs)  # recorded once per library; then replayed
    records = {r["test"].split("[")[1]: r for r in _records(data)}
    replays = [records.get(f"{lib}-none]") for lib in libs]
    for lib in libs:
        recorded = records[f"{lib}-all]"]
        assert (recorded["replayed"], recorded["charged"]) == (False, 100)  # record mode: live
    assert data["session"]["spent"] == 100 * len(libs)
    if _vcr_patches_httpx2():  # vcrpy >= 8 replays below our wrapper: we see the replay
        assert all(r is not None and r["replayed"] and r["charged"] == 0 for r in replays)
        n = len(libs)
        assert data["session"]["replayed"]["if_live"] == 100 * n
        result.stdout.fnmatch_lines(
            [f"replayed from mocks/cassettes: $0.000{n}00 if live, {n} request(s), not charged*"]
        )
    else:  # vcrpy 7's stub answers a replay above it: never sent, never charged, not seen
        assert replays == [None]


def _vcr_patches_httpx2() -> bool:
    import vcr.patch

    return hasattr(vcr.patch, "_Httpx2HttpTransport_handle_request")


# -- item 5: calls made in the xdist controller ------------------------------------------------

CONTROLLER_CONFTEST = """
from llm_calls import sdk_call

def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller only
        for _ in range(3):
            sdk_call()
"""

WORKER_TESTS = """
import pytest
from llm_calls import sdk_call

@pytest.mark.parametrize("i", range(12))
def test_call(i):
    sdk_call()
"""


def test_the_xdist_controller_shares_the_session_ledger(
    pytester: pytest.Pytester, run: Any, llm: FakeLLM
) -> None:
    # Session budget 550 µ$, every call 100 µ$: 3 calls in the controller leave room for
    # exactly 2 of the workers' 12.
    pytester.makeconftest(CONTROLLER_CONFTEST)
    pytester.makepyfile(test_calls=WORKER_TESTS)
    result, data = run("-n", "2", "-p", "xdist", "--llm-session-budget", "0.00055")
    assert len(llm.received) == 5, "the controller spent outside the shared ledger"
    result.assert_outcomes(passed=2, failed=10)
    assert data["session"]["ledger"]["used"] == 500 == data["session"]["spent"]
    assert [r["test"] for r in data["outside_tests"]] == ["<outside tests>"] * 3


# -- item 7: a worker killed in the middle of a test -------------------------------------------

KILLED_TESTS = """
import os, signal
import pytest
from llm_calls import sdk_call

def test_killed():
    sdk_call()  # settled: 100
    stream = sdk_call(stream=True, stream_options={"include_usage": True})  # body unread: open
    os.kill(os.getpid(), signal.SIGKILL)

@pytest.mark.parametrize("i", range(3))
def test_call(i):
    sdk_call()
"""


def test_a_killed_worker_leaves_totals_equal_to_the_ledger(
    pytester: pytest.Pytester, run: Any, llm: FakeLLM
) -> None:
    pytester.makepyfile(test_kill=KILLED_TESTS)
    result, data = run("-n", "2", "-p", "xdist", "--llm-session-budget", "1")
    result.assert_outcomes(passed=3, failed=1)
    ledger = data["session"]["ledger"]
    billed = sum(b.output for b in llm.billed)
    assert billed == 500  # 1 + the stream (sent whole) + 3
    assert data["session"]["spent"] == ledger["used"] == billed
    lost = data["lost_with_workers"]
    assert sorted((r["open"], r["charged"], r["test"].split("::")[-1]) for r in lost) == [
        (False, 100, "test_killed"),
        (True, 100, "test_killed"),
    ]
    path = data["session"]["ledger_kept"]
    try:
        assert path and Path(path).exists(), "a ledger with open reservations was deleted"
        owner = next(r["owner"] for r in lost if r["open"])
        result.stdout.fnmatch_lines(
            [
                "*lost with killed workers: 2 request(s), $0.000200 charged*",
                f"*1 x free-input $0.000100, lost with worker {owner.split(':')[0]} (open at the "
                "kill: charged at its estimate) in *test_kill.py::test_killed",
                f"session ledger kept (it has open reservations): {path}*",
                f"  omnillm-sim ledger {path} --reclaim {owner}",
            ]
        )
        cli = Path(sys.executable).parent / "omnillm-sim"
        done = subprocess.run(
            [str(cli), "ledger", path, "--reclaim", owner],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    finally:
        if path:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)


# -- item 8: secrets never reach any output ----------------------------------------------------

SECRET_CONFTEST = """
import shutil

def pytest_sessionfinish(session):
    plugin = session.config.pluginmanager.get_plugin("omnillm-budget")
    ledger = getattr(plugin, "ledger", None)
    if ledger is not None and not hasattr(session.config, "workerinput"):
        for suffix in ("", "-wal"):
            try:
                shutil.copy(ledger.path + suffix, "ledger-copy" + suffix)
            except FileNotFoundError:
                pass
"""

SECRET_TESTS = """
import os
import httpx, openai, pytest
from pytest_omnillm import LLMBudgetExceeded

URL = {url!r}
HOST = URL.removeprefix("http://")
BODY = {{"model": "test-model", "messages": [{{"role": "user", "content": "hi"}}],
        "max_tokens": 20}}

def secret_url(path):
    return (f"http://user:{{os.environ['S_USERINFO']}}@{{HOST}}{{path}}?key="
            f"{{os.environ['S_KEY']}}&sig={{os.environ['S_SIG']}}&api_key={{os.environ['S_AK']}}"
            f"&token={{os.environ['S_TOKEN']}}")

def client():
    return openai.OpenAI(
        base_url=f"http://user:{{os.environ['S_USERINFO']}}@{{HOST}}/v1", max_retries=0,
        default_headers={{"x-api-key": os.environ["S_HEADER"]}},
        default_query={{"api-key": os.environ["S_QUERY"]}},
    )

def test_sdk():
    client().chat.completions.create(model="test-model", messages=BODY["messages"],
                                     max_tokens=20)

def test_raw():
    with httpx.Client(headers={{"authorization": "Bearer " + os.environ["S_HEADER"]}}) as c:
        c.post(secret_url("/v1/chat/completions"), json=BODY)

def test_error():
    with httpx.Client() as c:
        assert c.post(secret_url("/v1/chat/completions"), json=BODY).status_code == 500

@pytest.mark.llm_budget("0.000001")
def test_refused():
    with pytest.raises(LLMBudgetExceeded):
        client().chat.completions.create(model="test-model", messages=BODY["messages"],
                                         max_tokens=20)
"""

SECRETS = {
    "S_USERINFO": "PLANTEDuserinfo1",
    "S_KEY": "PLANTEDkey2",
    "S_SIG": "PLANTEDsig3",
    "S_AK": "PLANTEDapikey4",
    "S_TOKEN": "PLANTEDtoken5",
    "S_HEADER": "PLANTEDheader6",
    "S_QUERY": "PLANTEDquery7",
    "OPENAI_API_KEY": "sk-PLANTEDenv8",
}


def test_no_output_holds_a_secret(
    pytester: pytest.Pytester, run: Any, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    llm.default = Reply()
    llm.script = [Reply(), Reply(), Reply(status=500)]
    pytester.makeconftest(SECRET_CONFTEST)
    pytester.makepyfile(test_secrets=SECRET_TESTS.format(url=llm.url))
    junit = pytester.path / "junit.xml"
    result, data = run(
        "-vv", "-rA", "-n", "2", "-p", "xdist", "--dist", "loadfile",
        "--llm-session-budget", "1", f"--junitxml={junit}",
    )  # fmt: skip
    result.assert_outcomes(passed=3, failed=1)
    # The planted values did reach the server (so the test is not vacuous) ...
    received = json.dumps([r.headers for r in llm.received]) + " ".join(
        r.path for r in llm.received
    )
    assert "PLANTEDheader6" in received
    assert len(_records(data)) == 4 and data["session"]["ledger"]["admitted"] == 3
    # ... but no output holds any of them.
    outputs = {
        "terminal": "\n".join(result.outlines + result.errlines),
        "json": (pytester.path / "spend.json").read_text(),
        "junitxml": junit.read_text(),
    }
    for suffix in ("", "-wal"):
        copy = pytester.path / f"ledger-copy{suffix}"
        if copy.exists():
            outputs[f"ledger{suffix}"] = copy.read_bytes().decode("latin-1")
    assert "ledger" in outputs
    for where, text in outputs.items():
        for value in SECRETS.values():
            assert value not in text, f"{value} leaked into the {where}"
    urls = [r["url"] for r in _records(data)]
    assert all("REDACTED" in u for u in urls if "?" in u or "@" in u)
