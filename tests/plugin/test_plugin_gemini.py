"""Gemini: the real google-genai SDK (sync; async on aiohttp and on httpx2) against the fake server.

URL shapes: Developer API ``/v1beta/models/M:generateContent`` (the SDK's), ``/v1/models/...``
and Vertex AI ``/v1/projects/P/locations/L/publishers/google/models/M:...``. The model comes
from the URL. Prices as in tests/plugin/conftest.py: test-model costs 1 µ$ per input token,
2 µ$ per output token and 0.1 µ$ per cached token. The fake server bills 10 input and 5 output
tokens by default: 10 + 10 = 20 µ$. Estimates follow the documented rule: (body bytes + 8 x
messages + 16) input tokens plus (maxOutputTokens + thinkingBudget) x candidateCount output
tokens, at the highest rates.
"""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from fakellm import DROP, FakeLLM, Reply
from genai_prices import calc_price, extract_usage
from google import genai
from google.genai import types
from harness import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from omnillm_sim.pricing import current_table
from pytest_omnillm import LLMBudgetExceeded, LLMUnknownModel
from pytest_omnillm.adapters import match_endpoint, parse_request, usage_from_gemini

_clients: list[genai.Client] = []


def client(llm: FakeLLM, **kw: Any) -> genai.Client:
    options = types.HttpOptions(base_url=llm.url, retry_options=types.HttpRetryOptions(attempts=1))
    made = genai.Client(api_key="k", http_options=options, **kw)
    _clients.append(made)  # a collected Client closes its HTTP client under its .models
    del _clients[:-4]
    return made


def config(max_output: int | None = 20, **kw: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(max_output_tokens=max_output, **kw)


def estimate_of(raw: bytes, messages: int, output: int) -> int:
    """The documented upper bound for test-model: 1 µ$ per input token, 2 per output token."""
    return (len(raw) + 8 * messages + 16) * 1 + output * 2


# -- URL shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "model"),
    [
        ("/v1beta/models/gemini-2.5-pro:generateContent", "gemini/generate", "gemini-2.5-pro"),
        ("/v1/models/gemini-2.5-flash:streamGenerateContent", "gemini/stream_generate", None),
        ("/v1beta/models/gemini-2.5-flash:countTokens", "gemini/count_tokens", None),
        (
            "/v1/projects/p1/locations/us-central1/publishers/google/models/"
            "gemini-2.0-flash-001:generateContent",
            "gemini/generate",
            "gemini-2.0-flash-001",
        ),
        ("/gateway/v1beta/models/m:generateContent/", "gemini/generate", "m"),
        ("/v1beta/models/gemini-2.5-pro:embedContent", None, None),
        ("/v1beta/models/gemini-2.5-pro", None, None),
        ("/v1beta/cachedContents", None, None),
    ],
)
def test_gemini_url_shapes(path: str, name: str | None, model: str | None) -> None:
    found = match_endpoint("POST", path)
    assert (found.name if found else None) == name
    if found is not None and model is not None:
        assert found.model == model
    assert match_endpoint("GET", path) is None


# -- settlement through the real SDK ---------------------------------------------------------


def test_generate_content_is_estimated_and_settled(harness: Harness, llm: FakeLLM) -> None:
    r = client(llm).models.generate_content(model="test-model", contents="hi", config=config())
    assert r.text == "hi"
    (received,) = llm.received
    assert received.path.endswith("/models/test-model:generateContent")  # /v1 or /v1beta
    (record,) = harness.records
    assert (record.endpoint, record.model, record.status) == ("gemini/generate", "test-model", "ok")
    assert record.estimate == estimate_of(received.raw, 1, 20) and record.bounded
    assert record.actual == record.charged == 10 * 1 + 5 * 2
    assert record.response_model == "test-model"
    assert harness.end() == []


def test_generate_content_stream_settles_from_the_last_chunk(
    harness: Harness, llm: FakeLLM
) -> None:
    llm.default = Reply(input=30, output=7)
    models = client(llm).models
    stream = models.generate_content_stream(model="test-model", contents="hi", config=config())
    chunks = list(stream)
    assert "".join(c.text or "" for c in chunks) == "hi"
    assert llm.received[0].path.endswith("/models/test-model:streamGenerateContent")
    (record,) = harness.records
    assert (record.endpoint, record.stream, record.status) == ("gemini/stream_generate", True, "ok")
    # the first chunk's usage (prompt only) is not the final one: 30 + 7 x 2
    assert record.actual == 44


