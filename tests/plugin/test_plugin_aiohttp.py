"""aiohttp client requests, budgeted like httpx ones (issue 16 item 7).

Real ``aiohttp.ClientSession`` requests against the fake server. Prices (conftest.py):
test-model costs 1 µ$ per input token and 2 µ$ per output token; the fake server bills 10
input and 5 output tokens, i.e. 20 µ$. The documented estimate is (body bytes + 8 x messages
+ 16) input tokens plus the output bound, so with ``max_tokens=20`` it is known from the body
aiohttp sends (its default JSON serializer is ``json.dumps``).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from unittest.mock import Mock

import aiohttp
import openai
import pytest
from fakellm import FakeLLM, Reply
from harness import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_omnillm import LLMBudgetExceeded, intercept

MSG = [{"role": "user", "content": "hi"}]
CHAT = {"model": "test-model", "messages": MSG, "max_tokens": 20}
CHAT_SSE = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
MESSAGES = {"model": "test-model", "max_tokens": 20, "messages": MSG}
MESSAGES_SSE = {**MESSAGES, "stream": True}


def estimate_of(body: dict[str, Any], messages: int = 1, max_output: int = 20) -> int:
    """The documented upper-bound estimate for test-model, from the body as JSON text."""
    return (len(json.dumps(body).encode()) + 8 * messages + 16) * 1 + max_output * 2


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def post(url: str, body: Any, read: Callable[[Any], Awaitable[Any]], **kw: Any) -> Any:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, **kw) as resp:
        return await read(resp)


# -- ways the application reads a body -----------------------------------------------------------


async def by_json(resp: Any) -> str:
    return json.dumps(await resp.json())


async def by_text(resp: Any) -> str:
    return str(await resp.text())


async def by_read(resp: Any) -> str:
    return bytes(await resp.read()).decode()


async def by_lines(resp: Any) -> str:
    assert isinstance(resp.content, aiohttp.StreamReader)
    return b"".join([line async for line in resp.content]).decode()


async def by_readline(resp: Any) -> str:
    out = b""
    while line := await resp.content.readline():
        out += line
    return out.decode()


async def by_chunks(resp: Any) -> str:
    return b"".join([c async for c in resp.content.iter_chunked(7)]).decode()


async def by_any(resp: Any) -> str:
    return b"".join([c async for c in resp.content.iter_any()]).decode()


async def by_http_chunks(resp: Any) -> str:
    return b"".join([c async for c, _end in resp.content.iter_chunks()]).decode()


async def by_content_read(resp: Any) -> str:
    out = b""
    while piece := await resp.content.read(5):
        out += piece
    return out.decode()


READERS = {
    "json": by_json,
    "text": by_text,
    "read": by_read,
    "lines": by_lines,
    "readline": by_readline,
    "iter_chunked": by_chunks,
    "iter_any": by_any,
    "iter_chunks": by_http_chunks,
    "content.read(5)": by_content_read,
}
SHAPES = {
    # name: (path, body, streamed body, endpoint, text that proves the application got it all)
    "openai": ("/v1/chat/completions", CHAT, CHAT_SSE, "openai/chat", "[DONE]"),
    "anthropic": ("/v1/messages", MESSAGES, MESSAGES_SSE, "anthropic/messages", "message_stop"),
}


CASES = [
    pytest.param(shape, stream, reader, id=f"{shape}-{'sse' if stream else 'json'}-{reader}")
    for shape in SHAPES
    for stream in (False, True)
    for reader in READERS
    if not (stream and reader == "json")  # an SSE body is not JSON
]


@pytest.mark.parametrize(("shape", "stream", "reader"), CASES)
def test_each_shape_and_way_of_reading_settles_to_the_billed_cost(
    harness: Harness, llm: FakeLLM, shape: str, stream: bool, reader: str
) -> None:
    path, body, sse_body, endpoint, last = SHAPES[shape]
    sent = sse_body if stream else body
    text = run(post(llm.url + path, sent, READERS[reader]))
    assert (last in text) if stream else ('"hi"' in text)
    assert len(llm.received) == 1 and len(llm.billed) == 1
    assert json.loads(llm.received[0].raw) == sent  # the body went out unchanged
    (record,) = harness.records
    assert (record.endpoint, record.stream, record.status) == (endpoint, stream, "ok")
    assert record.replayed is False
    assert record.tokens is not None and (record.tokens["input"], record.tokens["output"]) == (
        10,
        5,
    )
    assert record.actual == 20 == record.charged  # 10 x 1 + 5 x 2 µ$
    assert record.estimate == estimate_of(sent)
    assert harness.end() == []
    stats = harness.test.tracker.stats()
    assert (stats.spent, stats.open_count) == (20, 0)


def test_a_data_body_and_session_base_url_and_params(harness: Harness, llm: FakeLLM) -> None:
    async def go() -> Any:
        async with aiohttp.ClientSession(base_url=llm.url) as session:
            resp = await session.post(
                "/v1/chat/completions", data=json.dumps(CHAT), params={"x": "1"}
            )
            return await resp.json()

    assert run(go())["usage"]["completion_tokens"] == 5
    (record,) = harness.records
    assert (record.status, record.charged, record.estimate) == ("ok", 20, estimate_of(CHAT))
    assert record.url.endswith("/v1/chat/completions?x=1")


def test_compressed_request_bodies_are_read(harness: Harness, llm: FakeLLM) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session, session.post(
            llm.url + "/v1/chat/completions",
            data=gzip.compress(json.dumps(CHAT).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        ) as resp:
            await resp.read()

    run(go())
    assert [(r.status, r.charged, r.estimate) for r in harness.records] == [
        ("ok", 20, estimate_of(CHAT))
    ]


def test_a_body_aiohttp_compresses_is_estimated_from_its_json(harness: Harness) -> None:
    # compress= sends a chunked body the fake server cannot read: a refusal shows the estimate.
    harness.begin(limit_usd="0")
    with pytest.raises(LLMBudgetExceeded) as info:
        run(post("http://127.0.0.1:9/v1/chat/completions", CHAT, by_read, compress="deflate"))
    assert info.value.requested == estimate_of(CHAT)


def test_a_compressed_response_is_settled(harness: Harness, llm: FakeLLM) -> None:
    llm.default = Reply(gzip=True)
    text = run(post(llm.url + "/v1/chat/completions", CHAT_SSE, by_lines))
    assert "[DONE]" in text
    assert [(r.status, r.charged) for r in harness.records] == [("ok", 20)]


# -- refusal before sending -------------------------------------------------------------------


def test_a_request_over_budget_is_refused_before_it_is_sent(
    harness: Harness, llm: FakeLLM
) -> None:
    estimate = estimate_of(CHAT)
    harness.begin(limit_usd=f"{(estimate + 19) / 1_000_000:.6f}")  # one call fits, two do not
    run(post(llm.url + "/v1/chat/completions", CHAT, by_json))
    with pytest.raises(LLMBudgetExceeded) as info:
        run(post(llm.url + "/v1/chat/completions", CHAT, by_json))
    assert len(llm.received) == 1, "a refused request reached the server"
    err = info.value
    assert (err.requested, err.limit, err.used, err.scope, err.model) == (
        estimate, estimate + 19, 20, "test", "test-model"
    )
    assert "LLM test budget exceeded in harness::test: request to test-model" in str(err)
    assert [r.status for r in harness.records] == ["ok", "refused"]


def test_an_unreadable_body_under_a_budget_is_refused(harness: Harness, llm: FakeLLM) -> None:
    harness.begin(limit_usd="1")
    with pytest.raises(LLMBudgetExceeded, match="not a JSON object"):
        form = aiohttp.FormData({"a": "b"})
        run(post(llm.url + "/v1/chat/completions", None, by_read, data=form))
    assert llm.received == []


# -- fail closed --------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_null_usage_keeps_the_estimate(harness: Harness, llm: FakeLLM, stream: bool) -> None:
    llm.default = Reply(patch_usage={"prompt_tokens": None, "completion_tokens": None})
    body = CHAT_SSE if stream else CHAT
    run(post(llm.url + "/v1/chat/completions", body, by_read))
    (record,) = harness.records
    assert record.status == "unparsed" and record.charged == record.estimate == estimate_of(body)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_stream_abandoned_early_is_charged_the_estimate(
    harness: Harness, llm: FakeLLM, shape: str
) -> None:
    path, _body, sse_body, _endpoint, _last = SHAPES[shape]

    async def first_line(resp: Any) -> bytes:
        return bytes(await resp.content.readline())

    assert run(post(llm.url + path, sse_body, first_line)).startswith(b"event: " if
                                                                      shape == "anthropic"
                                                                      else b"data: ")
    (record,) = harness.records
    assert record.status == "no-usage" and record.charged == record.estimate == estimate_of(
        sse_body
    )
    assert harness.test.tracker.stats().open_count == 0  # settled when the app let it go


def test_a_body_never_read_is_charged_the_estimate(harness: Harness, llm: FakeLLM) -> None:
    async def ignore(resp: Any) -> None:
        return None

    run(post(llm.url + "/v1/chat/completions", CHAT, ignore))  # released unread

    async def leak() -> None:  # neither read nor released: open until the test ends
        async with aiohttp.ClientSession() as session:
            await session.post(llm.url + "/v1/chat/completions", json=CHAT)

    run(leak())
    harness.end()
    # As for httpx: an empty body read at release is "unparsed"; an open one "no-usage".
    assert [(r.status, r.charged) for r in harness.records] == [
        ("unparsed", estimate_of(CHAT)),
        ("no-usage", estimate_of(CHAT)),
    ]


def test_connection_refused_releases_the_reservation(harness: Harness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nobody listens
    with pytest.raises(aiohttp.ClientConnectorError):
        run(post(f"http://127.0.0.1:{port}/v1/chat/completions", CHAT, by_read))
    (record,) = harness.records
    assert record.status == "failed" and record.charged == 0 and "never sent" in record.detail
    assert harness.test.tracker.stats().used == 0


def test_an_error_status_is_released(harness: Harness, llm: FakeLLM) -> None:
    llm.script = [Reply(status=429)]
    run(post(llm.url + "/v1/chat/completions", CHAT, by_read))
    assert [(r.status, r.http_status, r.charged) for r in harness.records] == [
        ("http-error", 429, 0)
    ]


# -- redirects ----------------------------------------------------------------------------------


def test_a_followed_redirect_is_charged_once(harness: Harness, llm: FakeLLM) -> None:
    llm.script = [Reply(redirect="/v2/chat/completions")]
    run(post(llm.url + "/v1/chat/completions", CHAT, by_json))
    assert len(llm.received) == 2 and len(llm.billed) == 1
    assert [(r.status, r.charged) for r in harness.records] == [("ok", 20)]


def test_an_unfollowed_redirect_is_released(harness: Harness, llm: FakeLLM) -> None:
    llm.script = [Reply(redirect="/v2/chat/completions")]
    run(post(llm.url + "/v1/chat/completions", CHAT, by_read, allow_redirects=False))
    assert [(r.status, r.http_status, r.charged) for r in harness.records] == [
        ("redirect", 307, 0)
    ]


# -- replays, and a replaced _request -----------------------------------------------------------


COMPLETION = {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}


class Canned:
    """A response built without a connection, the way aioresponses builds its mocks."""

    def __init__(self, payload: Any) -> None:
        self.status = 200
        self.headers = {"Content-Type": "application/json"}
        self.content = aiohttp.StreamReader(Mock(), 2**16, loop=asyncio.get_running_loop())
        self.content.feed_data(json.dumps(payload).encode())
        self.content.feed_eof()

    async def json(self) -> Any:
        return json.loads(await self.content.read())

    def release(self) -> None:
        pass

    async def __aenter__(self) -> Canned:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


@pytest.mark.parametrize("count_replays", [False, True])
def test_a_mock_in_place_of_request_is_replayed(
    harness: Harness, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, count_replays: bool
) -> None:
    async def mocked(self: Any, method: str, url: Any, **kwargs: Any) -> Canned:
        return Canned(COMPLETION)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", mocked)
    intercept.verify()  # what the plugin does at each test's setup and call
    harness.session.count_replays = count_replays
    assert json.loads(run(post(llm.url + "/v1/chat/completions", CHAT, by_json))) == COMPLETION
    assert llm.received == []
    charged = 20 if count_replays else 0
    assert [(r.replayed, r.status, r.if_live, r.charged) for r in harness.records] == [
        (True, "ok", None if count_replays else 20, charged)
    ]


def test_aioresponses_mocks_are_replayed_and_free(harness: Harness, llm: FakeLLM) -> None:
    aioresponses = pytest.importorskip("aioresponses", reason="make test-compat runs it")
    url = "http://llm.invalid/v1/chat/completions"
    # Started inside the test body, after the plugin's verify(): its start() wraps it again.
    with aioresponses.aioresponses() as mocked:
        mocked.post(url, payload=COMPLETION, repeat=True)
        for _ in range(2):
            assert json.loads(run(post(url, CHAT, by_json))) == COMPLETION
    assert llm.received == []
    assert [(r.replayed, r.status, r.if_live, r.charged) for r in harness.records] == [
        (True, "ok", 20, 0)
    ] * 2
    harness.session.count_replays = True
    with aioresponses.aioresponses() as mocked:
        mocked.post(url, payload=COMPLETION)
        run(post(url, CHAT, by_json))
    assert (harness.records[-1].replayed, harness.records[-1].charged) == (True, 20)
    assert intercept.verify() == []  # stop() put our wrapper back


def test_aioresponses_passthrough_is_live_and_counted_once(harness: Harness, llm: FakeLLM) -> None:
    aioresponses = pytest.importorskip("aioresponses", reason="make test-compat runs it")
    with aioresponses.aioresponses(passthrough=[llm.url]):
        run(post(llm.url + "/v1/chat/completions", CHAT, by_json))
    assert [(r.replayed, r.status, r.charged) for r in harness.records] == [(False, "ok", 20)]


def test_verify_wraps_a_replaced_request_method_again(
    harness: Harness, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = aiohttp.ClientSession.__dict__["_request"]

    async def foreign(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await ours.__wrapped__(self, *args, **kwargs)  # skips our wrapper

    monkeypatch.setattr(aiohttp.ClientSession, "_request", foreign)
    notes = intercept.verify()
    assert any("aiohttp.ClientSession._request was replaced by" in n for n in notes)
    run(post(llm.url + "/v1/chat/completions", CHAT, by_json))
    assert [(r.status, r.charged) for r in harness.records] == [("ok", 20)]
    assert intercept.verify() == []  # wrapped once


def test_verify_fails_the_run_when_request_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aiohttp.ClientSession, "_request")
    with pytest.raises(RuntimeError, match=r"aiohttp\.ClientSession\._request was removed"):
        intercept.verify()


# -- the openai SDK on its aiohttp transport ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_default_aiohttp_client_is_counted_once(
    harness: Harness, llm: FakeLLM, stream: bool
) -> None:
    async def go() -> None:
        async with openai.AsyncOpenAI(
            base_url=llm.url + "/v1", api_key="k", max_retries=0,
            http_client=openai.DefaultAioHttpClient(),
        ) as client:
            extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
            r = await client.chat.completions.create(
                model="test-model", messages=MSG, max_tokens=20, **(extra if stream else {})
            )
            if stream:
                assert [c async for c in r]
            else:
                assert r.choices[0].message.content == "hi"

    run(go())
    assert len(llm.received) == 1
    (record,) = harness.records  # seen by httpx2's wrapper; aiohttp's below it stays out
    assert (record.status, record.charged, record.stream) == ("ok", 20, stream)


# -- through the plugin (pytester) --------------------------------------------------------------

INNER_CONFTEST = """
import asyncio, json
from unittest.mock import Mock

