"""Real OpenAI and Anthropic SDK clients, and raw httpx/httpx2 clients, against a fake server.

Prices (tests/plugin/conftest.py): test-model costs 1 µ$ per input token, 2 µ$ per output
token and 0.1 µ$ per cached input token; test-embed 0.5 µ$ per input token. Costs round up
once per request. The fake server's default reply bills 10 input and 5 output tokens, i.e.
10 + 10 = 20 µ$. An estimate is, per the documented rule, (body bytes + 8 x messages + 16)
input tokens plus the output bound, priced at the highest rates.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from fakellm import FakeLLM, Reply
from harness import Harness

from pytest_omnillm import LLMBudgetExceeded, LLMUnknownModel

MSG = [{"role": "user", "content": "hi"}]


def estimate_of(raw: bytes, messages: int, max_output: int, *, out_rate: int = 2) -> int:
    """The documented upper-bound estimate for test-model (1 µ$/input, 2 µ$/output token)."""
    return (len(raw) + 8 * messages + 16) * 1 + max_output * out_rate


def oa(llm: FakeLLM, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=llm.url + "/v1", api_key="k", **kw)


def aoa(llm: FakeLLM) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=llm.url + "/v1", api_key="k", max_retries=0)


def an(llm: FakeLLM, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=llm.url, api_key="k", **kw)


def aan(llm: FakeLLM) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=llm.url, api_key="k", max_retries=0)


# -- every endpoint, sync and async, streamed and not ------------------------------------------


def chat(llm: FakeLLM, stream: bool) -> None:
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    r = oa(llm).chat.completions.create(
        model="test-model", messages=MSG, max_tokens=20, **(extra if stream else {})
    )
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in r if c.choices) == "hi"
    else:
        assert r.choices[0].message.content == "hi"


async def achat(llm: FakeLLM, stream: bool) -> None:
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    r = await aoa(llm).chat.completions.create(
        model="test-model", messages=MSG, max_tokens=20, **(extra if stream else {})
    )
    if stream:
        assert [c async for c in r]
    else:
        assert r.choices[0].message.content == "hi"


def completions(llm: FakeLLM, stream: bool) -> None:
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    r = oa(llm).completions.create(
        model="test-model", prompt="hi", max_tokens=20, **(extra if stream else {})
    )
    if stream:
        assert [c for c in r]
    else:
        assert r.choices[0].text == "hi"


def responses(llm: FakeLLM, stream: bool) -> None:
    r = oa(llm).responses.create(
        model="test-model", input="hi", max_output_tokens=20, stream=stream
    )
    if stream:
        assert [e.type for e in r][-1] == "response.completed"
    else:
        assert r.output_text == "hi"


async def aresponses(llm: FakeLLM, stream: bool) -> None:
    r = await aoa(llm).responses.create(
        model="test-model", input="hi", max_output_tokens=20, stream=stream
    )
    if stream:
        assert [e async for e in r]
    else:
        assert r.output_text == "hi"


def messages(llm: FakeLLM, stream: bool) -> None:
    client = an(llm)
    if stream:
        with client.messages.stream(model="test-model", max_tokens=20, messages=MSG) as s:
            assert s.get_final_message().usage.output_tokens > 0
    else:
        m = client.messages.create(model="test-model", max_tokens=20, messages=MSG)
        assert m.content[0].text == "hi"


async def amessages(llm: FakeLLM, stream: bool) -> None:
    client = aan(llm)
    if stream:
        async with client.messages.stream(model="test-model", max_tokens=20, messages=MSG) as s:
            assert (await s.get_final_message()).usage.output_tokens == 5
    else:
        m = await client.messages.create(model="test-model", max_tokens=20, messages=MSG)
        assert m.content[0].text == "hi"


CALLS: dict[str, tuple[Callable[..., Any], str, int]] = {
    # name: (call, endpoint, messages counted by the estimate)
    "openai-chat": (chat, "openai/chat", 1),
    "openai-chat-async": (achat, "openai/chat", 1),
    "openai-completions": (completions, "openai/completions", 1),
    "openai-responses": (responses, "openai/responses", 1),
    "openai-responses-async": (aresponses, "openai/responses", 1),
    "anthropic-messages": (messages, "anthropic/messages", 1),
    "anthropic-messages-async": (amessages, "anthropic/messages", 1),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", list(CALLS))
def test_each_endpoint_settles_to_the_billed_cost(
    harness: Harness, llm: FakeLLM, name: str, stream: bool
) -> None:
    call, endpoint, n_messages = CALLS[name]
    result = call(llm, stream)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    assert len(llm.received) == 1 and len(llm.billed) == 1
    (record,) = harness.records
    assert (record.endpoint, record.stream, record.status) == (endpoint, stream, "ok")
    assert record.tokens == {
        "input": 10,
        "output": 5,
        "cache_read": 0,
        "cache_write": 0,
        "cache_write_1h": 0,
    }
    assert record.actual == 20 and record.charged == 20
    assert record.estimate == estimate_of(llm.received[0].raw, n_messages, 20)
    assert record.bounded is True
    assert harness.end() == []
    stats = harness.test.tracker.stats()
    assert (stats.spent, stats.open_count, stats.used) == (20, 0, 20)


def test_embeddings_have_no_output_bound_and_cost_input_only(
    harness: Harness, llm: FakeLLM
) -> None:
    r = oa(llm).embeddings.create(model="test-embed", input="hello")
    assert len(r.data) == 1
    (record,) = harness.records
    raw = llm.received[0].raw
    # test-embed: 0.5 µ$ per input token; no output tokens; ceil once.
    assert record.estimate == -(-(len(raw) + 8 + 16) * 1 // 2)
    assert record.actual == 5 and record.status == "ok" and record.bounded


# -- usage details ----------------------------------------------------------------------------


def test_openai_cached_tokens_are_a_subset_of_prompt_tokens(harness: Harness, llm: FakeLLM) -> None:
    llm.default = Reply(input=10, cached=4, output=5)  # prompt_tokens=14, cached_tokens=4
    chat(llm, stream=False)
    (record,) = harness.records
    assert record.tokens["input"] == 10 and record.tokens["cache_read"] == 4
    assert record.actual == 21  # 10 x 1 + 4 x 0.1 + 5 x 2 = 20.4, rounded up once


def test_anthropic_stream_takes_the_last_cumulative_delta(harness: Harness, llm: FakeLLM) -> None:
    # The fake stream sends message_start (output 1) and two cumulative deltas (3, then 7).
    llm.default = Reply(input=10, cached=4, cache_write=3, output=7)
    messages(llm, stream=True)
    (record,) = harness.records
    assert record.tokens == {
        "input": 10,
        "output": 7,
        "cache_read": 4,
        "cache_write": 3,
        "cache_write_1h": 0,
    }
    # 10 + 0.4 + 3 (no cache-write price: charged as input) + 14 = 27.4 -> 28; summing the
    # deltas (1 + 3 + 7 output tokens) would have charged 36.
    assert record.actual == 28


def test_gzip_encoded_bodies_are_decoded(harness: Harness, llm: FakeLLM) -> None:
    llm.default = Reply(gzip=True)
    chat(llm, stream=False)
    assert harness.records[0].actual == 20


# -- refusals: nothing reaches the server -----------------------------------------------------


def test_after_the_budget_is_spent_no_request_arrives(harness: Harness, llm: FakeLLM) -> None:
    chat(llm, stream=False)  # learn this body's estimate E from what the server received
    estimate = estimate_of(llm.received[0].raw, 1, 20)
    # Limit E + 40: used after k settled calls is 20 k, so calls 1, 2, 3 fit (20 k + E <= L
    # for k <= 2) and call 4 does not.
    harness.begin(limit_usd=f"{(estimate + 40) / 1_000_000:.6f}")
    for _ in range(3):
        chat(llm, stream=False)
    assert len(llm.received) == 4
    for _ in range(3):
        with pytest.raises(LLMBudgetExceeded) as info:
            chat(llm, stream=False)
    assert len(llm.received) == 4, "a refused request reached the server"
    err = info.value
    assert (err.requested, err.limit, err.used, err.scope) == (estimate, estimate + 40, 60, "test")
    assert (
        err.available == estimate + 40 - 60
        and err.test == "harness::test"
        and err.model == "test-model"
    )
    problems = harness.end()
    assert len(problems) == 3 and "test-model" in problems[0]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_refusal_is_raised_at_once_without_sdk_retries(
    harness: Harness, llm: FakeLLM, sdk: str
) -> None:
    harness.begin(limit_usd="0")
    with pytest.raises(LLMBudgetExceeded):
        if sdk == "openai":
            oa(llm, max_retries=3).chat.completions.create(
                model="test-model", messages=MSG, max_tokens=20
            )
        else:
            an(llm, max_retries=3).messages.create(model="test-model", max_tokens=20, messages=MSG)
    assert llm.received == []
    assert [r.status for r in harness.records] == ["refused"]


def test_session_budget_refuses_across_tests(harness: Harness, llm: FakeLLM) -> None:
    chat(llm, stream=False)
    estimate = estimate_of(llm.received[0].raw, 1, 20)
    harness.begin(session_limit_usd=f"{estimate / 1_000_000:.6f}")  # exactly one estimate
    chat(llm, stream=False)  # used 20 after settling: E + 20 > E, so the next is refused
    harness.begin()
    with pytest.raises(LLMBudgetExceeded) as info:
        chat(llm, stream=False)
    assert info.value.scope == "session" and len(llm.received) == 2
    assert harness.test.tracker.stats().open_count == 0  # the test reservation was released


def test_unknown_model_is_refused_when_a_budget_is_set(harness: Harness, llm: FakeLLM) -> None:
    with pytest.raises(LLMUnknownModel, match="no-such-model"):
        oa(llm).chat.completions.create(model="no-such-model", messages=MSG, max_tokens=5)
    assert llm.received == []
    assert harness.records[0].status == "unknown-model"


# -- retries and errors -----------------------------------------------------------------------


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_each_retry_is_reserved_and_errors_are_released(
    harness: Harness, llm: FakeLLM, sdk: str
) -> None:
    fast = {"retry-after-ms": "1"}
    llm.script = [Reply(status=500, headers=fast), Reply(status=429, headers=fast), Reply()]
    if sdk == "openai":
        oa(llm, max_retries=2).chat.completions.create(
            model="test-model", messages=MSG, max_tokens=20
        )
    else:
        an(llm, max_retries=2).messages.create(model="test-model", max_tokens=20, messages=MSG)
    assert len(llm.received) == 3
    assert [(r.status, r.http_status, r.charged) for r in harness.records] == [
        ("http-error", 500, 0),
        ("http-error", 429, 0),
        ("ok", 200, 20),
    ]
    stats = harness.test.tracker.stats()
    assert (stats.admitted, stats.released, stats.settled, stats.used) == (3, 2, 1, 20)


def test_response_without_usage_keeps_the_reservation(harness: Harness, llm: FakeLLM) -> None:
    llm.default = Reply(omit_usage=True)
    r = oa(llm).chat.completions.create(model="test-model", messages=MSG, max_tokens=20)
    assert r.choices[0].message.content == "hi"
    (record,) = harness.records
    assert record.status == "no-usage" and record.charged == record.estimate > 0


def test_stream_without_usage_chunk_keeps_the_reservation(harness: Harness, llm: FakeLLM) -> None:
    r = oa(llm).chat.completions.create(
        model="test-model", messages=MSG, max_tokens=20, stream=True
    )
    assert [c for c in r]
    (record,) = harness.records
    assert record.status == "no-usage" and "include_usage" in record.detail
    assert record.charged == record.estimate


def test_cut_stream_keeps_the_reservation(harness: Harness, llm: FakeLLM) -> None:
    llm.default = Reply(cut_stream=True)
    chat(llm, stream=True)
    (record,) = harness.records
    assert record.status == "no-usage" and record.charged == record.estimate
    assert llm.billed == []


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_unparsable_body_never_breaks_the_call(harness: Harness, llm: FakeLLM, lib: Any) -> None:
    llm.default = Reply(garbage=True)
    with lib.Client() as client:
        response = client.post(
            llm.url + "/v1/chat/completions",
            json={"model": "test-model", "messages": MSG, "max_tokens": 20},
        )
    assert response.text == "<html>not json</html>"
    (record,) = harness.records
    assert record.status == "unparsed" and "not JSON" in record.detail
    assert record.charged == record.estimate


def test_connection_refused_is_released(harness: Harness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nobody listens
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="test-model", messages=MSG, max_tokens=20)
    (record,) = harness.records
    assert record.status == "failed" and record.charged == 0
    assert harness.test.tracker.stats().used == 0


# -- raw httpx and httpx2 clients ------------------------------------------------------------


def _payload(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "test-model", "messages": MSG, "max_tokens": 20}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _sync(lib: Any, url: str, stream: bool) -> str:
    with lib.Client() as client:
        if not stream:
            return str(client.post(url, json=_payload(False)).json()["choices"][0]["message"])
        with client.stream("POST", url, json=_payload(True)) as response:
            return "".join(response.iter_lines())


async def _async(lib: Any, url: str, stream: bool) -> str:
    async with lib.AsyncClient() as client:
        if not stream:
            return str((await client.post(url, json=_payload(False))).json()["choices"])
        async with client.stream("POST", url, json=_payload(True)) as response:
            return "".join([line async for line in response.aiter_lines()])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_raw_clients(harness: Harness, llm: FakeLLM, lib: Any, mode: str, stream: bool) -> None:
    url = llm.url + "/v1/chat/completions"
    text = _sync(lib, url, stream) if mode == "sync" else asyncio.run(_async(lib, url, stream))
    assert ("[DONE]" in text) if stream else ("hi" in text)
    (record,) = harness.records
    assert (record.status, record.actual, record.stream) == ("ok", 20, stream)
    sent = json.loads(llm.received[0].raw)
    assert sent == _payload(stream)  # the body went out unchanged


def test_requests_to_other_paths_are_not_budgeted(harness: Harness, llm: FakeLLM) -> None:
    with httpx2.Client() as client:
        client.post(llm.url + "/v1/files", json={"purpose": "x"})
    assert harness.records == []