@pytest.mark.parametrize("library", ["aiohttp", "httpx2"])
def test_the_async_client_is_settled_on_either_transport(
    harness: Harness, llm: FakeLLM, library: str
) -> None:
    # google-genai's async client sends through aiohttp when aiohttp is installed (it is in the
    # dev extra), and through httpx2.AsyncClient when given a transport or without aiohttp.
    # Each path is budgeted once, by its own interception.
    kw: dict[str, Any] = {}
    if library == "httpx2":
        kw["async_client_args"] = {"transport": httpx2.AsyncHTTPTransport()}
    options = types.HttpOptions(
        base_url=llm.url, retry_options=types.HttpRetryOptions(attempts=1), **kw
    )
    sdk = genai.Client(api_key="k", http_options=options)
    _clients.append(sdk)
    # the precondition: the SDK really takes the path this case is about
    assert sdk._api_client._use_aiohttp() is (library == "aiohttp")

    async def go() -> None:
        aio = sdk.aio
        r = await aio.models.generate_content(model="test-model", contents="hi", config=config())
        assert r.text == "hi"
        stream = await aio.models.generate_content_stream(
            model="test-model", contents="hi", config=config()
        )
        assert [c async for c in stream]
        counted = await aio.models.count_tokens(model="test-model", contents="hi")
        assert counted.total_tokens == 10

    asyncio.run(go())
    statuses = [(r.endpoint, r.status, r.charged) for r in harness.records]
    assert statuses == [
        ("gemini/generate", "ok", 20),
        ("gemini/stream_generate", "ok", 20),
        ("gemini/count_tokens", "free", 0),
    ]


def test_count_tokens_is_free_never_reserved_nor_refused(harness: Harness, llm: FakeLLM) -> None:
    harness.begin(limit_usd="0.000001")  # 1 µ$: any priced call would be refused
    counted = client(llm).models.count_tokens(model="no-such-model", contents="hi" * 1000)
    assert counted.total_tokens == 10 and len(llm.received) == 1
    (record,) = harness.records
    assert (record.status, record.charged, record.estimate) == ("free", 0, None)
    assert record.model == "no-such-model"
    assert harness.test is not None and harness.test.tracker.stats().admitted == 0
    assert harness.end() == []


def test_output_bound_counts_candidates_and_the_thinking_budget(
    harness: Harness, llm: FakeLLM
) -> None:
    cfg = config(
        20,
        candidate_count=2,
        thinking_config=types.ThinkingConfig(thinking_budget=100),
        system_instruction="be brief",
    )
    client(llm).models.generate_content(model="test-model", contents="hi", config=cfg)
    (record,) = harness.records
    body = llm.received[0].body
    # google-genai 3.x spells it thinking_budget (the proto name), which the API also accepts
    assert list(body["generationConfig"]["thinkingConfig"].values()) == [100]
    # 2 messages (contents + systemInstruction); (20 + 100) x 2 output tokens
    assert record.estimate == estimate_of(llm.received[0].raw, 2, (20 + 100) * 2)


def test_without_max_output_tokens_the_default_bound_is_used(
    harness: Harness, llm: FakeLLM
) -> None:
    client(llm).models.generate_content(model="test-model", contents="hi")
    (record,) = harness.records
    assert record.bounded is False
    assert record.estimate == estimate_of(llm.received[0].raw, 1, 4096)


def test_thoughts_and_tool_use_are_billed(harness: Harness, llm: FakeLLM) -> None:
    llm.default = Reply(input=10, output=5, thoughts=40, tool_use=7, cached=4)
    client(llm).models.generate_content(model="test-model", contents="hi", config=config())
    (record,) = harness.records
    # input: 10 uncached + 7 tool-use prompt tokens at 1 µ$; 4 cached at 0.1 µ$;
    # output: 5 candidates + 40 thoughts at 2 µ$ -> 17 + 0.4 + 90 = 107.4 -> 108 (rounded up)
    assert record.actual == 108
    assert record.tokens == {
        "input": 17, "output": 45, "cache_read": 4, "cache_write": 0, "cache_write_1h": 0
    }  # fmt: skip


