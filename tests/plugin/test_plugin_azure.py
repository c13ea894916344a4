"""Azure OpenAI through the real openai SDK's AzureOpenAI client, --llm-model-map, and budgets
set only by a marker.

Prices as in tests/plugin/conftest.py: test-model costs 1 µ$ per input token and 2 µ$ per
output token, free-input 0 and 1 µ$. The fake server bills 10 input and 5 output tokens by
default: 20 µ$ on test-model. AzureOpenAI sends ``model=`` (a deployment name) in the URL
``/openai/deployments/{deployment}/chat/completions?api-version=...`` and in the body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from fakellm import FakeLLM, Reply
from harness import Harness

from pytest_omnillm import LLMBudgetExceeded, LLMUnknownModel

MSG = [{"role": "user", "content": "hi"}]
API_VERSION = "2024-10-21"


def azure(llm: FakeLLM) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=llm.url, api_version=API_VERSION, api_key="k", max_retries=0
    )


def chat(llm: FakeLLM, deployment: str, *, stream: bool = False) -> str:
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    r = azure(llm).chat.completions.create(
        model=deployment, messages=MSG, max_tokens=20, **(extra if stream else {})
    )
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in r if c.choices)
    return str(r.choices[0].message.content)


# -- mapped, unmapped, fallback -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_mapped_deployment_is_priced_as_its_model(
    harness: Harness, llm: FakeLLM, stream: bool
) -> None:
    harness.session.model_map = {"prod-chat": "test-model"}
    llm.default = Reply(response_model="test-model")  # Azure answers with the model's name
    harness.begin(limit_usd="1")
    assert chat(llm, "prod-chat", stream=stream) == "hi"
    (received,) = llm.received
    assert received.path == "/openai/deployments/prod-chat/chat/completions"
    (record,) = harness.records
    assert (record.model, record.deployment, record.model_source) == (
        "test-model", "prod-chat", "model map"
    )  # fmt: skip
    assert (record.status, record.actual) == ("ok", 20)
    assert (record.response_model, record.warning) == ("test-model", "")
    assert harness.end() == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("deployment", ["prod-chat", "test-model", "gpt-4o"])
def test_an_unmapped_deployment_is_refused_under_a_budget_before_sending(
    harness: Harness, llm: FakeLLM, stream: bool, deployment: str
) -> None:
    # Even a deployment named like a priced model is not priced as that model.
    harness.begin(limit_usd="1")
    with pytest.raises(LLMBudgetExceeded) as info:
        chat(llm, deployment, stream=stream)
    assert llm.received == []
    message = str(info.value)
    assert f"deployment {deployment!r}" in message
    assert f"--llm-model-map {deployment}=MODEL" in message
    (record,) = harness.records
    assert (record.status, record.model, record.deployment) == ("refused", None, deployment)


def test_an_unmapped_deployment_without_a_budget_is_sent_and_unpriced(
    harness: Harness, llm: FakeLLM
) -> None:
    harness.session.enforce = False  # no budget anywhere
    assert chat(llm, "prod-chat") == "hi"
    assert len(llm.received) == 1
    (record,) = harness.records
    assert (record.status, record.charged, record.deployment) == ("unpriced", 0, "prod-chat")
    assert "--llm-model-map" in record.detail
    assert harness.end() == []


def test_an_unmapped_deployment_is_priced_by_the_fallback_model(
    harness: Harness, llm: FakeLLM
) -> None:
    harness.session.prices = harness.prices.with_fallback("free-input")
    harness.begin(limit_usd="1")
    assert chat(llm, "gpt-4o") == "hi"  # priced as free-input, not as gpt-4o
    (record,) = harness.records
    assert (record.model, record.model_source, record.actual) == ("free-input", "fallback", 5)


def test_the_map_wins_over_the_fallback(harness: Harness, llm: FakeLLM) -> None:
    harness.session.prices = harness.prices.with_fallback("free-input")
    harness.session.model_map = {"prod-chat": "test-model"}
    chat(llm, "prod-chat")
    (record,) = harness.records
    assert (record.model, record.actual) == ("test-model", 20)


# -- the response's model --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answered", "warned"),
    [
        ("test-model", False),
        ("test-model-2024-08-06", False),  # a dated snapshot of the mapped model
        ("free-input", True),
        ("gpt-4o-mini", True),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_the_response_model_is_recorded_and_a_disagreement_warned(
    harness: Harness, llm: FakeLLM, answered: str, warned: bool, stream: bool
) -> None:
    harness.session.model_map = {"prod-chat": "test-model"}
    llm.default = Reply(response_model=answered)
    chat(llm, "prod-chat", stream=stream)
    (record,) = harness.records
    assert (record.model, record.response_model) == ("test-model", answered)
    assert bool(record.warning) is warned
    if warned:
        assert "'prod-chat'" in record.warning and answered in record.warning
    assert harness.end() == []  # a warning, not a failure


# -- other Azure routes ----------------------------------------------------------------------


def test_embeddings_and_legacy_completions_deployments(harness: Harness, llm: FakeLLM) -> None:
    harness.session.model_map = {"emb": "test-embed", "inst": "test-model"}
    client = azure(llm)
    client.embeddings.create(model="emb", input=["a", "b"])
    client.completions.create(model="inst", prompt="hi", max_tokens=20)
    paths = [r.path for r in llm.received]
    assert paths == ["/openai/deployments/emb/embeddings", "/openai/deployments/inst/completions"]
    emb, inst = harness.records
    assert (emb.model, emb.actual) == ("test-embed", 5)  # 10 input tokens x 0.5 µ$
    assert (inst.model, inst.actual) == ("test-model", 20)


def test_responses_without_a_deployment_in_the_path(harness: Harness, llm: FakeLLM) -> None:
    # AzureOpenAI sends responses to /openai/responses?api-version=...; "model" is still the
    # deployment there.
    harness.begin(limit_usd="1")
    with pytest.raises(LLMBudgetExceeded, match="deployment 'test-model'"):
        azure(llm).responses.create(model="test-model", input="hi", max_output_tokens=20)
    assert llm.received == []
    harness.session.model_map = {"test-model": "free-input"}
    azure(llm).responses.create(model="test-model", input="hi", max_output_tokens=20)
    (received,) = llm.received
    assert received.path == "/openai/responses"
    record = harness.records[-1]
    assert (record.model, record.deployment, record.actual) == ("free-input", "test-model", 5)


@pytest.mark.parametrize("stream", [False, True])
def test_the_azure_v1_api_is_plain_openai(harness: Harness, llm: FakeLLM, stream: bool) -> None:
    harness.begin(limit_usd="1")
    client = openai.OpenAI(base_url=llm.url + "/openai/v1", api_key="k", max_retries=0)
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    r = client.chat.completions.create(
        model="test-model", messages=MSG, max_tokens=20, **(extra if stream else {})
    )
    if stream:
        assert [c for c in r]
    assert llm.received[0].path == "/openai/v1/chat/completions"
    (record,) = harness.records
    assert (record.model, record.model_source, record.deployment) == ("test-model", "body", None)
    assert (record.status, record.actual) == ("ok", 20)


# -- whole runs: the option, the ini key, bad values, marker-only budgets ----------------------

CONFTEST = """
import openai, pytest

