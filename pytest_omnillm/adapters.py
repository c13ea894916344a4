"""What a provider request will cost at most, and what its response says it cost.

Pure functions over bytes and JSON, no HTTP client: `match_endpoint` recognises an endpoint by
method and path (on any host), `parse_request` turns a request body into an `EstimateRequest`
for the ``upper-bound`` estimator, and `UsageReader` turns a response body — JSON or a
server-sent-event stream, fed in chunks as the application reads it — into a `Usage`.

Recognised endpoints (POST; the path may have any prefix, e.g. ``/v1``, ``/openai``):

=====================  ===============  ===============================================
path ends with         provider/kind    output bound in the body
=====================  ===============  ===============================================
``/chat/completions``  openai/chat      ``max_completion_tokens`` or ``max_tokens``, x ``n``
``/completions``       openai/complete  ``max_tokens`` (API default 16), x max(``n``, ``best_of``)
``/responses``         openai/responses ``max_output_tokens``
``/embeddings``        openai/embed     none needed: embeddings produce no output tokens
``/messages``          anthropic/msgs   ``max_tokens`` (required by the API)
=====================  ===============  ===============================================

The prompt bound is the size of the whole JSON body in bytes (every prompt byte is in it; a
byte-level tokenizer never emits a token for less than a byte), plus the estimator's
per-message template allowance. Images referenced by URL are not bounded by their URL's size:
such requests may cost more than the estimate, which the plugin's teardown check reports.

Usage (`Usage.input_tokens` excludes cache reads and writes):

* OpenAI chat/completions/embeddings: ``prompt_tokens`` minus
  ``prompt_tokens_details.cached_tokens`` (a subset), cached tokens as cache reads,
  ``completion_tokens`` (reasoning included) as output. Streams: the chunk carrying ``usage``
  (sent only when the request asked for ``stream_options.include_usage``).
* OpenAI responses: ``input_tokens`` / ``input_tokens_details.cached_tokens`` /
  ``output_tokens``; streams: the ``response.completed`` (or ``.incomplete``/``.failed``)
  event's ``response.usage``.
* Anthropic: ``input_tokens``, ``cache_read_input_tokens``, ``cache_creation`` 5-minute and
  1-hour writes (or ``cache_creation_input_tokens`` as 5-minute writes), ``output_tokens``.
  Streams: the ``message_start`` usage with fields replaced by the *last* ``message_delta``
  usage (cumulative counts, never summed); no ``message_delta`` means no final usage.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from omnillm_sim.estimate import EstimateRequest, omnillm_prompt_bytes
from omnillm_sim.pricing import Usage

__all__ = [
    "Endpoint",
    "ParsedRequest",
    "UsageParseError",
    "UsageReader",
    "match_endpoint",
    "parse_request",
    "usage_from_anthropic",
    "usage_from_openai",
]

Provider = Literal["openai", "anthropic"]
Kind = Literal["chat", "completions", "responses", "embeddings", "messages"]

_SUFFIXES: tuple[tuple[str, Provider, Kind], ...] = (
    ("/chat/completions", "openai", "chat"),
    ("/completions", "openai", "completions"),
    ("/responses", "openai", "responses"),
    ("/embeddings", "openai", "embeddings"),
    ("/messages", "anthropic", "messages"),
)
_LEGACY_COMPLETIONS_DEFAULT_MAX_TOKENS = 16
_MAX_BODY = 64 * 1024 * 1024  # a JSON body larger than this is not buffered for parsing


class UsageParseError(ValueError):
    """A response body or usage object the plugin cannot understand (reported, never raised
    into the application)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A recognised LLM endpoint: provider, kind and the request path it was matched on."""

    provider: Provider
    kind: Kind
    path: str

    @property
    def name(self) -> str:
        """``openai/chat``, ``anthropic/messages``, ..."""
        return f"{self.provider}/{self.kind}"


def match_endpoint(method: str, path: str) -> Endpoint | None:
    """The endpoint a request goes to, or ``None`` when it is not a priced LLM call."""
    if method.upper() != "POST":
        return None
    trimmed = path.rstrip("/")
    for suffix, provider, kind in _SUFFIXES:
        if trimmed.endswith(suffix):
            return Endpoint(provider, kind, path)
    return None


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request body reduced to what pricing needs; ``model`` is ``None`` when absent."""

    endpoint: Endpoint
    model: str | None
    estimate_request: EstimateRequest | None
    stream: bool


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _output_bound(kind: Kind, body: Mapping[str, Any]) -> int | None:
    if kind == "embeddings":
        return 0
    if kind == "responses":
        return _count(body.get("max_output_tokens"))
    if kind == "messages":
        return _count(body.get("max_tokens"))
    choices = _count(body.get("n")) or 1
    if kind == "chat":
        per_choice = _count(body.get("max_completion_tokens"))
        if per_choice is None:
            per_choice = _count(body.get("max_tokens"))
        return None if per_choice is None else per_choice * choices
    # legacy completions: the API's default max_tokens is 16; best_of candidates are billed
    per_choice = _count(body.get("max_tokens"))
    if per_choice is None:
        per_choice = _LEGACY_COMPLETIONS_DEFAULT_MAX_TOKENS
    best_of = _count(body.get("best_of")) or 1
    return per_choice * max(choices, best_of)