def test_refused_before_sending(harness: Harness, llm: FakeLLM) -> None:
    harness.begin(limit_usd="0.00001")  # 10 µ$: below any estimate
    # The SDK's default options: the refusal reaches the caller as itself, with no retry.
    sdk = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=llm.url))
    with pytest.raises(LLMBudgetExceeded) as info:
        sdk.models.generate_content(model="test-model", contents="hi", config=config())
    assert "test-model" in str(info.value)

    async def go() -> None:
        aio = sdk.aio.models
        with pytest.raises(LLMBudgetExceeded):
            await aio.generate_content(model="test-model", contents="hi", config=config())
        with pytest.raises(LLMBudgetExceeded):
            stream = await aio.generate_content_stream(
                model="test-model", contents="hi", config=config()
            )
            [c async for c in stream]

    asyncio.run(go())
    assert llm.received == []
    assert [r.status for r in harness.records] == ["refused"] * 3


def test_unknown_gemini_model_is_refused_under_a_budget(harness: Harness, llm: FakeLLM) -> None:
    harness.begin(limit_usd="1")
    with pytest.raises(LLMUnknownModel):
        client(llm).models.generate_content(model="gemini-9-ultra", contents="hi", config=config())
    assert llm.received == []


# -- fail closed -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(omit_usage=True), "no-usage"),
        (Reply(patch_usage={"promptTokenCount": None}), "unparsed"),
        (Reply(patch_usage={"promptTokenCount": DROP}), "unparsed"),
        (Reply(patch_usage={"candidatesTokenCount": None}), "unparsed"),
        (Reply(patch_usage={"candidatesTokenCount": 2.0}), "unparsed"),
        (Reply(patch_usage={"candidatesTokenCount": True}), "unparsed"),
        # absent, and totalTokenCount (15) does not prove it is 0
        (Reply(patch_usage={"candidatesTokenCount": DROP}), "unparsed"),
        (Reply(thoughts=9, patch_usage={"thoughtsTokenCount": None}), "unparsed"),
        (Reply(cached=3, patch_usage={"cachedContentTokenCount": None}), "unparsed"),
        (Reply(patch_usage={"toolUsePromptTokenCount": None}), "unparsed"),
        (Reply(cached=3, patch_usage={"cachedContentTokenCount": 99}), "unparsed"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_untrusted_usage_keeps_the_estimate(
    harness: Harness, llm: FakeLLM, reply: Reply, status: str, stream: bool
) -> None:
    llm.default = reply
    models = client(llm).models
    if stream:
        list(models.generate_content_stream(model="test-model", contents="hi", config=config()))
    else:
        models.generate_content(model="test-model", contents="hi", config=config())
    (record,) = harness.records
    if stream and status == "no-usage":
        assert record.status == "no-usage"
    else:
        assert record.status == status, record.detail
    assert record.estimate is not None and record.charged == record.estimate


def test_absent_candidates_count_proven_zero_by_the_total(harness: Harness, llm: FakeLLM) -> None:
    # A reply whose whole output was thinking: proto3 JSON leaves out the zero count.
    llm.default = Reply(input=10, output=0, thoughts=6, patch_usage={"candidatesTokenCount": DROP})
    client(llm).models.generate_content(model="test-model", contents="hi", config=config())
    (record,) = harness.records
    assert (record.status, record.actual) == ("ok", 10 + 6 * 2)


@pytest.mark.parametrize("alt_sse", [True, False])
def test_a_cut_stream_keeps_the_estimate(harness: Harness, llm: FakeLLM, alt_sse: bool) -> None:
    llm.default = Reply(cut_stream=True)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 20}}  # fmt: skip
    url = llm.url + "/v1beta/models/test-model:streamGenerateContent"
    with httpx2.Client() as c:
        c.post(url + ("?alt=sse" if alt_sse else ""), json=body).read()
    (record,) = harness.records
    # SSE: only the first chunk's partial usage arrived; JSON array: the array never closed
    assert record.status == ("no-usage" if alt_sse else "unparsed"), record.detail
    assert record.charged == record.estimate


def test_json_array_stream_settles_from_its_last_usage(harness: Harness, llm: FakeLLM) -> None:
    llm.default = Reply(input=12, output=3)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 20}}  # fmt: skip
    with httpx2.Client() as c:
        r = c.post(llm.url + "/v1/models/test-model:streamGenerateContent", json=body)
    assert r.text.startswith("[")
    (record,) = harness.records
    assert (record.status, record.stream, record.actual) == ("ok", True, 12 + 3 * 2)