import aiohttp, pytest

URL = {url!r}
CHAT = {chat!r}


@pytest.fixture
def call():
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.post(URL + "/v1/chat/completions", json=CHAT) as resp:
                return (await resp.json())["choices"][0]["message"]["content"]

    return lambda: asyncio.run(go())


class Canned:
    status = 200
    headers = {{"Content-Type": "application/json"}}

    def __init__(self):
        self.content = aiohttp.StreamReader(Mock(), 2**16, loop=asyncio.get_running_loop())
        self.content.feed_data(json.dumps({{"usage": {{"prompt_tokens": 10,
                                                     "completion_tokens": 5}}}}).encode())
        self.content.feed_eof()

    async def json(self):
        return json.loads(await self.content.read())


@pytest.fixture
def mocked(monkeypatch):
    async def answer(self, method, url, **kwargs):
        return Canned()

    monkeypatch.setattr(aiohttp.ClientSession, "_request", answer)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, llm: FakeLLM, prices_file: Any) -> pytest.Pytester:
    pytester.makeconftest(INNER_CONFTEST.format(url=llm.url, chat=CHAT))
    pytester.makeini(f"[pytest]\nllm_prices = {prices_file}\n")
    return pytester


def test_the_plugin_budgets_aiohttp_calls(inner: pytest.Pytester, llm: FakeLLM) -> None:
    inner.makepyfile(
        """
        import pytest

        def test_two(call):
            assert call() == "hi"
            call()
        """
    )
    # E + 20 µ$ (in USD) admits the first call (E reserved, 20 charged) and refuses the second.
    limit = (estimate_of(CHAT) + 19) / 1_000_000
    result = inner.runpytest(f"--llm-budget={limit:.6f}")
    result.assert_outcomes(failed=1)
    assert len(llm.received) == 1
    result.stdout.fnmatch_lines(
        ["*LLMBudgetExceeded: LLM test budget exceeded in *test_two: request to test-model*"]
    )


