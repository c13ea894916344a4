"""Fail closed on usage the plugin cannot trust, and streams recognised by the request.

Real OpenAI and Anthropic SDK clients talk to the fake server, which sends usage objects with
null or missing counts. A usage is trusted only when every count its cost needs is an int >= 0;
otherwise the reservation is kept: the request is charged at its estimate, and its record says
``unparsed`` (bad counts) or ``no-usage`` (an empty or absent usage object).

Prices (conftest): test-model 1 µ$ per input and 2 µ$ per output token; the fake server's
default reply bills 10 input and 5 output tokens, i.e. 20 µ$.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from fakellm import DROP, FakeLLM, Reply
from harness import Harness

from pytest_omnillm import LLMBudgetExceeded

MSG = [{"role": "user", "content": "hi"}]
INCLUDE_USAGE: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


def estimate_of(raw: bytes, messages: int, max_output: int) -> int:
    """The documented upper-bound estimate for test-model (1 µ$/input, 2 µ$/output token)."""
    return (len(raw) + 8 * messages + 16) * 1 + max_output * 2


def oa(llm: FakeLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.url + "/v1", api_key="k", max_retries=0)


def an(llm: FakeLLM) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=llm.url, api_key="k", max_retries=0)


def chat(llm: FakeLLM, stream: bool) -> None:
    extra = INCLUDE_USAGE if stream else {}
    r = oa(llm).chat.completions.create(model="test-model", messages=MSG, max_tokens=20, **extra)
    if stream:
        assert [c for c in r]


def completions(llm: FakeLLM, stream: bool) -> None:
    extra = INCLUDE_USAGE if stream else {}
    r = oa(llm).completions.create(model="test-model", prompt="hi", max_tokens=20, **extra)
    if stream:
        assert [c for c in r]


def responses(llm: FakeLLM, stream: bool) -> None:
    r = oa(llm).responses.create(
        model="test-model", input="hi", max_output_tokens=20, stream=stream
    )
    if stream:
        assert [e for e in r]


def embeddings(llm: FakeLLM, stream: bool) -> None:
    assert not stream
    oa(llm).embeddings.create(model="test-model", input="hello")


def messages(llm: FakeLLM, stream: bool) -> None:
    r = an(llm).messages.create(model="test-model", max_tokens=20, messages=MSG, stream=stream)
    if stream:
        assert [e.type for e in r][-1] == "message_stop"


NULLS = {"prompt_tokens": None, "completion_tokens": None}
EMPTY = {k: DROP for k in ("prompt_tokens", "completion_tokens", "total_tokens",
                           "prompt_tokens_details")}
RESPONSES_EMPTY = {k: DROP for k in ("input_tokens", "output_tokens", "total_tokens",
                                     "input_tokens_details", "output_tokens_details")}

CASES: list[tuple[str, Any, bool, dict[str, Any], dict[str, Any], str]] = [
    # id, call, stream, patch of every usage, patch of the last message_delta, status
    ("chat-json-null", chat, False, NULLS, {}, "unparsed"),
    ("chat-json-missing-completion", chat, False, {"completion_tokens": DROP}, {}, "unparsed"),
    ("chat-json-float", chat, False, {"prompt_tokens": 10.0}, {}, "unparsed"),
    ("chat-json-bool", chat, False, {"completion_tokens": True}, {}, "unparsed"),
    ("chat-json-empty", chat, False, EMPTY, {}, "no-usage"),
    ("chat-sse-null", chat, True, NULLS, {}, "unparsed"),
    ("chat-sse-missing-prompt", chat, True, {"prompt_tokens": DROP}, {}, "unparsed"),
    ("chat-sse-empty", chat, True, EMPTY, {}, "no-usage"),
    ("completions-json-null", completions, False, {"completion_tokens": None}, {}, "unparsed"),
    ("completions-sse-null", completions, True, {"prompt_tokens": None}, {}, "unparsed"),
    ("responses-json-null", responses, False, {"input_tokens": None}, {}, "unparsed"),
    ("responses-json-missing", responses, False, {"output_tokens": DROP}, {}, "unparsed"),
    ("responses-json-empty", responses, False, RESPONSES_EMPTY, {}, "no-usage"),
    ("responses-sse-null", responses, True, {"output_tokens": None}, {}, "unparsed"),
    ("embeddings-json-null", embeddings, False, {"prompt_tokens": None}, {}, "unparsed"),
    ("anthropic-json-null-input", messages, False, {"input_tokens": None}, {}, "unparsed"),
    ("anthropic-json-null-output", messages, False, {"output_tokens": None}, {}, "unparsed"),
    ("anthropic-json-missing", messages, False, {"output_tokens": DROP}, {}, "unparsed"),
    ("anthropic-sse-null-input", messages, True, {"input_tokens": None}, {}, "unparsed"),
    ("anthropic-sse-last-delta-null", messages, True, {}, {"output_tokens": None}, "unparsed"),
    ("anthropic-sse-last-delta-missing", messages, True, {}, {"output_tokens": DROP}, "unparsed"),
]


@pytest.mark.parametrize(
    ("call", "stream", "patch", "last_delta", "status"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_untrusted_usage_is_charged_at_the_estimate(
    harness: Harness,
    llm: FakeLLM,
    call: Any,
    stream: bool,
    patch: dict[str, Any],
    last_delta: dict[str, Any],
    status: str,
) -> None:
    llm.default = Reply(patch_usage=patch, patch_last_delta=last_delta)
    call(llm, stream)  # the application's call is unaffected
    (record,) = harness.records
    assert record.status == status, record.detail
    assert record.estimate is not None and record.estimate > 20
    assert record.charged == record.estimate and record.actual is None
    assert harness.end() == []
    stats = harness.test.tracker.stats()
    assert (stats.used, stats.spent, stats.open_count) == (record.estimate,) * 2 + (0,)


def test_trusted_usage_with_optional_breakdowns_absent_or_null(
    harness: Harness, llm: FakeLLM
) -> None:
    # Cache breakdowns are optional in both APIs: absent or null means none.
    llm.script = [
        Reply(patch_usage={"prompt_tokens_details": DROP}),
        Reply(patch_usage={"prompt_tokens_details": {"cached_tokens": None}}),
        Reply(patch_usage={"cache_read_input_tokens": None, "cache_creation_input_tokens": DROP}),
    ]
    chat(llm, stream=False)
    chat(llm, stream=True)
    messages(llm, stream=True)
    assert [(r.status, r.actual) for r in harness.records] == [("ok", 20)] * 3


def test_null_counts_cannot_buy_more_calls_than_the_budget(
    harness: Harness, llm: FakeLLM
) -> None:
    """A $0.001 budget: every call is charged its estimate E, so only 1000 // E calls fit."""
    llm.default = Reply(patch_usage=NULLS)
    harness.begin(limit_usd="0.001")
    admitted = 0
    with pytest.raises(LLMBudgetExceeded):
        for _ in range(100):
            chat(llm, stream=False)
            admitted += 1
    estimate = estimate_of(llm.received[0].raw, 1, 20)
    assert estimate * 2 < 1000  # more than one call fits: the refusal comes from the charges
    assert admitted == len(llm.received) == 1000 // estimate
    assert harness.test.tracker.used == admitted * estimate