# -- Vertex AI -------------------------------------------------------------------------------


def test_vertex_ai_url_shape_through_the_sdk(harness: Harness, llm: FakeLLM) -> None:
    from google.oauth2.credentials import Credentials

    vertex = genai.Client(
        vertexai=True,
        project="p1",
        location="us-central1",
        credentials=Credentials(token="fake-token"),  # a token without expiry: never refreshed
        http_options=types.HttpOptions(
            base_url=llm.url, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )
    r = vertex.models.generate_content(model="test-model", contents="hi", config=config())
    assert r.text == "hi"
    assert llm.received[0].path == (
        "/v1beta1/projects/p1/locations/us-central1/publishers/google/models/"
        "test-model:generateContent"
    )
    (record,) = harness.records
    assert (record.model, record.status, record.actual) == ("test-model", "ok", 20)


# -- prices: hand computation and genai-prices' own calc_price ---------------------------------

# Google's published prices per million tokens (ai.google.dev/gemini-api/docs/pricing):
# gemini-2.5-pro: input $1.25 (prompts <= 200k tokens) / $2.50 (> 200k); output, thinking
#   included, $10 / $15; context-cache reads $0.125 / $0.25. The tier is chosen by the whole
#   prompt (cached tokens included) and applies to every token of the request.
# gemini-2.5-flash: input $0.30 (text), output (thinking included) $2.50, cache reads $0.03.
# A token count times a price in $/M is a cost in µ$; costs round up to whole µ$.
PRICED = [
    pytest.param(
        "gemini-2.5-pro",
        {"promptTokenCount": 100_000, "candidatesTokenCount": 2_000},
        100_000 * 1.25 + 2_000 * 10,  # = 125,000 + 20,000 = 145,000 µ$
        id="pro-short-context",
    ),
    pytest.param(
        "gemini-2.5-pro",
        {"promptTokenCount": 200_000, "candidatesTokenCount": 100},
        200_000 * 1.25 + 100 * 10,  # exactly 200k is still the lower tier: 251,000 µ$
        id="pro-at-200k",
    ),
    pytest.param(
        "gemini-2.5-pro",
        {"promptTokenCount": 200_001, "candidatesTokenCount": 100},
        200_001 * 2.50 + 100 * 15,  # = 500,002.5 + 1,500 -> 501,503 µ$ (rounded up)
        id="pro-just-over-200k",
    ),
    pytest.param(
        "gemini-2.5-pro",
        {"promptTokenCount": 250_000, "candidatesTokenCount": 1_000, "thoughtsTokenCount": 500},
        250_000 * 2.50 + (1_000 + 500) * 15,  # = 625,000 + 22,500 = 647,500 µ$
        id="pro-long-context-thinking",
    ),
    pytest.param(
        "gemini-2.5-flash",
        {"promptTokenCount": 1_000, "candidatesTokenCount": 200, "thoughtsTokenCount": 800},
        1_000 * 0.30 + (200 + 800) * 2.50,  # = 300 + 2,500 = 2,800 µ$
        id="flash-thinking",
    ),
    pytest.param(
        "gemini-2.5-flash",
        {"promptTokenCount": 10_000, "cachedContentTokenCount": 8_000, "candidatesTokenCount": 100},
        2_000 * 0.30 + 8_000 * 0.03 + 100 * 2.50,  # = 600 + 240 + 250 = 1,090 µ$
        id="flash-cached-content",
    ),
    pytest.param(
        "gemini-2.5-pro",
        {"promptTokenCount": 50_000, "cachedContentTokenCount": 40_000,
         "candidatesTokenCount": 1_000},
        10_000 * 1.25 + 40_000 * 0.125 + 1_000 * 10,  # = 12,500 + 5,000 + 10,000 = 27,500 µ$
        id="pro-cached-content",
    ),
    pytest.param(
        "gemini-2.5-flash",
        {"promptTokenCount": 1_000, "toolUsePromptTokenCount": 500, "candidatesTokenCount": 100},
        (1_000 + 500) * 0.30 + 100 * 2.50,  # = 450 + 250 = 700 µ$
        id="flash-tool-use-prompt",
    ),
]


@pytest.mark.parametrize(("model", "meta", "hand"), PRICED)
def test_gemini_costs_by_hand_and_by_genai_prices(
    model: str, meta: dict[str, int], hand: float
) -> None:
    ours = current_table().cost(model, usage_from_gemini(meta))
    assert ours == math.ceil(hand - 1e-6)  # the hand figures are exact to well below 1e-6
    # The independent oracle: genai-prices reads the same usageMetadata and prices it.
    extracted = extract_usage({"usageMetadata": meta, "modelVersion": model}, provider_id="google")
    theirs = calc_price(extracted.usage, model, provider_id="google").total_price
    assert ours == math.ceil(Decimal(theirs) * 1_000_000)


def test_long_context_tier_through_the_sdk(harness: Harness, llm: FakeLLM) -> None:
    from omnillm_sim.pricing import catalogue

    harness.session.prices = catalogue("current")
    llm.default = Reply(input=250_000, output=1_000, thoughts=500)
    client(llm).models.generate_content(model="gemini-2.5-pro", contents="hi", config=config())
    (record,) = harness.records
    assert record.actual == 250_000 * 250 // 100 + 1_500 * 15  # 647,500 µ$ (see PRICED)


def test_upper_bound_uses_the_long_context_rates_once_the_prompt_may_cross_200k(
    harness: Harness, llm: FakeLLM
) -> None:
    from omnillm_sim.pricing import catalogue

    harness.session.prices = catalogue("current")
    small = client(llm).models
    small.generate_content(model="gemini-2.5-pro", contents="hi", config=config(100))
    text = "x" * 200_100  # the prompt bound (bytes + overheads) passes 200k tokens
    small.generate_content(model="gemini-2.5-pro", contents=text, config=config(100))
    short, long = harness.records
    raw_short, raw_long = (r.raw for r in llm.received)
    # <= 200k: $1.25 input, $10 output (per M tokens = µ$ per token)
    assert short.estimate == math.ceil((len(raw_short) + 8 + 16) * 1.25 + 100 * 10)
    # may be > 200k: the tier's $2.50 input and $15 output
    assert long.estimate == math.ceil((len(raw_long) + 8 + 16) * 2.5 + 100 * 15)
    assert json.loads(raw_long)["contents"][0]["parts"][0]["text"] == text


@given(
    model=st.sampled_from(["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.0-flash"]),
    prompt=st.integers(0, 400_000),
    cached_share=st.floats(0, 1),
    candidates=st.integers(0, 70_000),
    thoughts=st.integers(0, 40_000),
    tool_use=st.integers(0, 5_000),
)
@settings(max_examples=150, deadline=None)
def test_any_gemini_usage_costs_what_genai_prices_says(
    model: str, prompt: int, cached_share: float, candidates: int, thoughts: int, tool_use: int
) -> None:
    meta = {
        "promptTokenCount": prompt,
        "cachedContentTokenCount": int(prompt * cached_share),
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": thoughts,
        "toolUsePromptTokenCount": tool_use,
    }
    ours = _TABLE.cost(model, usage_from_gemini(meta))
    extracted = extract_usage({"usageMetadata": meta, "modelVersion": model}, provider_id="google")
    theirs = calc_price(extracted.usage, model, provider_id="google").total_price
    assert ours == math.ceil(Decimal(theirs) * 1_000_000)


_TABLE = current_table()


@pytest.mark.parametrize(
    ("generation_config", "output", "thinking"),
    [
        ({"maxOutputTokens": 50}, 50, 0),
        ({"max_output_tokens": 50, "candidate_count": 3}, 150, 0),
        ({"maxOutputTokens": 50, "thinkingConfig": {"thinkingBudget": 200}}, 50, 200),
        ({"maxOutputTokens": 50, "candidateCount": 2,
          "thinking_config": {"thinking_budget": 200}}, 100, 400),
        ({"maxOutputTokens": 50, "thinkingConfig": {"thinkingBudget": -1}}, 50, 0),  # dynamic
        ({"thinkingConfig": {"thinkingBudget": 64}}, None, 64),  # default bound + thinking
        ({}, None, 0),
    ],
)
def test_gemini_request_bounds(
    generation_config: dict[str, Any], output: int | None, thinking: int
) -> None:
    endpoint = match_endpoint("POST", "/v1beta/models/gemini-2.5-flash:generateContent")
    assert endpoint is not None
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}] * 3,
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": generation_config}  # fmt: skip
    parsed = parse_request(endpoint, json.dumps(body).encode())
    request = parsed.estimate_request
    assert request is not None and parsed.model == "gemini-2.5-flash"
    assert (request.max_output_tokens, request.thinking_tokens) == (output, thinking)
    assert request.messages == 4 and parsed.stream is False and parsed.model_source == "url"


