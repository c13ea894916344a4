"""Request bodies the plugin must read before it can reserve: encodings and unreadable bodies.

Compressed request bodies come from applications that post through httpx or httpx2 directly
(the SDKs send plain JSON), so these tests use raw clients of both libraries. A body that the
plugin can decode is estimated from its decoded size; one it cannot read is refused under a
budget (nothing reaches the server) and passes, recorded as ``unpriced``, without one.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from typing import Any

import brotli
import httpx
import httpx2
import pytest
from fakellm import FakeLLM
from harness import Harness

from pytest_omnillm import LLMBudgetExceeded

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

MSG = [{"role": "user", "content": "hi"}]
BODY = {"model": "test-model", "messages": MSG, "max_tokens": 20}
LIBS = pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])


def estimate_of(raw: bytes, messages: int, max_output: int) -> int:
    """The documented upper-bound estimate for test-model (1 µ$/input, 2 µ$/output token)."""
    return (len(raw) + 8 * messages + 16) * 1 + max_output * 2


def post(lib: Any, llm: FakeLLM, content: bytes, **headers: str) -> Any:
    with lib.Client() as client:
        return client.post(
            llm.url + "/v1/chat/completions",
            content=content,
            headers={"content-type": "application/json", **headers},
        )


@LIBS
@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # HTTP deflate: the zlib format
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some clients send it
        ("identity, gzip", gzip.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
    ids=["gzip", "deflate", "raw-deflate", "identity-gzip", "br", "zstd", "gzip-then-br"],
)
def test_compressed_request_bodies_are_decoded_and_reserved(
    harness: Harness, llm: FakeLLM, lib: Any, encoding: str, pack: Any
) -> None:
    plain = json.dumps(BODY).encode()
    harness.begin(limit_usd="1")
    response = post(lib, llm, pack(plain), **{"content-encoding": encoding})
    assert response.status_code == 200 and llm.received[0].body == BODY
    (record,) = harness.records
    assert record.model == "test-model"
    assert record.estimate == estimate_of(plain, 1, 20)  # from the decoded size
    assert (record.status, record.actual) == ("ok", 20)


@LIBS
@pytest.mark.parametrize(
    ("content", "headers", "why"),
    [
        (b"<xml>hello</xml>", {}, "not JSON"),
        (b'["a list"]', {}, "not a JSON object"),
        (json.dumps({"messages": MSG}).encode(), {}, "no model"),
        (b"\x1f\x8b garbage", {"content-encoding": "gzip"}, "cannot decode"),
        (json.dumps(BODY).encode(), {"content-encoding": "compress"}, "'compress'"),
    ],
    ids=["not-json", "json-list", "no-model", "corrupt-gzip", "unknown-encoding"],
)
def test_unreadable_bodies_are_refused_under_a_budget(
    harness: Harness, llm: FakeLLM, lib: Any, content: bytes, headers: dict[str, str], why: str
) -> None:
    harness.begin(limit_usd="1")
    with pytest.raises(LLMBudgetExceeded, match="refused in harness::test") as info:
        post(lib, llm, content, **headers)
    assert why in str(info.value) and "nothing was sent" in str(info.value)
    assert llm.received == [], "an unreadable body reached the server"
    (record,) = harness.records
    assert record.status == "refused" and why in record.detail
    problems = harness.end()
    assert len(problems) == 1 and why in problems[0]  # the test fails even if it caught it


def test_a_request_body_that_inflates_past_the_bound_is_refused(
    harness: Harness, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_omnillm import adapters

    monkeypatch.setattr(adapters, "_MAX_REQUEST", 2**20)  # 256 MiB in use; 1 MiB here
    bomb = gzip.compress(json.dumps({**BODY, "pad": "x" * 2**21}).encode())
    harness.begin(limit_usd="1")
    with pytest.raises(LLMBudgetExceeded, match="more than 1048576 bytes"):
        post(httpx2, llm, bomb, **{"content-encoding": "gzip"})
    assert llm.received == []


@LIBS
def test_unreadable_bodies_pass_and_are_recorded_without_a_budget(
    harness: Harness, llm: FakeLLM, lib: Any
) -> None:
    harness.session.enforce = False  # no budget anywhere: never change the test's outcome
    response = post(lib, llm, b"<xml>hello</xml>")
    assert response.status_code == 200 and len(llm.received) == 1
    (record,) = harness.records
    assert record.status == "unpriced" and "not JSON" in record.detail
    assert harness.end() == []


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_br_and_zstd_bodies_without_a_decoder_are_refused_with_the_reason(
    harness: Harness, llm: FakeLLM, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("brotli", "brotlicffi", "compression.zstd", "backports.zstd"):
        monkeypatch.setitem(sys.modules, module, None)  # as if none were installed
    harness.begin(limit_usd="1")
    with pytest.raises(LLMBudgetExceeded) as info:
        post(httpx2, llm, b"\x00compressed", **{"content-encoding": encoding})
    assert f"Content-Encoding '{encoding}'" in str(info.value)
    assert "module" in str(info.value) and llm.received == []


def test_session_budget_alone_refuses_unreadable_bodies(harness: Harness, llm: FakeLLM) -> None:
    harness.begin(session_limit_usd="1")  # the test itself has no limit
    with pytest.raises(LLMBudgetExceeded) as info:
        post(httpx, llm, b"not json")
    assert info.value.scope == "session" and llm.received == []


def test_azure_deployment_path_is_priced_through_the_model_map(
    harness: Harness, llm: FakeLLM
) -> None:
    # A deployment name is not a model name, even one that looks like it (issue 16 item 5).
    body = {"messages": MSG, "max_tokens": 20}  # Azure OpenAI: no "model" in the body
    with httpx2.Client() as client, pytest.raises(LLMBudgetExceeded, match="--llm-model-map"):
        client.post(llm.url + "/openai/deployments/test-model/chat/completions", json=body)
    assert llm.received == []
    harness.session.model_map = {"test-model": "test-model"}
    with httpx2.Client() as client:
        client.post(llm.url + "/openai/deployments/test-model/chat/completions", json=body)
    refused, record = harness.records
    assert refused.status == "refused" and "deployment" in refused.detail
    assert (record.model, record.status, record.actual) == ("test-model", "ok", 20)


def test_a_test_whose_budget_is_lifted_still_refuses_unreadable_bodies(
    harness: Harness, llm: FakeLLM
) -> None:
    harness.begin()  # a budget is configured for the run (enforce), none applies to this test
    with pytest.raises(LLMBudgetExceeded, match="limit is unlimited"):
        post(httpx2, llm, b"not json")
    assert llm.received == []
