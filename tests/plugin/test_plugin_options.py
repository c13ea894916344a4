"""pytester runs of the plugin: options, ini keys, env var, marker, precedence, failures,
status letter, terminal summary and JSON report.

Every inner test calls the fake server through the real OpenAI SDK with ``max_tokens=20``.
Its estimate E (about 150 µ$) is far above 1 µ$ and far below $1, so a limit of
"0.000001" refuses the first request and "1" admits all of them: which source won is visible
in the outcome. Each admitted call is billed 20 µ$ by the fake server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakellm import FakeLLM, Reply

TINY, BIG = "0.000001", "1"

CONFTEST = """
import openai, pytest

URL = {url!r}

@pytest.fixture
def call():
    client = openai.OpenAI(base_url=URL + "/v1", api_key="k", max_retries=0)

    def call(model="test-model", **kw):
        kw.setdefault("max_tokens", 20)
        if kw["max_tokens"] is None:
            del kw["max_tokens"]
        r = client.chat.completions.create(
            model=model, messages=[{{"role": "user", "content": "hi"}}], **kw
        )
        return r.choices[0].message.content

    return call
"""

ONE_CALL = """
def test_one(call):
    assert call() == "hi"
"""


@pytest.fixture
def pt(pytester: pytest.Pytester, llm: FakeLLM, prices_file: Path) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.format(url=llm.url))
    pytester.makeini(f"[pytest]\nllm_prices = {prices_file}\n")
    return pytester


def ini(pt: pytest.Pytester, prices_file: Path, **keys: str) -> None:
    lines = [f"llm_prices = {prices_file}"] + [f"{k} = {v}" for k, v in keys.items()]
    pt.makeini("[pytest]\n" + "\n".join(lines) + "\n")


# -- no budget: report only --------------------------------------------------------------------


def test_without_any_budget_it_only_reports(pt: pytest.Pytester, llm: FakeLLM) -> None:
    pt.makepyfile("def test_many(call):\n    for _ in range(3):\n        assert call() == 'hi'\n")
    result = pt.runpytest()
    result.assert_outcomes(passed=1)
    assert len(llm.received) == 3
    result.stdout.fnmatch_lines(
        [
            "*= LLM budget =*",
            "session: $0.000060 spent in 3 LLM request(s) from 1 test(s), 0 refused",
            "*$0.000060  test_without_any_budget_it_only_reports.py::test_many*limit unlimited*",
            "*$0.000060  test-model  3 request(s), 30 input / 15 output tokens",
        ]
    )


# -- each source, and the precedence marker > CLI > env > ini ----------------------------------


def _refused(result: pytest.RunResult, llm: FakeLLM, source: str) -> None:
    result.assert_outcomes(failed=1)
    assert llm.received == []
    result.stdout.fnmatch_lines(
        [
            f"*LLM test budget exceeded in *::test_one: request to test-model estimated at $0.000*"
            f"the test limit is $0.000001 ({source}) and $0.000000 is already spent*"
        ]
    )


def test_option(pt: pytest.Pytester, llm: FakeLLM) -> None:
    pt.makepyfile(ONE_CALL)
    _refused(pt.runpytest("--llm-budget", TINY), llm, "--llm-budget option")


def test_env(pt: pytest.Pytester, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_LLM_BUDGET", TINY)
    pt.makepyfile(ONE_CALL)
    _refused(pt.runpytest(), llm, "PYTEST_LLM_BUDGET environment variable")


def test_ini(pt: pytest.Pytester, llm: FakeLLM, prices_file: Path) -> None:
    ini(pt, prices_file, llm_budget=TINY)
    pt.makepyfile(ONE_CALL)
    _refused(pt.runpytest(), llm, "llm_budget ini key")


def test_marker(pt: pytest.Pytester, llm: FakeLLM) -> None:
    pt.makepyfile(f"import pytest\n\n@pytest.mark.llm_budget({TINY!r})" + ONE_CALL)
    _refused(pt.runpytest(), llm, "@pytest.mark.llm_budget on test_marker.py::test_one")


@pytest.mark.parametrize(
    ("marker", "option", "env", "ini_value", "admitted"),
    [
        # Each row's winning source decides: BIG admits the call, TINY refuses it.
        (BIG, TINY, TINY, TINY, True),  # marker beats everything
        (TINY, BIG, BIG, BIG, False),
        (None, BIG, TINY, TINY, True),  # option beats env and ini
        (None, TINY, BIG, BIG, False),
        (None, None, BIG, TINY, True),  # env beats ini
        (None, None, TINY, BIG, False),
        (None, None, None, BIG, True),  # ini alone
        ("None", TINY, TINY, TINY, True),  # llm_budget(None) lifts the per-test limit
    ],
)
def test_precedence(
    pt: pytest.Pytester,
    llm: FakeLLM,
    prices_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    marker: str | None,
    option: str | None,
    env: str | None,
    ini_value: str | None,
    admitted: bool,
) -> None:
    head = "import pytest\n\n"
    if marker == "None":
        head += "@pytest.mark.llm_budget(None)"
    elif marker is not None:
        head += f"@pytest.mark.llm_budget({marker!r})"
    pt.makepyfile(head + ONE_CALL)
    if env is not None:
        monkeypatch.setenv("PYTEST_LLM_BUDGET", env)
    if ini_value is not None:
        ini(pt, prices_file, llm_budget=ini_value)
    args = [] if option is None else ["--llm-budget", option]
    result = pt.runpytest(*args)
    result.assert_outcomes(passed=1) if admitted else result.assert_outcomes(failed=1)
    assert len(llm.received) == int(admitted)


# -- malformed values fail at configuration time, naming value and source ---------------------


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
@pytest.mark.parametrize("source", ["option", "env", "ini", "marker", "session option"])
def test_malformed_budget_fails_the_run(
    pt: pytest.Pytester,
    llm: FakeLLM,
    prices_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    source: str,
) -> None:
    args: list[str] = []
    body = ONE_CALL
    if source == "option":
        args, where = ["--llm-budget", value], "--llm-budget option"
    elif source == "session option":
        args, where = ["--llm-session-budget", value], "--llm-session-budget option"
    elif source == "env":
        monkeypatch.setenv("PYTEST_LLM_BUDGET", value)
        where = "PYTEST_LLM_BUDGET environment variable"
    elif source == "ini":
        ini(pt, prices_file, llm_budget=value)
        where = "llm_budget ini key"
    else:
        body = f"import pytest\n\n@pytest.mark.llm_budget({value!r})" + ONE_CALL
        where = "@pytest.mark.llm_budget on test_malformed_budget_fails_the_run.py::test_one"
    pt.makepyfile(body)
    result = pt.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert llm.received == []
    result.stderr.fnmatch_lines([f"*pytest-omnillm: {where}: *(='{value}') must be an amount*"])


def test_bad_prices_file_is_a_usage_error(pt: pytest.Pytester, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models."m"]\ninput = "x"\noutput = "1"\n')
    pt.makepyfile(ONE_CALL)
    result = pt.runpytest("--llm-prices", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{bad}: models.m.input(='x')*"])


def test_bad_summary_value(pt: pytest.Pytester) -> None:
    pt.makepyfile(ONE_CALL)
    result = pt.runpytest("--llm-summary", "many")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-summary option: llm_summary(='many') must be an integer*"])


# -- refusal fails the test even when the application swallows the exception -------------------


def test_swallowed_refusal_still_fails_with_its_own_status(
    pt: pytest.Pytester, llm: FakeLLM
) -> None:
    pt.makepyfile(
        """
        import pytest
        from pytest_omnillm import LLMBudgetExceeded

        @pytest.mark.llm_budget("0.000001")
        def test_swallow(call):
            try:
                call()
            except LLMBudgetExceeded:
                pass  # an application that hides errors

        def test_fine():
            pass
        """
    )
    result = pt.runpytest("-v")
    result.assert_outcomes(failed=1, passed=1)
    assert llm.received == []
    result.stdout.fnmatch_lines(
        [
            "*::test_swallow LLM BUDGET*",
            "*LLM test budget exceeded in *::test_swallow: request to test-model*",
            "LLM BUDGET *::test_swallow*",
        ]
    )
    quiet = pt.runpytest()
    quiet.stdout.fnmatch_lines(["*test_swallowed_refusal_still_fails_with_its_own_status.py B.*"])


def test_session_budget_refuses_the_request_that_would_exceed_it(
    pt: pytest.Pytester, llm: FakeLLM
) -> None:
    # Session limit $0.0003: each call reserves E ~ 150 µ$ and settles at 20 µ$, so calls are
    # admitted while 20 k + E <= 300: at least 6 calls, but not all 20.
    pt.makepyfile(
        "import pytest\n\n@pytest.mark.parametrize('i', range(20))\n"
        "def test_call(call, i):\n    assert call() == 'hi'\n"
    )
    result = pt.runpytest("--llm-session-budget", "0.0003", "--tb=line")
    admitted = len(llm.received)
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == admitted and outcomes["failed"] == 20 - admitted
    assert 6 <= admitted < 20
    result.stdout.fnmatch_lines(
        [
            "*LLM session budget exceeded in *: request to test-model estimated at*"
            "the session limit is $0.000300 (--llm-session-budget option)*"
        ]
    )


# -- summary and JSON report -------------------------------------------------------------------


SPENDERS = """
import pytest