@given(
    model=st.sampled_from(["gemini-2.5-pro", "gemini-2.5-flash"]),
    text=st.integers(0, 300_000),
    max_output=st.integers(0, 65_536),
    thinking=st.integers(0, 32_768),
    candidates=st.integers(1, 4),
    data=st.data(),
)
@settings(max_examples=150, deadline=None)
def test_every_usage_within_the_bounds_costs_at_most_the_estimate(
    model: str, text: int, max_output: int, thinking: int, candidates: int, data: st.DataObject
) -> None:
    # I2 for Gemini: the long-context tier is in the rate selection whenever the prompt bound
    # can cross it, and thinking is bounded with the output.
    from omnillm_sim.estimate import UpperBoundEstimator

    endpoint = match_endpoint("POST", f"/v1beta/models/{model}:generateContent")
    assert endpoint is not None
    body = {"contents": [{"role": "user", "parts": [{"text": "x" * text}]}],
            "generationConfig": {"maxOutputTokens": max_output, "candidateCount": candidates,
                                 "thinkingConfig": {"thinkingBudget": thinking}}}  # fmt: skip
    request = parse_request(endpoint, json.dumps(body).encode()).estimate_request
    assert request is not None
    estimate = UpperBoundEstimator().estimate(request, _TABLE)
    prompt = data.draw(st.integers(0, estimate.prompt_tokens), label="prompt")
    cached = data.draw(st.integers(0, prompt), label="cached")
    output = data.draw(st.integers(0, estimate.output_tokens), label="output")
    thoughts = data.draw(st.integers(0, estimate.output_tokens - output), label="thoughts")
    meta = {"promptTokenCount": prompt, "cachedContentTokenCount": cached,
            "candidatesTokenCount": output, "thoughtsTokenCount": thoughts}  # fmt: skip
    assert _TABLE.cost(model, usage_from_gemini(meta)) <= estimate.cost