def _messages(kind: Kind, body: Mapping[str, Any]) -> int:
    field = {"chat": "messages", "messages": "messages", "responses": "input"}.get(kind, "input")
    if kind == "completions":
        field = "prompt"
    value = body.get(field)
    count = len(value) if isinstance(value, list) else 1
    if kind == "messages" and body.get("system"):
        count += 1
    return max(count, 1)


def parse_request(endpoint: Endpoint, body: bytes) -> ParsedRequest:
    """Read model, output bound, message count and ``stream`` from a request body.

    A body that is not a JSON object gives ``model=None`` and no estimate request (the
    provider will reject it; the plugin lets it through and reports it).
    """
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return ParsedRequest(endpoint, None, None, False)
    model = data.get("model")
    stream = data.get("stream") is True
    if not isinstance(model, str) or not model.strip():
        return ParsedRequest(endpoint, None, None, stream)
    request = EstimateRequest(
        model=model,
        prompt_bytes=len(body),
        max_output_tokens=_output_bound(endpoint.kind, data),
        messages=_messages(endpoint.kind, data),
        omnillm_prompt_bytes=_omnillm_bytes(endpoint.kind, data),
    )
    return ParsedRequest(endpoint, model, request, stream)


def _omnillm_bytes(kind: Kind, body: Mapping[str, Any]) -> int | None:
    """omnillm's own prompt size of the body (for the ``omnillm`` estimator), if it has one."""
    wire = {"chat": "openai-chat", "messages": "anthropic-messages"}.get(kind)
    if wire is None or not isinstance(body.get("messages"), list):
        return None
    return omnillm_prompt_bytes(body, wire)  # type: ignore[arg-type]


# -- usage -------------------------------------------------------------------------------------


def _tokens(usage: Mapping[str, Any], key: str, where: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise UsageParseError(f"{where}.{key}: expected a token count, got {value!r}")
    return value


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else {}


def usage_from_openai(usage: object) -> Usage:
    """An OpenAI ``usage`` object (chat/completions/embeddings or responses style) as `Usage`.

    Raises:
        UsageParseError: not an object, or a count that is not an int >= 0.
    """
    if not isinstance(usage, Mapping):
        raise UsageParseError(f"usage: expected an object, got {usage!r}")
    if "prompt_tokens" in usage:
        prompt = _tokens(usage, "prompt_tokens", "usage")
        details = _details(usage, "prompt_tokens_details")
        cached = _tokens(details, "cached_tokens", "usage.prompt_tokens_details")
        output = _tokens(usage, "completion_tokens", "usage")
    elif "input_tokens" in usage:
        prompt = _tokens(usage, "input_tokens", "usage")
        details = _details(usage, "input_tokens_details")
        cached = _tokens(details, "cached_tokens", "usage.input_tokens_details")
        output = _tokens(usage, "output_tokens", "usage")
    else:
        raise UsageParseError(f"usage: no prompt_tokens or input_tokens in {dict(usage)!r}")
    if cached > prompt:
        raise UsageParseError(f"usage: cached_tokens={cached} > prompt tokens {prompt}")
    return Usage(
        input_tokens=prompt - cached, output_tokens=output, cache_read_tokens=cached, shape="openai"
    )


def usage_from_anthropic(usage: object) -> Usage:
    """An Anthropic ``usage`` object as `Usage` (``input_tokens`` already excludes the cache).

    Raises:
        UsageParseError: not an object, or a count that is not an int >= 0.
    """
    if not isinstance(usage, Mapping):
        raise UsageParseError(f"usage: expected an object, got {usage!r}")
    if "input_tokens" not in usage or "output_tokens" not in usage:
        raise UsageParseError(f"usage: no input_tokens/output_tokens in {dict(usage)!r}")
    creation = _details(usage, "cache_creation")
    if creation:
        write_5m = _tokens(creation, "ephemeral_5m_input_tokens", "usage.cache_creation")
        write_1h = _tokens(creation, "ephemeral_1h_input_tokens", "usage.cache_creation")
    else:
        write_5m = _tokens(usage, "cache_creation_input_tokens", "usage")
        write_1h = 0
    return Usage(
        input_tokens=_tokens(usage, "input_tokens", "usage"),
        output_tokens=_tokens(usage, "output_tokens", "usage"),
        cache_read_tokens=_tokens(usage, "cache_read_input_tokens", "usage"),
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        shape="anthropic",
    )


class _Decoder:
    """Undo ``Content-Encoding`` (identity, gzip, deflate) on raw response bytes."""

    def __init__(self, encoding: str) -> None:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "deflate", "x-gzip")):
            raise UsageParseError(f"unsupported Content-Encoding {encoding!r}")
        self._z: Any = None
        if codings:
            wbits = zlib.MAX_WBITS | 16 if codings[0] in ("gzip", "x-gzip") else zlib.MAX_WBITS
            self._z = zlib.decompressobj(wbits)

    def decode(self, data: bytes) -> bytes:
        if self._z is None:
            return data
        try:
            return bytes(self._z.decompress(data))
        except zlib.error as exc:
            raise UsageParseError(f"cannot decompress the response body ({exc})") from None