def test_the_plugin_reports_a_mocked_aiohttp_call_as_replayed(
    inner: pytest.Pytester, llm: FakeLLM
) -> None:
    inner.makepyfile(
        """
        import aiohttp, asyncio

        def test_mocked(mocked):
            async def go():
                async with aiohttp.ClientSession() as session:
                    resp = await session.post("http://llm.invalid/v1/chat/completions",
                                              json={"model": "test-model", "messages": [],
                                                    "max_tokens": 20})
                    return await resp.json()

            assert asyncio.run(go())["usage"]["completion_tokens"] == 5
        """
    )
    result = inner.runpytest("--llm-budget=1")
    result.assert_outcomes(passed=1)
    assert llm.received == []
    result.stdout.fnmatch_lines(
        [
            "session: $0.000000 spent in 1 LLM request(s)*",
            "replayed from mocks/cassettes: $0.000020 if live, 1 request(s), not charged*",
        ]
    )
    counted = inner.runpytest("--llm-budget=1", "--llm-budget-replays")
    counted.stdout.fnmatch_lines(["session: $0.000020 spent in 1 LLM request(s)*"])


def test_raise_for_status_releases_an_error_status(harness: Harness, llm: FakeLLM) -> None:
    llm.script = [Reply(status=500)]

    async def go() -> None:
        async with aiohttp.ClientSession(raise_for_status=True) as session:
            await session.post(llm.url + "/v1/chat/completions", json=CHAT)

    with pytest.raises(aiohttp.ClientResponseError):
        run(go())
    assert [(r.status, r.http_status, r.charged) for r in harness.records] == [
        ("http-error", 500, 0)
    ]