@pytest.mark.parametrize("n", [1, 3, 2])
def test_spend(call, n):
    for _ in range(n):
        call()

def test_nothing():
    pass
"""


def test_summary_shows_the_top_n_tests(pt: pytest.Pytester) -> None:
    pt.makepyfile(SPENDERS)
    result = pt.runpytest("--llm-summary", "2")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert "top 2 test(s) by spend:" in out
    assert out.index("test_spend[3]") < out.index("test_spend[2]")
    assert "test_spend[1]" not in out
    result.stdout.fnmatch_lines(["session: $0.000120 spent in 6 LLM request(s) from 4 test(s)*"])


def test_summary_zero_hides_it(pt: pytest.Pytester) -> None:
    pt.makepyfile(SPENDERS)
    result = pt.runpytest("--llm-summary", "0")
    assert "LLM budget" not in result.stdout.str()


def test_summary_ini_key(pt: pytest.Pytester, prices_file: Path) -> None:
    ini(pt, prices_file, llm_summary="1")
    pt.makepyfile(SPENDERS)
    assert "top 1 test(s) by spend:" in pt.runpytest().stdout.str()


def test_json_report_matches_what_the_server_billed(pt: pytest.Pytester, llm: FakeLLM) -> None:
    pt.makepyfile(SPENDERS)
    report = pt.path / "spend.json"
    pt.runpytest("--llm-report", str(report), "--llm-budget", "0.01").assert_outcomes(passed=4)
    data = json.loads(report.read_text())
    # Independent total: the server billed 10 input + 5 output tokens per call.
    billed = sum(b.input * 1 + b.output * 2 for b in llm.billed)
    assert billed == 120 and data["session"]["spent"] == billed
    assert data["session"]["requests"] == 6 and data["session"]["refused"] == 0
    assert data["session"]["by_model"]["test-model"]["tokens"]["output"] == 30
    tests = {t["nodeid"].split("::")[1]: t for t in data["tests"]}
    assert set(tests) == {"test_spend[1]", "test_spend[3]", "test_spend[2]", "test_nothing"}
    assert [t["spent"] for t in (tests["test_spend[1]"], tests["test_spend[3]"])] == [20, 60]
    assert tests["test_spend[3]"]["limit"] == 10_000
    assert tests["test_spend[3]"]["limit_source"] == "--llm-budget option"
    request = tests["test_spend[1]"]["requests"][0]
    assert request["model"] == "test-model" and request["status"] == "ok"
    assert request["actual"] == 20 and request["estimate"] > 20
    assert request["tokens"] == {
        "input": 10,
        "output": 5,
        "cache_read": 0,
        "cache_write": 0,
        "cache_write_1h": 0,
    }


# -- unknown models, fallback, default output bound, teardown check, fixture --------------------


def test_unknown_model_without_budget_is_reported_unpriced(pt: pytest.Pytester) -> None:
    pt.makepyfile("def test_x(call):\n    assert call(model='mystery-model') == 'hi'\n")
    result = pt.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "UNPRICED: 1 request(s) not counted in the spend above, to mystery-model: add prices "
            "with --llm-prices FILE or choose --llm-fallback-model MODEL"
        ]
    )


def test_unknown_model_with_budget_is_refused(pt: pytest.Pytester, llm: FakeLLM) -> None:
    pt.makepyfile(
        "def test_x(call):\n    try:\n        call(model='mystery-model')\n"
        "    except Exception:\n        pass\n"
    )
    result = pt.runpytest("--llm-budget", BIG)
    result.assert_outcomes(failed=1)
    assert llm.received == []
    result.stdout.fnmatch_lines(["*model(='mystery-model') is not in the 'current' price table*"])


def test_fallback_model_prices_unknown_models(pt: pytest.Pytester) -> None:
    pt.makepyfile("def test_x(call):\n    call(model='mystery-model')\n")
    report = pt.path / "r.json"
    result = pt.runpytest(
        "--llm-budget", BIG, "--llm-fallback-model", "test-model", "--llm-report", str(report)
    )
    result.assert_outcomes(passed=1)
    assert json.loads(report.read_text())["session"]["spent"] == 20


def test_overshoot_fails_at_teardown_naming_the_culprit(pt: pytest.Pytester, llm: FakeLLM) -> None:
    # No max_tokens and a default output bound of 10 tokens: the estimate assumes 10 output
    # tokens, the server bills 1000. With a limit of $0.001 the settle overshoots.
    llm.default = Reply(output=1000)
    pt.makepyfile(
        "import pytest\n\n@pytest.mark.llm_budget('0.001')\n"
        "def test_x(call):\n    call(max_tokens=None)\n"
    )
    result = pt.runpytest("--llm-default-max-output", "10")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # Actual: 10 + 1000 x 2 = 2010 µ$ > $0.001; estimate = prompt bound + 10 x 2.
    assert "LLM spend went $0.001010 over the test limit $0.001000" in out
    assert "request #1 to test-model (openai/chat): actual $0.002010 exceeded its estimate" in out
    assert "the request had no output bound" in out


def test_llm_budget_fixture_is_the_test_tracker(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        """
        import pytest
        from omnillm_sim import BudgetExceeded

        @pytest.mark.llm_budget("0.0001")
        def test_direct(llm_budget, call):
            assert llm_budget.limit == 100
            with llm_budget.reserve(30) as r:
                r.settle(25)
            with pytest.raises(BudgetExceeded):
                llm_budget.reserve(76)
            assert llm_budget.used == 25

        def test_leak(llm_budget):
            llm_budget.reserve(5)   # never settled: invariant I4 fails at teardown
        """
    )
    result = pt.runpytest()
    result.assert_outcomes(passed=2, errors=1)  # test_leak passes, its teardown fails
    result.stdout.fnmatch_lines(
        ["*invariant I4 violated: 1 reservation(s) of $0.000005 still open*"]
    )


def test_markers_and_options_are_registered(pt: pytest.Pytester) -> None:
    pt.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.llm_budget(usd): *"])
    help_text = pt.runpytest("--help").stdout.str()
    for flag in (
        "--llm-budget",
        "--llm-session-budget",
        "--llm-prices",
        "--llm-report",
        "--llm-summary",
        "--llm-default-max-output",
        "--llm-fallback-model",
    ):
        assert flag in help_text
    pt.makepyfile("import pytest\n\n@pytest.mark.llm_budget('1')\ndef test_x():\n    pass\n")
    pt.runpytest("--strict-markers").assert_outcomes(passed=1)


# -- summary wording (issue 10 item 12) --------------------------------------------------------


def test_identical_refusals_are_one_line(pt: pytest.Pytester, llm: FakeLLM) -> None:
    pt.makepyfile(
        "import pytest\n\n@pytest.mark.parametrize('i', range(31))\n"
        "def test_call(call, i):\n    call()\n"
    )
    result = pt.runpytest("--llm-budget", TINY, "--tb=no", "-q")
    result.assert_outcomes(failed=31)
    assert llm.received == []
    out = result.stdout.str()
    result.stdout.re_match_lines(
        [r"  31 x test-model estimated \$0\.\d{6} \(test budget\) in 31 tests$"]
    )
    assert out.count("(test budget)") == 1


def test_every_list_is_capped_by_llm_summary(pt: pytest.Pytester, llm: FakeLLM) -> None:
    # Five models with no price: five distinct lines in the unpriced list and five in the
    # per-model list once a fallback prices them.
    pt.makepyfile(
        "import pytest\n\n@pytest.mark.parametrize('m', ['a1', 'a2', 'a3', 'a4', 'a5'])\n"
        "def test_call(call, m):\n    call(model=m)\n"
    )
    result = pt.runpytest("--llm-summary", "2")
    result.stdout.fnmatch_lines(["UNPRICED: 5 request(s) *, to a1, a2 and 3 more: *"])
    llm.reset()
    result = pt.runpytest("--llm-summary", "2", "--llm-fallback-model", "test-model")
    result.stdout.fnmatch_lines(["per model:", "*a1*", "*a2*", "  ... and 3 more model(s)*"])


def test_requests_without_usage_say_charged_at_estimate(pt: pytest.Pytester, llm: FakeLLM) -> None:
    llm.default = Reply(omit_usage=True)
    pt.makepyfile("def test_x(call):\n    call()\n    call()\n")
    result = pt.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*test-model  2 request(s) charged at estimate (tokens unknown)",
            "charged at their estimate (no usable usage in the response):",
            "  2 x test-model no usage: response has no usage*in *::test_x",
        ]
    )
    assert "None" not in result.stdout.str()


def test_a_request_without_model_is_never_shown_as_none(pt: pytest.Pytester) -> None:
    pt.makepyfile(
        "import httpx\nfrom conftest import URL\n\ndef test_x():\n"
        "    httpx.post(URL + '/v1/chat/completions', json={'messages': []})\n"
    )
    result = pt.runpytest()
    result.stdout.fnmatch_lines(["UNPRICED: 1 request(s) *, to (no model): *"])
    assert "None" not in result.stdout.str()


def test_long_details_are_cut_at_a_word_boundary() -> None:
    from pytest_omnillm.report import shorten

    text = "alpha beta gamma delta epsilon " * 10
    short = shorten(text, 40)
    assert len(short) <= 40 and short.endswith("...")
    assert text.startswith(short.removesuffix("..."))
    assert short.removesuffix("...").split()[-1] in text.split()  # a whole word


def test_json_report_names_each_limit_source(
    pt: pytest.Pytester, prices_file: Path, tmp_path: Path
) -> None:
    ini(pt, prices_file, llm_session_budget="5")
    pt.makepyfile(ONE_CALL)
    report = tmp_path / "r.json"
    pt.runpytest("--llm-budget", "1", "--llm-report", str(report)).assert_outcomes(passed=1)
    limits = json.loads(report.read_text())["session"]["limits"]
    assert limits == {
        "test": {"limit": 1_000_000, "source": "--llm-budget option"},
        "session": {"limit": 5_000_000, "source": "llm_session_budget ini key"},
    }


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
def test_unwritable_report_path_is_a_usage_error_before_any_test(
    pt: pytest.Pytester, llm: FakeLLM, tmp_path: Path, where: str
) -> None:
    path = tmp_path / "no" / "such" / "r.json" if where == "missing-dir" else tmp_path
    pt.makepyfile(ONE_CALL)
    result = pt.runpytest("--llm-report", str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert llm.received == []
    result.stderr.fnmatch_lines([f"*--llm-report option: llm_report(='{path}')*"])


def test_budget_replays_option_and_ini_key(pt: pytest.Pytester, prices_file: Path) -> None:
    pt.makepyfile(
        """
        import httpx
        from conftest import URL

        def test_mocked():
            def answer(request):
                return httpx.Response(200, json={"usage": {"prompt_tokens": 10,
                                                           "completion_tokens": 5}})
            with httpx.Client(transport=httpx.MockTransport(answer)) as c:
                c.post(URL + "/v1/chat/completions",
                       json={"model": "test-model", "messages": [], "max_tokens": 20})
        """
    )
    free = pt.runpytest()
    free.stdout.fnmatch_lines(
        [
            "session: $0.000000 spent in 1 LLM request(s)*",
            "replayed from mocks/cassettes: $0.000020 if live, 1 request(s), not charged*",
        ]
    )
    for args in (["--llm-budget-replays"], []):
        if not args:
            ini(pt, prices_file, llm_budget_replays="true")
        charged = pt.runpytest(*args)
        charged.stdout.fnmatch_lines(
            [
                "session: $0.000020 spent in 1 LLM request(s)*",
                "replayed from mocks/cassettes: $0.000020 if live, 1 request(s), charged "
                "$0.000020 (--llm-budget-replays)",
            ]
        )


def test_pytest_httpx_mocks_are_replayed(pt: pytest.Pytester, llm: FakeLLM) -> None:
    pt.makepyfile(
        """
        import httpx

        def test_mocked(httpx_mock):
            httpx_mock.add_response(
                json={"usage": {"prompt_tokens": 10, "completion_tokens": 5}}, is_reusable=True
            )
            for _ in range(3):
                httpx.post("http://llm.invalid/v1/chat/completions",
                           json={"model": "test-model", "messages": [], "max_tokens": 20})
        """
    )
    result = pt.runpytest("-p", "pytest_httpx")
    result.assert_outcomes(passed=1)
    assert llm.received == []
    result.stdout.fnmatch_lines(
        [
            "session: $0.000000 spent in 3 LLM request(s)*",
            "replayed from mocks/cassettes: $0.000060 if live, 3 request(s), not charged*",
        ]
    )


def test_released_requests_are_not_called_charged_at_estimate(
    pt: pytest.Pytester, llm: FakeLLM
) -> None:
    llm.script = [Reply(status=500)]
    pt.makepyfile(
        "import openai, pytest\n\ndef test_x(call):\n"
        "    with pytest.raises(openai.InternalServerError):\n        call()\n    call()\n"
    )
    result = pt.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*$0.000020  test-model  2 request(s), 10 input / 5 output tokens"]
    )
    assert "charged at estimate" not in result.stdout.str()