class UsageReader:
    """Collects a response body chunk by chunk and extracts its usage at the end.

    ``feed(raw)`` never raises: a problem is remembered and `finish` reports it. `finish`
    returns the `Usage`, or ``None`` when the body ended without one (a stream without a usage
    chunk, a cut-off stream).

    Raises (from `finish`):
        UsageParseError: the body is not what the endpoint returns (bad JSON, bad usage).
    """

    def __init__(self, endpoint: Endpoint, content_type: str, content_encoding: str = "") -> None:
        self.endpoint = endpoint
        self.sse = "text/event-stream" in content_type.lower()
        self._error: UsageParseError | None = None
        self._decoder: _Decoder | None = None
        try:
            self._decoder = _Decoder(content_encoding)
        except UsageParseError as exc:
            self._error = exc
        self._body = bytearray()
        self._pending = b""
        self._data: list[str] = []
        self._event = ""
        self._openai: Mapping[str, Any] | None = None  # last usage seen
        self._start: dict[str, Any] | None = None  # anthropic message_start usage
        self._delta: Mapping[str, Any] | None = None  # anthropic last message_delta usage
        self.stream_error: str | None = None

    def feed(self, raw: bytes) -> None:
        """Take the next raw chunk of the body."""
        if self._error is not None or self._decoder is None:
            return
        try:
            data = self._decoder.decode(raw)
            if self.sse:
                self._feed_sse(data)
            elif len(self._body) + len(data) <= _MAX_BODY:
                self._body += data
            else:
                raise UsageParseError(f"response body larger than {_MAX_BODY} bytes")
        except UsageParseError as exc:
            self._error = exc
        except Exception as exc:  # never let a parser bug reach the application
            self._error = UsageParseError(f"{type(exc).__name__}: {exc}")

    def _feed_sse(self, data: bytes) -> None:
        buffer = self._pending + data
        lines = buffer.split(b"\n")
        self._pending = lines.pop()
        for raw_line in lines:
            line = raw_line.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                self._dispatch()
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value

    def _dispatch(self) -> None:
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if not data or data == "[DONE]":
            return
        try:
            payload = json.loads(data)
        except ValueError:
            raise UsageParseError(
                f"stream event {event!r}: data is not JSON: {data[:80]!r}"
            ) from None
        if not isinstance(payload, dict):
            return
        kind = payload.get("type", event)
        if kind == "error" or event == "error":
            self.stream_error = str(payload.get("error", payload))[:200]
        if self.endpoint.provider == "anthropic":
            if kind == "message_start":
                message = payload.get("message")
                usage = message.get("usage") if isinstance(message, Mapping) else None
                if isinstance(usage, Mapping):
                    self._start = dict(usage)
            elif kind == "message_delta" and isinstance(payload.get("usage"), Mapping):
                self._delta = payload["usage"]
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = payload.get("response")
            if isinstance(response, Mapping) and isinstance(response.get("usage"), Mapping):
                self._openai = response["usage"]
        elif isinstance(payload.get("usage"), Mapping):
            self._openai = payload["usage"]

    def finish(self) -> Usage | None:
        """The body's usage, or ``None`` if it ended without one.

        Raises:
            UsageParseError: see the class docstring.
        """
        if self._error is not None:
            raise self._error
        if self.sse:
            if self._pending.strip() or self._data:
                self._feed_sse(b"\n\n")
            if self.endpoint.provider == "anthropic":
                if self._start is None or self._delta is None:
                    return None
                merged = {**self._start, **{k: v for k, v in self._delta.items() if v is not None}}
                return usage_from_anthropic(merged)
            return None if self._openai is None else usage_from_openai(self._openai)
        try:
            payload = json.loads(bytes(self._body))
        except (ValueError, UnicodeDecodeError):
            raise UsageParseError(
                f"response body is not JSON: {bytes(self._body[:80])!r}"
            ) from None
        if not isinstance(payload, dict):
            raise UsageParseError(f"response body is not a JSON object: {payload!r:.80}")
        if "usage" not in payload or payload["usage"] is None:
            return None
        if self.endpoint.provider == "anthropic":
            return usage_from_anthropic(payload["usage"])
        return usage_from_openai(payload["usage"])