def test_anthropic_stream_with_null_final_output_cannot_buy_more_calls(
    harness: Harness, llm: FakeLLM
) -> None:
    llm.default = Reply(patch_last_delta={"output_tokens": None})
    harness.begin(limit_usd="0.001")
    with pytest.raises(LLMBudgetExceeded):
        for _ in range(100):
            messages(llm, stream=True)
    charged = [r.charged for r in harness.records if r.status != "refused"]
    assert len(charged) == len(llm.received) < 10
    assert all(c == r.estimate for c, r in zip(charged, harness.records, strict=False))


# -- streams recognised by the request's "stream": true (item 10) ------------------------------


@pytest.mark.parametrize(
    "ctype", ["application/json", "text/plain", ""], ids=["json", "text", "none"]
)
@pytest.mark.parametrize(
    "call", [chat, responses, messages], ids=["chat", "responses", "anthropic"]
)
def test_stream_is_read_by_the_request_not_only_the_content_type(
    harness: Harness, llm: FakeLLM, call: Any, ctype: str
) -> None:
    llm.default = Reply(stream_content_type=ctype)
    call(llm, stream=True)
    (record,) = harness.records
    assert record.stream is True
    assert (record.status, record.actual) == ("ok", 20), record.detail


# -- compressed replies ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("call", [chat, messages], ids=["openai", "anthropic"])
def test_compressed_replies_are_decoded(
    harness: Harness, llm: FakeLLM, call: Any, encoding: str
) -> None:
    llm.default = Reply(encoding=encoding)
    call(llm, stream=False)
    (record,) = harness.records
    assert (record.status, record.actual) == ("ok", 20), record.detail


# -- the user's view: a pytest run ------------------------------------------------------------

INNER = """
import openai, pytest

@pytest.mark.llm_budget("0.001")
def test_loop():
    client = openai.OpenAI(base_url={url!r} + "/v1", api_key="k", max_retries=0)
    for _ in range(100):
        try:
            client.chat.completions.create(
                model="test-model", messages=[{{"role": "user", "content": "hi"}}], max_tokens=20
            )
        except Exception:
            pass  # an application that swallows errors
"""


def test_a_run_with_null_counts_fails_the_test_after_a_few_calls(
    pytester: pytest.Pytester, llm: FakeLLM, prices_file: Any
) -> None:
    llm.default = Reply(patch_usage=NULLS)
    pytester.makeini(f"[pytest]\nllm_prices = {prices_file}\n")
    pytester.makepyfile(INNER.format(url=llm.url))
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    estimate = estimate_of(llm.received[0].raw, 1, 20)
    assert len(llm.received) == 1000 // estimate < 10  # it admitted 100 before the fix
    result.stdout.fnmatch_lines(["*LLM test budget exceeded in test_*::test_loop*"])