URL = {url!r}

@pytest.fixture
def azure():
    client = openai.AzureOpenAI(
        azure_endpoint=URL, api_version="2024-10-21", api_key="k", max_retries=0
    )

    def call(deployment):
        r = client.chat.completions.create(
            model=deployment, messages=[{{"role": "user", "content": "hi"}}], max_tokens=20
        )
        return r.choices[0].message.content

    return call

@pytest.fixture
def plain():
    client = openai.OpenAI(base_url=URL + "/v1", api_key="k", max_retries=0)

    def call(model):
        r = client.chat.completions.create(
            model=model, messages=[{{"role": "user", "content": "hi"}}], max_tokens=20
        )
        return r.choices[0].message.content

    return call
"""


@pytest.fixture
def pt(pytester: pytest.Pytester, llm: FakeLLM, prices_file: Path) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.format(url=llm.url))
    return pytester


def _records(report: Path) -> list[dict[str, Any]]:
    data = json.loads(report.read_text())
    return [r for t in data["tests"] for r in t["requests"]]


def test_model_map_option_prices_deployments(
    pt: pytest.Pytester, llm: FakeLLM, prices_file: Path
) -> None:
    pt.makepyfile("def test_a(azure):\n    assert azure('prod') == 'hi'\n")
    llm.default = Reply(response_model="gpt-4o-mini-2024-07-18")
    report = pt.path / "spend.json"
    result = pt.runpytest(
        "--llm-prices", str(prices_file), "--llm-budget", "1", "--llm-report", str(report),
        "--llm-model-map", "prod=test-model", "--llm-model-map", "other=free-input",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    (record,) = _records(report)
    assert (record["model"], record["deployment"], record["actual"]) == ("test-model", "prod", 20)
    assert record["response_model"] == "gpt-4o-mini-2024-07-18"
    result.stdout.fnmatch_lines(
        ["model warnings*", "*deployment 'prod' was priced as test-model*gpt-4o-mini-2024-07-18*"]
    )


def test_model_map_ini_lines(pt: pytest.Pytester, llm: FakeLLM, prices_file: Path) -> None:
    pt.makeini(
        f"[pytest]\nllm_prices = {prices_file}\nllm_budget = 1\n"
        "llm_model_map =\n    prod = test-model\n    other=free-input\n"
    )
    pt.makepyfile(
        "def test_a(azure):\n    assert azure('prod') == 'hi'\n"
        "def test_b(azure):\n    assert azure('other') == 'hi'\n"
    )
    pt.runpytest().assert_outcomes(passed=2)
    assert [r.path for r in llm.received] == [
        "/openai/deployments/prod/chat/completions",
        "/openai/deployments/other/chat/completions",
    ]


def test_unmapped_deployment_fails_the_test_naming_the_option(
    pt: pytest.Pytester, llm: FakeLLM, prices_file: Path
) -> None:
    pt.makepyfile("def test_a(azure):\n    azure('prod')\n")
    result = pt.runpytest("--llm-prices", str(prices_file), "--llm-session-budget", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*deployment 'prod' is not mapped*--llm-model-map prod=MODEL*"])
    assert llm.received == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("prod", "must be DEPLOYMENT=MODEL"),
        ("=test-model", "must be DEPLOYMENT=MODEL"),
        ("prod=", "must be DEPLOYMENT=MODEL"),
        ("prod=no-such-model", "has no price"),
    ],
)
def test_a_bad_model_map_entry_fails_the_run(
    pt: pytest.Pytester, prices_file: Path, value: str, why: str
) -> None:
    pt.makepyfile("def test_a():\n    pass\n")
    result = pt.runpytest("--llm-prices", str(prices_file), "--llm-model-map", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*llm_model_map*{why}*"])


def test_a_model_map_to_an_unpriced_model_fails_at_start_without_a_price_file(
    pt: pytest.Pytester,
) -> None:
    # The budget session is built lazily (issue 15); a model map is checked at start all the same.
    pt.makepyfile("def test_a():\n    pass\n")
    result = pt.runpytest("--llm-model-map", "prod=no-such-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llm_model_map*has no price*"])


def test_a_deployment_mapped_twice_fails_the_run(pt: pytest.Pytester, prices_file: Path) -> None:
    pt.makepyfile("def test_a():\n    pass\n")
    result = pt.runpytest(
        "--llm-prices", str(prices_file),
        "--llm-model-map", "prod=test-model", "--llm-model-map", "prod=free-input",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-model-map*maps 'prod' again (already to 'test-model')*"])


def test_help_lists_the_model_map_option(pt: pytest.Pytester) -> None:
    result = pt.runpytest("--help")
    result.stdout.fnmatch_lines(["*--llm-model-map=DEPLOYMENT=MODEL*", "*llm_model_map*"])


def test_a_marker_only_budget_refuses_unknown_models(
    pt: pytest.Pytester, llm: FakeLLM, prices_file: Path
) -> None:
    # No option, environment, ini or session budget: only the marker (issue 16 item 8).
    pt.makepyfile(
        """
        import pytest

        @pytest.mark.llm_budget("1")
        def test_unknown(plain):
            plain("no-such-model")

        @pytest.mark.llm_budget("1")
        def test_deployment(azure):
            azure("prod")

        def test_unbudgeted(plain):
            assert plain("no-such-model") == "hi"
        """
    )
    result = pt.runpytest("--llm-prices", str(prices_file))
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        ["*no-such-model*", "*deployment 'prod' is not mapped*", "*UNPRICED: 1 request(s)*"]
    )
    assert len(llm.received) == 1  # only the test without a budget sent its request


def test_a_marker_only_budget_refuses_in_process(harness: Harness, llm: FakeLLM) -> None:
    harness.session.enforce = False  # the run has no budget ...
    harness.begin(limit_usd="1")  # ... but this test has one (as from its marker)
    client = openai.OpenAI(base_url=llm.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(LLMUnknownModel):
        client.chat.completions.create(model="no-such-model", messages=MSG, max_tokens=20)
    assert llm.received == []
