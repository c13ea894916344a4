"""Interception plumbing with real clients: SDK retries, redirects, replays, huge estimates.

Prices as in test_plugin_sdks.py: test-model costs 1 µ$ per input and 2 µ$ per output token;
the fake server's default reply bills 10 input and 5 output tokens, i.e. 20 µ$.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import respx
from fakellm import FakeLLM, Reply
from harness import Harness

from omnillm_sim.errors import OmniLLMError
from omnillm_sim.ledger import Ledger
from pytest_omnillm import LLMBudgetExceeded
from pytest_omnillm.report import redact_url

MSG = [{"role": "user", "content": "hi"}]
BODY = {"model": "test-model", "messages": MSG, "max_tokens": 20}
COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "test-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}


def oa(url: str, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=url + "/v1", api_key="k", **kw)


# -- item 3: SDKs that retry every foreign exception --------------------------------------------


def test_openai_refusal_is_an_openai_error_raised_once(harness: Harness, llm: FakeLLM) -> None:
    # openai 1.x-3.14 retry any exception that is not an OpenAIError, then raise
    # APIConnectionError: the refusal must be an OpenAIError to reach the app as itself.
    harness.begin(limit_usd="0")
    with pytest.raises(LLMBudgetExceeded) as info:
        oa(llm.url, max_retries=3).chat.completions.create(
            model="test-model", messages=MSG, max_tokens=20
        )
    assert isinstance(info.value, openai.OpenAIError)
    assert llm.received == []
    assert [r.status for r in harness.records] == ["refused"]  # one refusal, one record


def test_application_catching_openai_errors_sees_the_refusal(
    harness: Harness, llm: FakeLLM
) -> None:
    harness.begin(limit_usd="0")
    try:
        oa(llm.url, max_retries=2).chat.completions.create(
            model="test-model", messages=MSG, max_tokens=20
        )
    except openai.APIConnectionError:  # what a retrying SDK would have turned it into
        pytest.fail("the refusal was retried and wrapped as a connection error")
    except openai.OpenAIError as exc:
        assert isinstance(exc, LLMBudgetExceeded)
    assert llm.received == [] and len(harness.records) == 1


# -- item 11: redirects ------------------------------------------------------------------------


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_a_redirect_is_charged_once(harness: Harness, llm: FakeLLM, lib: Any) -> None:
    llm.script = [Reply(redirect="/v2/chat/completions")]
    with lib.Client(follow_redirects=True) as client:
        response = client.post(llm.url + "/v1/chat/completions", json=BODY)
    assert response.json()["usage"]["completion_tokens"] == 5
    assert len(llm.received) == 2 and len(llm.billed) == 1
    assert [(r.status, r.http_status, r.charged) for r in harness.records] == [
        ("redirect", 307, 0),
        ("ok", 200, 20),
    ]
    stats = harness.test.tracker.stats()
    assert (stats.spent, stats.used, stats.open_count) == (20, 20, 0)


def test_openai_sdk_following_a_redirect_is_charged_once(harness: Harness, llm: FakeLLM) -> None:
    llm.script = [Reply(redirect="/v2/chat/completions")]
    oa(llm.url).chat.completions.create(model="test-model", messages=MSG, max_tokens=20)
    assert harness.test.tracker.stats().spent == 20 == sum(r.charged for r in harness.records)


# -- item 9: replayed responses ----------------------------------------------------------------


def _respx_chat(url: str, count: int) -> None:
    # respx mocks httpx (not httpx2, which openai >= 3 uses): a raw httpx client, as many
    # applications and older SDKs have.
    with respx.mock:
        respx.post(url + "/v1/chat/completions").respond(json=COMPLETION)
        with httpx.Client() as client:
            for _ in range(count):
                client.post(url + "/v1/chat/completions", json=BODY).raise_for_status()


def test_live_responses_are_not_replayed(harness: Harness, llm: FakeLLM) -> None:
    oa(llm.url).chat.completions.create(model="test-model", messages=MSG, max_tokens=20)
    (record,) = harness.records
    assert record.replayed is False and record.charged == 20 and record.if_live is None


def test_respx_mocks_are_replayed_and_free(harness: Harness, llm: FakeLLM) -> None:
    _respx_chat(llm.url, 1)  # learn the estimate E of this request
    estimate = harness.records[0].estimate
    assert estimate is not None and estimate > 20
    # A test limit of exactly E: were a replay charged its 20 µ$, the next reservation
    # (20 + E > E) would be refused.
    harness.begin(limit_usd=f"{estimate / 1_000_000:.6f}")
    _respx_chat(llm.url, 5)
    records = harness.records
    assert len(records) == 5 and llm.received == []
    assert all(r.replayed and r.status == "ok" and r.charged == 0 for r in records)
    assert all(r.if_live == 20 for r in records)
    assert harness.test.tracker.stats().spent == 0
    assert harness.end() == []


def test_budget_replays_charges_mocks_like_live_calls(harness: Harness, llm: FakeLLM) -> None:
    harness.session.count_replays = True
    _respx_chat(llm.url, 3)
    assert [(r.replayed, r.charged) for r in harness.records] == [(True, 20)] * 3
    assert harness.test.tracker.stats().spent == 60


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_mock_transport_responses_are_replayed(harness: Harness, lib: Any) -> None:
    def handler(request: Any) -> Any:
        return lib.Response(200, json=COMPLETION)

    with lib.Client(transport=lib.MockTransport(handler)) as client:
        client.post("http://llm.invalid/v1/chat/completions", json=BODY).json()

    async def go() -> None:
        async with lib.AsyncClient(transport=lib.MockTransport(handler)) as client:
            (await client.post("http://llm.invalid/v1/chat/completions", json=BODY)).json()

    asyncio.run(go())
    assert [(r.replayed, r.if_live, r.charged) for r in harness.records] == [(True, 20, 0)] * 2


class _CustomTransport(httpx.BaseTransport):
    """A transport that is not httpx's own (it could reach the network its own way)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=COMPLETION)


