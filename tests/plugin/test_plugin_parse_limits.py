"""Huge numbers and huge streams: clean refusals, overshoot failures, bounded parsing state.

* An estimate of 2^63 µ$ or more cannot be reserved on the shared (SQLite) ledger: under a
  budget it is refused as `LLMBudgetExceeded`, never a raw ``OverflowError``; a reply claiming
  such a cost is charged at the estimate and fails the test as an overshoot.
* A stream with one enormous line, or a gzip bomb, reaches the application byte for byte while
  the plugin keeps at most `MAX_EVENT_BYTES` of it.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import tracemalloc
import zlib
from pathlib import Path
from typing import Any
from unittest import mock

import brotli
import httpx
import httpx2
import openai
import pytest
from fakellm import FakeLLM, Reply
from harness import Harness
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.ledger import Ledger
from pytest_omnillm import LLMBudgetExceeded, adapters
from pytest_omnillm.adapters import MAX_EVENT_BYTES, Endpoint, UsageReader

MSG = [{"role": "user", "content": "hi"}]
HUGE = 5 * 10**18  # max_tokens x 2 µ$ per output token = 10^19 µ$ > 2^63


def oa(llm: FakeLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.url + "/v1", api_key="k", max_retries=0)


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    with Ledger(tmp_path / "session.sqlite", limit=10**12, name="session LLM budget") as db:
        yield db


def with_ledger(harness: Harness, ledger: Ledger) -> None:
    """The session budget is the shared ledger, as under pytest-xdist; the test has no limit."""
    harness.session.session_budget = ledger
    harness.begin()


@pytest.mark.parametrize("max_tokens", [HUGE, float(HUGE)], ids=["int", "float"])
def test_an_estimate_beyond_what_a_budget_can_hold_is_refused_cleanly(
    harness: Harness, llm: FakeLLM, ledger: Ledger, max_tokens: Any
) -> None:
    with_ledger(harness, ledger)
    with pytest.raises(LLMBudgetExceeded, match=r"beyond the \$\d+\.\d+ a budget can track"):
        oa(llm).chat.completions.create(model="test-model", messages=MSG, max_tokens=max_tokens)
    assert llm.received == []
    (record,) = harness.records
    assert record.status == "refused"
    assert len(harness.end()) == 1  # the test fails
    s = ledger.stats()
    assert (s.used, s.open_count) == (0, 0)


def test_without_a_budget_a_huge_estimate_passes_and_is_counted(
    harness: Harness, llm: FakeLLM
) -> None:
    harness.session.enforce = False
    r = oa(llm).chat.completions.create(model="test-model", messages=MSG, max_tokens=HUGE)
    assert r.choices[0].message.content == "hi"
    (record,) = harness.records
    # No budget is unlimited: the request is reserved at its (huge) estimate, then settled.
    assert record.status == "ok" and record.estimate is not None and record.estimate > 2**63
    assert harness.end() == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_reply_claiming_absurd_usage_fails_the_test_as_an_overshoot(
    harness: Harness, llm: FakeLLM, ledger: Ledger, stream: bool
) -> None:
    with_ledger(harness, ledger)
    llm.default = Reply(output=2**70)
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    r = oa(llm).chat.completions.create(
        model="test-model", messages=MSG, max_tokens=20, **(extra if stream else {})
    )
    if stream:
        assert [c for c in r]
    (record,) = harness.records
    assert record.status == "unparsed" and record.charged == record.estimate
    assert record.actual == 10 + 2 * 2**70  # what the reply claimed, for the report
    problems = harness.end()
    assert len(problems) == 1 and "overshoot" in problems[0] and "#1" in problems[0]
    s = ledger.stats()
    assert (s.used, s.spent, s.open_count) == (record.estimate, record.estimate, 0)


# -- huge streams ------------------------------------------------------------------------------


def _raw_stream(lib: Any, url: str, body: dict[str, Any]) -> tuple[str, int]:
    """Stream a reply as raw bytes (nothing decoded by the client); its SHA-256 and size."""
    digest, size = hashlib.sha256(), 0
    with (
        lib.Client(headers={"accept-encoding": "gzip"}) as client,
        client.stream("POST", url, json=body) as response,
    ):
        for chunk in response.iter_raw():
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


STREAM_BODY = {
    "model": "test-model",
    "messages": MSG,
    "max_tokens": 20,
    "stream": True,
    "stream_options": {"include_usage": True},
}


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_a_16_mb_line_reaches_the_application_unchanged_and_usage_is_still_read(
    harness: Harness, llm: FakeLLM, lib: Any
) -> None:
    llm.default = Reply(big_chunk=16 * 2**20)
    with lib.Client() as client, client.stream(
        "POST", llm.url + "/v1/chat/completions", json=STREAM_BODY
    ) as response:
        raw = b"".join(response.iter_bytes())
        text = [json.loads(line[6:]) for line in raw.split(b"\n") if line[6:7] == b"{"]
    assert hashlib.sha256(raw).hexdigest() == llm.sent_digests[0]
    assert len(text[0]["choices"][0]["delta"]["content"]) == 16 * 2**20
    (record,) = harness.records
    # The long line was skipped, the usage chunk after it was read.
    assert (record.status, record.actual) == ("ok", 20), record.detail


def test_a_gzip_bomb_in_a_stream_does_not_grow_memory(harness: Harness, llm: FakeLLM) -> None:
    bomb = 128 * 2**20  # one SSE line of 128 MiB, about 130 KB compressed
    llm.default = Reply(big_chunk=bomb, gzip=True)
    tracemalloc.start()
    try:
        digest, size = _raw_stream(httpx2, llm.url + "/v1/chat/completions", STREAM_BODY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size < bomb // 100  # the client read it compressed, byte for byte as sent
    assert digest == llm.sent_digests[0]
    (record,) = harness.records
    assert (record.status, record.actual) == ("ok", 20), record.detail
    # The plugin inflates it in bounded pieces and keeps at most one event's worth.
    assert peak < 4 * MAX_EVENT_BYTES, f"peak {peak} bytes while reading the stream"


# -- the reader alone: linear work, bounded state ----------------------------------------------


def _chat_reader() -> UsageReader:
    return UsageReader(Endpoint("openai", "chat", "/v1/chat/completions"), "text/event-stream")


USAGE_EVENT = (
    b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}\n\n'
)


def test_reader_skips_a_line_longer_than_the_cap_in_one_pass() -> None:
    line = b"data: " + b"x" * (2 * MAX_EVENT_BYTES) + b"\n\n"
    stream = line + USAGE_EVENT
    reader = _chat_reader()
    for i in range(0, len(stream), 65536):
        reader.feed(stream[i : i + 65536])
    usage = reader.finish()
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (10, 5)
    assert reader.peak_retained <= MAX_EVENT_BYTES and reader.retained == 0


CAP = 128
EVENT = st.one_of(
    st.tuples(st.just("usage"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(
        st.just("filler"),
        st.one_of(st.integers(0, 3 * CAP), st.integers(CAP - 8, CAP + 2)),  # near the cap
        st.sampled_from([b"\n", b"\r\n", b"\r"]),
    ),
)


def _event_bytes(event: tuple[Any, ...]) -> bytes:
    if event[0] == "usage":
        usage = {"prompt_tokens": event[1], "completion_tokens": event[2]}
        return b"data: " + json.dumps({"usage": usage}).encode() + b"\n\n"
    return b"data: " + b"y" * event[1] + event[2] * 2


@given(events=st.lists(EVENT, max_size=8), cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_reader_matches_a_whole_stream_model_for_any_chunking(
    events: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    """Model: the last usage event wins unless an event longer than the cap follows it."""
    stream = b"".join(_event_bytes(e) for e in events)
    expected: tuple[int, int] | None = None
    unsure = False
    for e in events:
        line = _event_bytes(e).splitlines()[0]
        if len(line) > CAP:
            unsure = True
        elif e[0] == "usage":
            expected, unsure = (e[1], e[2]), False
    with mock.patch.object(adapters, "MAX_EVENT_BYTES", CAP):
        reader = _chat_reader()
        bounds = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
        for a, b in itertools.pairwise(bounds):
            reader.feed(stream[a:b])
        if unsure:
            with pytest.raises(ValueError, match="skipped"):
                reader.finish()
            return
        usage = reader.finish()
    assert (None if usage is None else (usage.input_tokens, usage.output_tokens)) == expected
    assert reader.peak_retained <= CAP


def test_reader_does_not_trust_usage_when_a_skipped_event_follows_it() -> None:
    reader = _chat_reader()
    reader.feed(USAGE_EVENT)
    reader.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1) + b"\n\n")
    with pytest.raises(ValueError, match="skipped"):
        reader.finish()


def _zstd_compress(data: bytes) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    return bytes(zstd.compress(data))


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", lambda b: brotli.compress(b, quality=4)),
        ("zstd", _zstd_compress),
    ],
)
def test_reader_inflates_a_bomb_in_bounded_pieces(encoding: str, pack: Any) -> None:
    payload = b"data: " + b"x" * (4 * MAX_EVENT_BYTES) + b"\n\n" + USAGE_EVENT
    packed = pack(payload)
    assert len(packed) < 2**20
    reader = UsageReader(
        Endpoint("openai", "chat", "/v1/chat/completions"), "text/event-stream", encoding
    )
    tracemalloc.start()
    try:
        reader.feed(packed)  # one chunk that inflates to 32 MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_EVENT_BYTES
    usage = reader.finish()
    assert usage is not None and usage.output_tokens == 5


def test_a_usage_key_spelled_with_escapes_is_still_read() -> None:
    # Cumulative usage in every chunk (as some OpenAI-compatible servers send): a final usage
    # hidden behind a JSON escape must not leave an earlier, smaller one as "the last".
    reader = _chat_reader()
    reader.feed(b'data: {"usage":{"prompt_tokens":10,"completion_tokens":1}}\n\n')
    reader.feed(b'data: {"usag\\u0065":{"prompt_tokens":10,"completion_tokens":500}}\n\n')
    usage = reader.finish()
    assert usage is not None and usage.output_tokens == 500