def test_unknown_model_without_a_budget_is_sent_and_unpriced(
    harness: Harness, llm: FakeLLM
) -> None:
    harness.session.enforce = False  # no budget anywhere
    client(llm).models.generate_content(model="gemini-9-ultra", contents="hi", config=config())
    assert len(llm.received) == 1
    (record,) = harness.records
    assert (record.model, record.status, record.charged) == ("gemini-9-ultra", "unpriced", 0)


def test_unknown_model_priced_by_the_fallback(harness: Harness, llm: FakeLLM) -> None:
    harness.session.prices = harness.prices.with_fallback("test-model")
    harness.begin(limit_usd="1")
    client(llm).models.generate_content(model="gemini-9-ultra", contents="hi", config=config())
    (record,) = harness.records
    assert (record.model, record.status, record.actual) == ("gemini-9-ultra", "ok", 20)


def test_an_error_reply_is_released(harness: Harness, llm: FakeLLM) -> None:
    from google.genai import errors

    llm.default = Reply(status=429)
    harness.begin(limit_usd="1")
    with pytest.raises(errors.ClientError):
        client(llm).models.generate_content(model="test-model", contents="hi", config=config())
    (record,) = harness.records
    assert (record.status, record.http_status, record.charged) == ("http-error", 429, 0)
    assert harness.test is not None and harness.test.tracker.used == 0


def test_the_summary_lists_free_requests_apart(harness: Harness, llm: FakeLLM) -> None:
    from pytest_omnillm.report import render, summarise

    c = client(llm)
    c.models.count_tokens(model="gemini-2.5-flash", contents="hi")
    c.models.generate_content(model="test-model", contents="hi", config=config())
    harness.end()
    assert harness.test is not None
    records = [r.as_dict() for r in harness.test.requests]
    test = {"nodeid": "t", "limit": None, "spent": 20, "requests": records, "problems": []}
    summary = summarise([test], [], session_limit=None, session_source="none")
    lines = render(summary, 10)
    assert "free (not charged): 1 request(s) to gemini-2.5-flash (gemini/count_tokens)" in lines
    assert list(summary.by_model()) == ["test-model"]
    assert summary.as_json()["session"]["free"] == 1