def test_custom_transports_count_as_live(harness: Harness) -> None:
    with httpx.Client(transport=_CustomTransport()) as client:
        client.post("http://llm.invalid/v1/chat/completions", json=BODY).json()
    (record,) = harness.records
    assert (record.replayed, record.charged) == (False, 20)


def test_vcr_record_is_live_and_replay_is_replayed(
    harness: Harness, llm: FakeLLM, tmp_path: Path
) -> None:
    import vcr
    import vcr.patch

    # vcrpy 7 patches httpx's Client._send_single_request; vcrpy 9 also patches httpx2.
    libs = [httpx] + ([httpx2] if hasattr(vcr.patch, "_Httpx2HttpTransport_handle_request") else [])
    cassette = str(tmp_path / "chat.yaml")
    for mode in ("all", "none"):
        with vcr.use_cassette(cassette, record_mode=mode):
            for lib in libs:
                with lib.Client() as client:
                    client.post(llm.url + "/v1/chat/completions", json=BODY).json()
    n = len(libs)
    assert len(llm.received) == n  # recorded once per library, then replayed
    # vcrpy 7's stub answers a replay above our wrapper: never sent, never charged, not seen.
    replays = [(True, 0, 20)] * n if httpx2 in libs else []
    assert [(r.replayed, r.charged, r.if_live) for r in harness.records] == [
        (False, 20, None)
    ] * n + replays


# -- item 6: no budget is unlimited; a held ledger lock names its file --------------------------


def test_no_budget_never_refuses_a_huge_estimate(harness: Harness, llm: FakeLLM) -> None:
    # 10**19 output tokens at 2 µ$ is 2 x 10**19 µ$, above the seed's u64::MAX cap.
    body = {**BODY, "max_tokens": 10**19}
    with httpx2.Client() as client:
        assert client.post(llm.url + "/v1/chat/completions", json=body).status_code == 200
    (record,) = harness.records
    assert record.status == "ok" and record.estimate is not None and record.estimate > 2**64
    assert harness.end() == []


def test_a_ledger_lock_held_too_long_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "session.sqlite"
    ledger = Ledger(path, limit=1_000, busy_timeout=0.01)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(OmniLLMError, match=str(path).replace("\\", "\\\\")) as info:
            ledger.reserve(10)
        assert "lock" in str(info.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    ledger.reserve(10).settle(5)  # usable again once the lock is free
    assert ledger.stats().spent == 5
    ledger.close()


# -- item 8: credentials in URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/v1/chat", "https://api.example.com/v1/chat"),
        ("https://u:p4ss@h.example/v1?x=1", "https://REDACTED@h.example/v1?x=1"),
        (
            "https://h/v1?key=a&api-key=b&api_key=c&x=d",
            "https://h/v1?key=REDACTED&api-key=REDACTED&api_key=REDACTED&x=d",
        ),
        ("https://h/v1?sig=a&token=b&sv=2020", "https://h/v1?sig=REDACTED&token=REDACTED&sv=2020"),
        (
            "https://h/v1?X-Amz-Credential=a&X-Amz-Signature=b",
            "https://h/v1?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED",
        ),
    ],
)
def test_urls_lose_their_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(url) == expected  # again (URLs are redacted once, then remembered)


def test_a_url_seen_before_keeps_no_credential_in_memory() -> None:
    from pytest_omnillm import report

    for url in ("https://u:pw1@h/v1/chat", "https://h/v1/chat?api-key=pw2", "https://h/x#t=pw3"):
        assert "pw" not in redact_url(url) and "pw" not in redact_url(url)
    assert not any("pw" in key for key in report._redacted)


def test_records_hold_redacted_urls(harness: Harness, llm: FakeLLM) -> None:
    host = llm.url.removeprefix("http://")
    url = f"http://user:pa55word@{host}/v1/chat/completions?api-key=s3cr3t&deployment=d"
    with httpx.Client() as client:
        client.post(url, json=BODY)
    (record,) = harness.records
    assert "pa55word" not in record.url and "s3cr3t" not in record.url
    assert record.url.endswith("/v1/chat/completions?api-key=REDACTED&deployment=d")


# -- item 2: a replacement that calls our wrapper is not counted twice --------------------------


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_a_request_through_two_wrappers_is_recorded_once(
    harness: Harness, llm: FakeLLM, lib: Any
) -> None:
    from pytest_omnillm import intercept

    cls = lib.Client
    ours = cls.__dict__["_send_single_request"]

    def replacement(self: Any, request: Any) -> Any:  # like vcrpy 7 recording
        return ours(self, request)

    cls._send_single_request = replacement
    try:
        (note,) = intercept.verify()
        assert note.startswith(f"{lib.__name__}.Client._send_single_request was replaced")
        assert intercept.verify() == []  # wrapped once; the check is now quiet
        with lib.Client() as client:
            client.post(llm.url + "/v1/chat/completions", json=BODY)
            with pytest.raises(LLMBudgetExceeded, match="no model"):  # fails closed
                client.post(llm.url + "/v1/chat/completions", json={"messages": MSG})
    finally:
        cls._send_single_request = ours
    assert [r.status for r in harness.records] == ["ok", "refused"]
    assert harness.test.tracker.stats().spent == 20 and len(llm.received) == 1