def test_an_async_iterable_body_is_read_and_sent_unchanged(
    harness: Harness, llm: FakeLLM
) -> None:
    raw = json.dumps(CHAT).encode()

    async def pieces() -> Any:
        for i in range(0, len(raw), 10):
            yield raw[i : i + 10]

    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(llm.url + "/v1/chat/completions", data=pieces())
            return await resp.json()

    assert run(go())["usage"]["completion_tokens"] == 5
    assert llm.received[0].raw == raw
    assert [(r.status, r.charged, r.estimate) for r in harness.records] == [
        ("ok", 20, estimate_of(CHAT))
    ]


def test_concurrent_streams_settle_each_to_its_own_bill(harness: Harness, llm: FakeLLM) -> None:
    async def go() -> list[str]:
        async with aiohttp.ClientSession() as session:

            async def one(body: dict[str, Any]) -> str:
                async with session.post(llm.url + "/v1/chat/completions", json=body) as resp:
                    return await by_chunks(resp)

            return await asyncio.gather(*(one(CHAT_SSE) for _ in range(4)))

    assert all("[DONE]" in text for text in run(go()))
    assert [(r.status, r.charged) for r in harness.records] == [("ok", 20)] * 4


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(1, 300), reader=st.sampled_from(["iter_chunked", "read(n)", "readexactly"])
)
def test_any_read_size_gives_the_app_identical_bytes_and_settles(
    harness: Harness, llm: FakeLLM, size: int, reader: str
) -> None:
    llm.reset()
    harness.begin()

    async def read(resp: Any) -> bytes:
        out = b""
        if reader == "iter_chunked":
            async for piece in resp.content.iter_chunked(size):
                out += piece
            return out
        while not resp.content.at_eof():
            try:
                if reader == "read(n)":
                    out += await resp.content.read(size)
                else:
                    out += await resp.content.readexactly(size)
            except asyncio.IncompleteReadError as exc:
                out += exc.partial
        return out

    got = run(post(llm.url + "/v1/chat/completions", CHAT_SSE, read))
    assert [hashlib.sha256(got).hexdigest()] == llm.sent_digests
    assert [(r.status, r.charged) for r in harness.records] == [("ok", 20)]


def test_module_level_request_and_secrets_in_the_url(harness: Harness, llm: FakeLLM) -> None:
    host = llm.url.removeprefix("http://")
    url = f"http://user:pw-planted-1@{host}/v1/chat/completions?key=planted-2"

    async def go() -> Any:
        async with aiohttp.request("POST", url, json=CHAT) as resp:
            return await resp.json()

    assert run(go())["usage"]["completion_tokens"] == 5
    (record,) = harness.records
    assert (record.status, record.charged) == ("ok", 20)
    assert "planted" not in json.dumps(record.as_dict())
