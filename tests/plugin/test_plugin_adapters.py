"""Adapters: endpoint matching, request bounds and usage extraction, as pure functions."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pytest_omnillm
from omnillm_sim import Usage
from pytest_omnillm.adapters import (
    Endpoint,
    UsageParseError,
    UsageReader,
    match_endpoint,
    parse_request,
    usage_from_anthropic,
    usage_from_openai,
)


def test_public_names_are_pinned() -> None:
    assert pytest_omnillm.__all__ == ["LLMBudgetExceeded", "LLMUnknownModel", "check_tracker"]
    assert issubclass(pytest_omnillm.LLMBudgetExceeded, pytest_omnillm.LLMBudgetExceeded)
    from omnillm_sim import BudgetExceeded, UnknownModelError

    assert issubclass(pytest_omnillm.LLMBudgetExceeded, BudgetExceeded)
    assert issubclass(pytest_omnillm.LLMUnknownModel, UnknownModelError)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/chat/completions", "openai/chat"),
        ("POST", "/openai/deployments/x/chat/completions", "openai/chat"),
        ("POST", "/v1/completions", "openai/completions"),
        ("POST", "/v1/responses", "openai/responses"),
        ("POST", "/api/v1/embeddings/", "openai/embeddings"),
        ("POST", "/v1/messages", "anthropic/messages"),
        ("POST", "/v1/messages/count_tokens", None),  # free
        ("POST", "/v1/messages/batches", None),
        ("GET", "/v1/responses", None),
        ("POST", "/v1/files", None),
    ],
)
def test_match_endpoint(method: str, path: str, expected: str | None) -> None:
    found = match_endpoint(method, path)
    assert (found.name if found else None) == expected


def _req(kind: str, provider: str, body: dict[str, object]):  # type: ignore[no-untyped-def]
    return parse_request(Endpoint(provider, kind, "/x"), json.dumps(body).encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "provider", "body", "max_out", "messages"),
    [
        ("chat", "openai", {"max_tokens": 50}, 50, 1),
        ("chat", "openai", {"max_completion_tokens": 70, "max_tokens": 50, "n": 3}, 210, 1),
        ("chat", "openai", {}, None, 1),
        ("completions", "openai", {"prompt": "x"}, 16, 1),  # the API's default max_tokens
        ("completions", "openai", {"prompt": ["a", "b"], "max_tokens": 5, "best_of": 4}, 20, 2),
        ("responses", "openai", {"input": "hi", "max_output_tokens": 9}, 9, 1),
        ("embeddings", "openai", {"input": ["a", "b", "c"]}, 0, 3),
        ("messages", "anthropic", {"max_tokens": 64, "system": "be brief"}, 64, 2),
    ],
)
def test_request_bounds(
    kind: str, provider: str, body: dict[str, object], max_out: int | None, messages: int
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    parsed = _req(kind, provider, body)
    assert parsed.estimate_request is not None
    assert parsed.estimate_request.max_output_tokens == max_out
    assert parsed.estimate_request.messages == messages
    assert parsed.estimate_request.prompt_bytes == len(json.dumps(body).encode())


def test_request_without_model_or_json_is_not_priced() -> None:
    assert _req("chat", "openai", {"messages": []}).estimate_request is None
    ep = Endpoint("openai", "chat", "/x")
    assert parse_request(ep, b"not json").model is None


def test_usage_mapping() -> None:
    assert usage_from_openai(
        {"prompt_tokens": 14, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}
    ) == Usage(input_tokens=10, output_tokens=5, cache_read_tokens=4)
    assert usage_from_openai(
        {"input_tokens": 7, "output_tokens": 3, "input_tokens_details": None}
    ) == Usage(7, 3)
    assert usage_from_anthropic(
        {
            "input_tokens": 10,
            "output_tokens": 2,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 9,
            "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 5},
        }
    ) == Usage(10, 2, cache_read_tokens=3, cache_write_tokens=4, cache_write_1h_tokens=5)
    for bad in ({"prompt_tokens": -1}, {"prompt_tokens": "7"}, {"nothing": 1}, [1]):
        with pytest.raises(UsageParseError):
            usage_from_openai(bad)
    with pytest.raises(UsageParseError, match="cached_tokens=9 > prompt tokens 2"):
        usage_from_openai(
            {
                "prompt_tokens": 2,
                "completion_tokens": 0,
                "prompt_tokens_details": {"cached_tokens": 9},
            }
        )


ANTHROPIC_STREAM = (
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1,'
    b'"cache_read_input_tokens":2}}}\r\n\r\n'
    b": keep-alive comment\n\n"
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":4}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9,'
    b'"input_tokens":null}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@given(cuts=st.lists(st.integers(0, len(ANTHROPIC_STREAM)), max_size=12))
def test_sse_usage_does_not_depend_on_chunking(cuts: list[int]) -> None:
    reader = UsageReader(Endpoint("anthropic", "messages", "/v1/messages"), "text/event-stream")
    bounds = [0, *sorted(cuts), len(ANTHROPIC_STREAM)]
    for a, b in itertools.pairwise(bounds):
        reader.feed(ANTHROPIC_STREAM[a:b])
    # message_start usage with the *last* cumulative delta's output, never the sum (1+4+9).
    assert reader.finish() == Usage(12, 9, cache_read_tokens=2)


def test_stream_without_final_delta_has_no_usage() -> None:
    reader = UsageReader(Endpoint("anthropic", "messages", "/v1/messages"), "text/event-stream")
    reader.feed(ANTHROPIC_STREAM.split(b": keep-alive")[0])
    assert reader.finish() is None


def test_unsupported_encoding_is_reported_not_raised_while_reading() -> None:
    reader = UsageReader(Endpoint("openai", "chat", "/x"), "application/json", "compress")
    reader.feed(b"\x00\x01")  # never raises
    with pytest.raises(UsageParseError, match="Content-Encoding 'compress'"):
        reader.finish()


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/json", b' {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}'),
        ("", b'data: {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}\r\rdata: [DONE]\r\r'),
    ],
    ids=["json-reply", "sse-without-content-type"],
)
def test_a_stream_request_reads_what_the_body_is(ctype: str, body: bytes) -> None:
    reader = UsageReader(Endpoint("openai", "chat", "/x"), ctype, stream=True)
    for i in range(len(body)):
        reader.feed(body[i : i + 1])
    assert reader.finish() == Usage(3, 4)


# -- request bodies in every JSON encoding; the estimate the plugin needs -----------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    model=st.text(min_size=1, max_size=12).filter(str.strip),
    extra=st.dictionaries(st.text(max_size=6), _json_values, max_size=3),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]),
    ascii_only=st.booleans(),
)
def test_a_body_reads_the_same_in_every_json_encoding(
    model: str, extra: dict[str, object], encoding: str, ascii_only: bool
) -> None:
    # json.loads reads UTF-8/16/32 bytes (RFC 8259 allows them on input): so does the plugin.
    messages = [{"role": "user", "content": "x"}]
    body = {**extra, "model": model, "max_tokens": 7, "messages": messages}
    text = json.dumps(body, ensure_ascii=ascii_only)
    endpoint = Endpoint("openai", "chat", "/v1/chat/completions")
    encoded = parse_request(endpoint, text.encode(encoding))
    assert encoded.model == model and encoded.estimate_request is not None
    assert encoded.estimate_request.max_output_tokens == 7


def test_the_omnillm_byte_count_is_left_out_only_when_asked() -> None:
    body = json.dumps(
        {"model": "gpt-4o", "max_tokens": 9, "messages": [{"role": "user", "content": "Hello"}]}
    ).encode()
    endpoint = Endpoint("openai", "chat", "/v1/chat/completions")
    full, lean = parse_request(endpoint, body), parse_request(endpoint, body, omnillm_bytes=False)
    assert full.estimate_request is not None and lean.estimate_request is not None
    assert full.estimate_request.omnillm_prompt_bytes == len("Hello")  # the crate's count
    assert lean.estimate_request.omnillm_prompt_bytes is None
    assert full.estimate_request._replace(omnillm_prompt_bytes=None) == (
        lean.estimate_request
    )


def test_match_endpoint_answers_the_same_for_a_path_seen_before() -> None:
    first = match_endpoint("POST", "/v9/deployments/d1/chat/completions")
    again = match_endpoint("post", "/v9/deployments/d1/chat/completions")
    assert first is not None and again == first and again.deployment == "d1"
    assert match_endpoint("GET", "/v9/deployments/d1/chat/completions") is None
