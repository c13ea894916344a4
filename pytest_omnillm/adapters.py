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

Gemini (Developer API ``/v1/models/M:ACTION``, ``/v1beta/...``; Vertex AI
``/v1/projects/P/locations/L/publishers/google/models/M:ACTION``): ``:generateContent``
(gemini/generate), ``:streamGenerateContent`` (gemini/stream_generate; SSE with ``alt=sse``,
else a JSON array) and ``:countTokens`` (gemini/count_tokens, free: `Endpoint.free`). The model
is the URL's; the output bound is ``generationConfig.maxOutputTokens`` x ``candidateCount``,
plus ``thinkingConfig.thinkingBudget`` x ``candidateCount`` as ``thinking_tokens`` (both
the camelCase and the proto field spellings are read).

Azure OpenAI: ``/openai/deployments/{deployment}/<openai suffix>`` sets `Endpoint.deployment`;
a deployment is priced as the model a model map gives it, never as a model of its own name
(see `parse_request`). ``/openai/v1/...`` is plain OpenAI.

The prompt bound is the size of the whole (decoded) JSON body in bytes (every prompt byte is
in it; a byte-level tokenizer never emits a token for less than a byte), plus the estimator's
per-message template allowance. Images referenced by URL are not bounded by their URL's size:
such requests may cost more than the estimate, which the plugin's teardown check reports.

Request bodies sent with ``Content-Encoding`` gzip, deflate (and br / zstd when a module that
decodes them with bounded output is importable: ``brotli`` >= 1.2, ``compression.zstd`` or
``backports.zstd``) are decoded first. A body that still cannot be read (another encoding,
not JSON, not an object, no model) gives a `ParsedRequest` with ``problem`` set: under a budget
the plugin refuses it, since it cannot be priced.

Usage (`Usage.input_tokens` excludes cache reads and writes). A usage is trusted only when every
count its cost needs is present and a non-negative int (not null, not a float, not a bool);
anything else raises `UsageParseError`, and the plugin keeps the reservation. Breakdowns that
the APIs document as optional (cached tokens, cache writes) count as 0 when absent or null:

* OpenAI chat/completions/embeddings: ``prompt_tokens`` (required) minus
  ``prompt_tokens_details.cached_tokens`` (a subset), cached tokens as cache reads,
  ``completion_tokens`` (required except for embeddings; reasoning included) as output.
  Streams: the last chunk carrying ``usage`` (sent only when the request asked for
  ``stream_options.include_usage``).
* OpenAI responses: ``input_tokens`` / ``input_tokens_details.cached_tokens`` /
  ``output_tokens``; streams: the ``response.completed`` (or ``.incomplete``/``.failed``)
  event's ``response.usage``.
* Anthropic: ``input_tokens`` and ``output_tokens`` (required), ``cache_read_input_tokens``,
  ``cache_creation`` 5-minute and 1-hour writes (never less in total than
  ``cache_creation_input_tokens``). Streams: the ``message_start`` usage with fields replaced
  by the non-null fields of the *last* ``message_delta`` usage (cumulative counts, never
  summed), whose ``output_tokens`` must be a count; no ``message_delta`` means no final usage.

* Gemini (`usage_from_gemini`): ``usageMetadata``; streams (SSE or JSON array): the last chunk
  carrying it, which in an SSE stream must be the final chunk (a ``finishReason``), since every
  chunk carries partial counts.

Streams are read in time linear in their size with bounded memory: only events that can carry
usage (their data mentions ``usage`` or ``error``, or has a ``\\u`` escape) are decoded, and
an event or line longer than `MAX_EVENT_BYTES` is skipped without being kept. If such a skipped
event could have been the last usage, the usage is not trusted. Compressed bodies are inflated
in pieces of at most 64 KiB, so a compression bomb cannot grow the plugin's memory.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from omnillm_sim.estimate import EstimateRequest, omnillm_prompt_bytes
from omnillm_sim.pricing import Usage

__all__ = [
    "MAX_EVENT_BYTES",
    "Endpoint",
    "ParsedRequest",
    "UsageParseError",
    "UsageReader",
    "decode_body",
    "match_endpoint",
    "parse_request",
    "unmapped_deployment",
    "usage_from_anthropic",
    "usage_from_gemini",
    "usage_from_openai",
]

Provider = Literal["openai", "anthropic", "gemini"]
Kind = Literal[
    "chat",
    "completions",
    "responses",
    "embeddings",
    "messages",
    "generate",
    "stream_generate",
    "count_tokens",
]

_SUFFIXES: tuple[tuple[str, Provider, Kind], ...] = (
    ("/chat/completions", "openai", "chat"),
    ("/completions", "openai", "completions"),
    ("/responses", "openai", "responses"),
    ("/embeddings", "openai", "embeddings"),
    ("/messages", "anthropic", "messages"),
)
# Gemini (Developer API ``/v1beta/models/M:ACTION``, Vertex AI
# ``/v1/projects/P/locations/L/publishers/google/models/M:ACTION``): the model is in the URL.
_GEMINI = re.compile(r"(?:^|/)models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")
_GEMINI_KINDS: dict[str, Kind] = {
    "generateContent": "generate",
    "streamGenerateContent": "stream_generate",
    "countTokens": "count_tokens",
}
_LEGACY_COMPLETIONS_DEFAULT_MAX_TOKENS = 16
_MAX_BODY = 64 * 1024 * 1024  # a JSON response body larger than this is not buffered
_MAX_REQUEST = 256 * 1024 * 1024  # a request body decoding to more than this is unreadable
MAX_EVENT_BYTES = 8 * 1024 * 1024
"""The longest server-sent-event line or event the reader keeps; longer ones are skipped."""
_PIECE = 64 * 1024  # decompressed output is produced in pieces of at most this size


class UsageParseError(ValueError):
    """A body or usage object the plugin cannot understand (reported, never raised into the
    application)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A recognised LLM endpoint: provider, kind and the request path it was matched on.

    ``model`` is the model the URL names (Gemini), ``deployment`` the Azure OpenAI deployment
    the URL names (``/openai/deployments/{deployment}/...``): a deployment is not a model name.
    """

    provider: Provider
    kind: Kind
    path: str
    model: str | None = None
    deployment: str | None = None

    @property
    def name(self) -> str:
        """``openai/chat``, ``anthropic/messages``, ``gemini/generate``, ..."""
        return f"{self.provider}/{self.kind}"

    @property
    def free(self) -> bool:
        """True for endpoints the provider does not bill (Gemini ``countTokens``)."""
        return self.kind == "count_tokens"


def match_endpoint(method: str, path: str) -> Endpoint | None:
    """The endpoint a request goes to, or ``None`` when it is not an LLM call we know."""
    if method.upper() != "POST":
        return None
    # Every request of an application goes to a few paths: match each once (an `Endpoint` is
    # immutable, so the same one serves every request to its path).
    try:
        return _matched[path]
    except KeyError:
        pass
    if len(_matched) >= _MATCHED_MAX:
        _matched.clear()
    endpoint = _matched[path] = _match(path)
    return endpoint


_matched: dict[str, Endpoint | None] = {}
_MATCHED_MAX = 1024


def _match(path: str) -> Endpoint | None:
    trimmed = path.rstrip("/")
    gemini = _GEMINI.search(trimmed)
    if gemini is not None:
        return Endpoint("gemini", _GEMINI_KINDS[gemini.group(2)], path, model=gemini.group(1))
    for suffix, provider, kind in _SUFFIXES:
        if trimmed.endswith(suffix):
            head = trimmed[: -len(suffix)].split("/")
            deployment = None
            if provider == "openai" and len(head) >= 2 and head[-2] == "deployments":
                deployment = head[-1] or None
            return Endpoint(provider, kind, path, deployment=deployment)
    return None


def _loads(data: bytes) -> Any:
    """``json.loads(data)``, without its encoding detection (Python code) for the usual body.

    A body whose first two bytes are ``{`` and not NUL is UTF-8 to ``json.loads`` (no BOM,
    not UTF-16/32): it is decoded here as ``json.loads`` would.

    Raises:
        ValueError, UnicodeDecodeError: as ``json.loads``.
    """
    if data[:1] == b"{" and data[1:2] not in (b"", b"\x00"):
        return json.loads(data.decode("utf-8", "surrogatepass"))
    return json.loads(data)


# -- content encodings -------------------------------------------------------------------------


def _inflater(coding: str) -> Callable[[bytes], Iterator[bytes]]:
    gzip = coding in ("gzip", "x-gzip")
    state: dict[str, Any] = {"z": zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else 15)}
    state["fresh"] = not gzip  # "deflate" is zlib-wrapped, but some servers send raw deflate

    def pieces(data: bytes) -> Iterator[bytes]:
        z = state["z"]
        if state["fresh"] and data:
            state["fresh"] = False
            try:
                out = z.decompress(data, _PIECE)
            except zlib.error:
                z = state["z"] = zlib.decompressobj(-zlib.MAX_WBITS)
                out = z.decompress(data, _PIECE)
            yield out
            data = z.unconsumed_tail
            if not data and len(out) < _PIECE:
                return
        # A full piece may leave output inside zlib even when all input was taken.
        while True:
            out = z.decompress(data, _PIECE)
            yield out
            data = z.unconsumed_tail
            if (not data and len(out) < _PIECE) or z.eof:
                return

    return pieces


def _brotli_module() -> Any:
    for name in ("brotli", "brotlicffi"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        # brotli >= 1.2 can bound its output; older versions cannot, so they are not used.
        if hasattr(module.Decompressor(), "can_accept_more_data"):
            return module
    return None


def _zstd_class() -> Any:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name).ZstdDecompressor
        except (ImportError, AttributeError):
            continue
    return None


def _unbrotli() -> Callable[[bytes], Iterator[bytes]] | None:
    module = _brotli_module()
    if module is None:
        return None
    d = module.Decompressor()

    def pieces(data: bytes) -> Iterator[bytes]:
        yield d.process(data, output_buffer_limit=_PIECE)
        while not d.can_accept_more_data():
            yield d.process(b"", output_buffer_limit=_PIECE)

    return pieces


def _unzstd() -> Callable[[bytes], Iterator[bytes]] | None:
    cls = _zstd_class()
    if cls is None:
        return None
    d = cls()

    def pieces(data: bytes) -> Iterator[bytes]:
        while not d.eof:
            out = d.decompress(data, _PIECE)
            data = b""
            yield out
            if d.needs_input:
                return

    return pieces


_MODULE_HINT = {
    "br": "needs the 'brotli' module (>= 1.2) to read it",
    "zstd": "needs 'compression.zstd' (Python 3.14) or the 'backports.zstd' module to read it",
}


class _Decoder:
    """Undo ``Content-Encoding`` on a body fed in chunks, yielding bounded pieces.

    Raises:
        UsageParseError: an encoding it cannot undo (unknown, or br/zstd without a module),
            and (from `pieces`) corrupt compressed data.
    """

    def __init__(self, encoding: str) -> None:
        self._stages: list[Callable[[bytes], Iterator[bytes]]] = []
        if not encoding:  # the usual case: nothing to undo
            return
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        for coding in reversed([c for c in codings if c != "identity"]):  # last applied first
            stage: Callable[[bytes], Iterator[bytes]] | None
            if coding in ("gzip", "x-gzip", "deflate"):
                stage = _inflater(coding)
            elif coding == "br":
                stage = _unbrotli()
            elif coding == "zstd":
                stage = _unzstd()
            else:
                raise UsageParseError(f"unsupported Content-Encoding {encoding!r}")
            if stage is None:
                raise UsageParseError(f"Content-Encoding {coding!r} {_MODULE_HINT[coding]}")
            self._stages.append(stage)

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data`` (the next raw chunk), in pieces of bounded size."""
        try:
            yield from self._through(0, data)
        except UsageParseError:
            raise
        except Exception as exc:  # zlib.error, brotli.error, ZstdError, ...
            raise UsageParseError(f"cannot decompress the body ({exc})") from None

    def _through(self, stage: int, data: bytes) -> Iterator[bytes]:
        if stage == len(self._stages):
            if data:
                yield data
            return
        for piece in self._stages[stage](data):
            if piece:
                yield from self._through(stage + 1, piece)


def decode_body(body: bytes, encoding: str, limit: int | None = None) -> bytes:
    """``body`` with its ``Content-Encoding`` undone, refusing to grow past ``limit`` bytes
    (default 256 MiB).

    Raises:
        UsageParseError: an encoding it cannot undo, corrupt data, or more than ``limit`` bytes.
    """
    if limit is None:
        limit = _MAX_REQUEST
    decoder = _Decoder(encoding)
    if not decoder._stages:
        return body
    out = bytearray()
    for piece in decoder.pieces(body):
        out += piece
        if len(out) > limit:
            raise UsageParseError(f"it decodes to more than {limit} bytes")
    return bytes(out)


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request body reduced to what pricing needs; ``model`` is ``None`` when absent.

    ``problem`` says why the body could not be priced (``estimate_request`` is then ``None``).
    ``model_source`` says where ``model`` came from: ``"body"``, ``"url"`` (Gemini),
    ``"model map"`` (``--llm-model-map``) or ``"fallback"`` (an unmapped Azure deployment
    priced as the fallback model). ``deployment`` is the Azure OpenAI deployment, if any.
    """

    endpoint: Endpoint
    model: str | None
    estimate_request: EstimateRequest | None
    stream: bool
    problem: str = ""
    model_source: str = ""
    deployment: str | None = None


def _count(value: object) -> int | None:
    """A token bound from a request field: an int >= 0, or a finite float >= 0 rounded up."""
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and math.isfinite(value) and value >= 0:
        return math.ceil(value)
    return None


def _field(body: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A Gemini request field: proto3 JSON accepts the lowerCamelCase and the proto name."""
    value = body.get(camel)
    return body.get(snake) if value is None else value


def _gemini_output_bound(body: Mapping[str, Any]) -> tuple[int | None, int]:
    """(``maxOutputTokens`` x ``candidateCount`` or None, thinking budget x ``candidateCount``)."""
    config = _field(body, "generationConfig", "generation_config")
    if not isinstance(config, Mapping):
        return None, 0
    candidates = _count(_field(config, "candidateCount", "candidate_count")) or 1
    per_candidate = _count(_field(config, "maxOutputTokens", "max_output_tokens"))
    thinking = _field(config, "thinkingConfig", "thinking_config")
    budget = 0
    if isinstance(thinking, Mapping):
        budget = _count(_field(thinking, "thinkingBudget", "thinking_budget")) or 0
    output = None if per_candidate is None else per_candidate * candidates
    return output, budget * candidates


def _output_bound(kind: Kind, body: Mapping[str, Any]) -> int | None:
    if kind in ("embeddings", "count_tokens"):
        return 0
    if kind in ("generate", "stream_generate"):
        return _gemini_output_bound(body)[0]
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
    if kind in ("generate", "stream_generate", "count_tokens"):
        contents = body.get("contents")
        count = len(contents) if isinstance(contents, list) else 1
        if _field(body, "systemInstruction", "system_instruction"):
            count += 1
        return max(count, 1)
    field = {"chat": "messages", "messages": "messages", "responses": "input"}.get(kind, "input")
    if kind == "completions":
        field = "prompt"
    value = body.get(field)
    count = len(value) if isinstance(value, list) else 1
    if kind == "messages" and body.get("system"):
        count += 1
    return max(count, 1)


def unmapped_deployment(deployment: str) -> str:
    """Why a request to an Azure OpenAI deployment without a model cannot be priced."""
    return (
        f"Azure OpenAI deployment {deployment!r} is not mapped to a model (a deployment name is "
        f"not a model name): map it with --llm-model-map {deployment}=MODEL (ini llm_model_map) "
        "or price unmapped deployments with --llm-fallback-model MODEL"
    )


def parse_request(
    endpoint: Endpoint,
    body: bytes,
    content_encoding: str = "",
    *,
    model_map: Mapping[str, str] | None = None,
    fallback_model: str | None = None,
    body_names_deployment: bool = False,
    omnillm_bytes: bool = True,
) -> ParsedRequest:
    """Read model, output bound, message count and ``stream`` from a request body.

    The model is the URL's for Gemini, else the body's ``model``. An Azure OpenAI deployment
    (`Endpoint.deployment`) is never taken as a model: it must be a key of ``model_map``, or
    it is priced as ``fallback_model``, or the request cannot be priced. Any other model named
    in ``model_map`` is replaced by its mapped model. ``body_names_deployment``: the body's
    ``model`` is an Azure OpenAI deployment (Azure routes without one in the path, such as
    ``/openai/responses?api-version=...``), treated as `Endpoint.deployment` is.
    ``omnillm_bytes=False`` leaves `EstimateRequest.omnillm_prompt_bytes` unset (only the
    ``omnillm`` estimator reads it, and it costs a pass over every message).

    A body the plugin cannot read gives no estimate request and a ``problem`` saying why
    (the plugin refuses it under a budget and lets it through, recorded, without one).
    """
    deployment = endpoint.deployment
    unreadable = ParsedRequest(endpoint, None, None, False, deployment=deployment)
    if content_encoding.strip():
        try:
            body = decode_body(body, content_encoding)
        except UsageParseError as exc:
            why = f"cannot decode the request body (Content-Encoding {content_encoding!r}): {exc}"
            return _with_problem(unreadable, why)
    try:
        data = _loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return _with_problem(unreadable, f"request body is not JSON: {body[:40]!r}")
    if not isinstance(data, dict):
        return _with_problem(unreadable, f"request body is not a JSON object: {body[:40]!r}")
    mapping = model_map or {}
    stream = data.get("stream") is True or endpoint.kind == "stream_generate"
    model: object
    if deployment is None and body_names_deployment and isinstance(data.get("model"), str):
        deployment = data["model"]
    if deployment is not None:
        model, source = mapping.get(deployment), "model map"
        if model is None and fallback_model is not None:
            model, source = fallback_model, "fallback"
        if model is None:
            return ParsedRequest(
                endpoint, None, None, stream, unmapped_deployment(deployment), "", deployment
            )
    else:
        model, source = data.get("model"), "body"
        if endpoint.model is not None:
            model, source = endpoint.model, "url"
        if isinstance(model, str) and model in mapping:
            model, source = mapping[model], "model map"
    if not isinstance(model, str) or not model.strip():
        return ParsedRequest(
            endpoint, None, None, stream, f"request body has no model (model={model!r})"
        )
    thinking = 0
    if endpoint.kind in ("generate", "stream_generate"):
        thinking = _gemini_output_bound(data)[1]
    request = EstimateRequest(
        model=model,
        prompt_bytes=len(body),
        max_output_tokens=_output_bound(endpoint.kind, data),
        thinking_tokens=thinking,
        messages=_messages(endpoint.kind, data),
        omnillm_prompt_bytes=_omnillm_bytes(endpoint.kind, data) if omnillm_bytes else None,
    )
    return ParsedRequest(endpoint, model, request, stream, "", source, deployment)


def _omnillm_bytes(kind: Kind, body: Mapping[str, Any]) -> int | None:
    """omnillm's own prompt size of the body (for the ``omnillm`` estimator), if it has one."""
    wire = {"chat": "openai-chat", "messages": "anthropic-messages"}.get(kind)
    if wire is None or not isinstance(body.get("messages"), list):
        return None
    return omnillm_prompt_bytes(body, wire)  # type: ignore[arg-type]


def _with_problem(parsed: ParsedRequest, problem: str) -> ParsedRequest:
    return dataclasses.replace(parsed, estimate_request=None, problem=problem)


# -- usage -------------------------------------------------------------------------------------


def _tokens(usage: Mapping[str, Any], key: str, where: str, *, required: bool) -> int:
    value = usage.get(key)
    if value is None:
        if required:
            state = "null" if key in usage else "missing"
            raise UsageParseError(f"{where}.{key} is {state}: the cost cannot be known")
        return 0
    if type(value) is not int or value < 0:
        raise UsageParseError(f"{where}.{key}: expected a token count (int >= 0), got {value!r}")
    return value


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else {}


def usage_from_openai(usage: object, *, embeddings: bool = False) -> Usage:
    """An OpenAI ``usage`` object (chat/completions/embeddings or responses style) as `Usage`.

    ``embeddings``: the usage of an embeddings call, which has no output count.

    Raises:
        UsageParseError: not an object, or a needed count missing, null or not an int >= 0.
    """
    if not isinstance(usage, Mapping):
        raise UsageParseError(f"usage: expected an object, got {usage!r:.80}")
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = _tokens(usage, "prompt_tokens", "usage", required=True)
        details = _details(usage, "prompt_tokens_details")
        cached = _tokens(details, "cached_tokens", "usage.prompt_tokens_details", required=False)
        output = _tokens(usage, "completion_tokens", "usage", required=not embeddings)
    elif "input_tokens" in usage or "output_tokens" in usage:
        prompt = _tokens(usage, "input_tokens", "usage", required=True)
        details = _details(usage, "input_tokens_details")
        cached = _tokens(details, "cached_tokens", "usage.input_tokens_details", required=False)
        output = _tokens(usage, "output_tokens", "usage", required=not embeddings)
    else:
        raise UsageParseError(f"usage: no prompt_tokens or input_tokens in {dict(usage)!r:.120}")
    if cached > prompt:
        raise UsageParseError(f"usage: cached_tokens={cached} > prompt tokens {prompt}")
    return Usage(
        input_tokens=prompt - cached, output_tokens=output, cache_read_tokens=cached, shape="openai"
    )


def usage_from_anthropic(usage: object) -> Usage:
    """An Anthropic ``usage`` object as `Usage` (``input_tokens`` already excludes the cache).

    Raises:
        UsageParseError: not an object, or a needed count missing, null or not an int >= 0.
    """
    if not isinstance(usage, Mapping):
        raise UsageParseError(f"usage: expected an object, got {usage!r:.80}")
    total = _tokens(usage, "cache_creation_input_tokens", "usage", required=False)
    creation = _details(usage, "cache_creation")
    where = "usage.cache_creation"
    write_5m = _tokens(creation, "ephemeral_5m_input_tokens", where, required=False)
    write_1h = _tokens(creation, "ephemeral_1h_input_tokens", where, required=False)
    # Never charge fewer writes than the total says (a breakdown with nulls, or none).
    write_5m = max(write_5m, total - write_1h)
    return Usage(
        input_tokens=_tokens(usage, "input_tokens", "usage", required=True),
        output_tokens=_tokens(usage, "output_tokens", "usage", required=True),
        cache_read_tokens=_tokens(usage, "cache_read_input_tokens", "usage", required=False),
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        shape="anthropic",
    )


_GEMINI_WHERE = "usageMetadata"


def _gemini_extra(usage: Mapping[str, Any], key: str) -> int:
    # Optional breakdowns: proto3 JSON omits a zero count, so absent is 0; the API never sends
    # null, so a null (or a non-count) is not trusted.
    if key in usage and usage[key] is None:
        raise UsageParseError(f"{_GEMINI_WHERE}.{key} is null: the cost cannot be known")
    return _tokens(usage, key, _GEMINI_WHERE, required=False)


def usage_from_gemini(usage: object) -> Usage:
    """A Gemini ``usageMetadata`` object as `Usage` (shaped like OpenAI's: cached in prompt).

    Input is ``promptTokenCount`` (required; it includes ``cachedContentTokenCount``, which
    becomes cache reads) plus ``toolUsePromptTokenCount``; output is ``candidatesTokenCount``
    plus ``thoughtsTokenCount`` (thinking is billed as output). ``candidatesTokenCount`` is
    required, except that its absence is read as 0 when ``totalTokenCount`` proves it (equal
    to the sum of the other counts). Absent breakdowns are 0; a null one is not trusted.

    Raises:
        UsageParseError: not an object, or a needed count missing, null or not an int >= 0.
    """
    if not isinstance(usage, Mapping):
        raise UsageParseError(f"{_GEMINI_WHERE}: expected an object, got {usage!r:.80}")
    prompt = _tokens(usage, "promptTokenCount", _GEMINI_WHERE, required=True)
    cached = _gemini_extra(usage, "cachedContentTokenCount")
    thoughts = _gemini_extra(usage, "thoughtsTokenCount")
    tool = _gemini_extra(usage, "toolUsePromptTokenCount")
    if usage.get("candidatesTokenCount") is None and "candidatesTokenCount" not in usage:
        total = usage.get("totalTokenCount")
        if type(total) is not int or total != prompt + thoughts + tool:
            raise UsageParseError(
                f"{_GEMINI_WHERE}.candidatesTokenCount is missing (and totalTokenCount does not "
                "show it is 0): the cost cannot be known"
            )
        candidates = 0
    else:
        candidates = _tokens(usage, "candidatesTokenCount", _GEMINI_WHERE, required=True)
    if cached > prompt:
        raise UsageParseError(
            f"{_GEMINI_WHERE}: cachedContentTokenCount={cached} > promptTokenCount={prompt}"
        )
    return Usage(
        input_tokens=prompt - cached + tool,
        output_tokens=candidates + thoughts,
        cache_read_tokens=cached,
        shape="openai",
    )


# -- responses ---------------------------------------------------------------------------------

_USAGE_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def _gemini_final(chunk: Mapping[str, Any]) -> bool:
    """Whether a Gemini stream chunk is the last: a candidate has a ``finishReason``, or the
    prompt was blocked."""
    feedback = chunk.get("promptFeedback")
    if isinstance(feedback, Mapping) and feedback.get("blockReason"):
        return True
    candidates = chunk.get("candidates")
    return isinstance(candidates, list) and any(
        isinstance(c, Mapping) and c.get("finishReason") for c in candidates
    )


class UsageReader:
    """Collects a response body chunk by chunk and extracts its usage at the end.

    The body is read as a server-sent-event stream when its Content-Type says so, or when the
    request asked for ``stream: true`` and the body does not start like JSON; otherwise as
    JSON. ``feed(raw)`` never raises: a problem is remembered and `finish` reports it.
    `finish` returns the `Usage`, or ``None`` when the body ended without one (a stream
    without a usage chunk, a cut-off stream, an absent or empty usage object).

    ``retained`` is the number of body bytes the reader holds now, ``peak_retained`` the most
    it ever held (a stream keeps at most about `MAX_EVENT_BYTES`).

    Raises (from `finish`):
        UsageParseError: the body is not what the endpoint returns (bad JSON, bad usage).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        content_type: str,
        content_encoding: str = "",
        *,
        stream: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self._mode: Literal["sse", "json"] | None = (
            "sse" if "text/event-stream" in content_type.lower() else None
        )
        if self._mode is None and not stream:
            self._mode = "json"
        self._error: UsageParseError | None = None
        self._decoder: _Decoder | None = None
        try:
            self._decoder = _Decoder(content_encoding)
        except UsageParseError as exc:
            self._error = exc
        self._body = bytearray()
        # SSE state: the current partial line, the current event's data lines and name.
        self._line = bytearray()  # appended in place: a line trickled byte by byte stays linear
        self._line_over = False
        self._skip_lf = False
        self._data: list[bytes] = []
        self._data_len = 0
        self._event_over = False
        self._event = b""
        self._skipped = 0  # events too long to keep
        self._unsure = False  # an event was skipped after the last usage seen
        self.peak_retained = 0
        self._openai: Mapping[str, Any] | None = None  # last usage seen
        self._start: dict[str, Any] | None = None  # anthropic message_start usage
        self._delta: Mapping[str, Any] | None = None  # anthropic last message_delta usage
        self.stream_error: str | None = None
        self.model: str | None = None  # the model the response says answered, if it says
        self._final = False  # gemini: the last usage seen came with a finishReason

    @property
    def sse(self) -> bool:
        """True when the body is (or, undecided yet, is expected to be) an event stream."""
        return self._mode != "json"

    @property
    def retained(self) -> int:
        """Body bytes held right now."""
        return len(self._body) + len(self._line) + self._data_len

    def feed(self, raw: bytes) -> None:
        """Take the next raw chunk of the body."""
        if self._error is not None or self._decoder is None:
            return
        try:
            if not self._decoder._stages:  # not encoded: the chunk as it is
                if raw:
                    self._take(raw)
                return
            for data in self._decoder.pieces(raw):
                self._take(data)
        except UsageParseError as exc:
            self._error = exc
        except Exception as exc:  # never let a parser bug reach the application
            self._error = UsageParseError(f"{type(exc).__name__}: {exc}")

    def _take(self, data: bytes) -> None:
        if self._mode is None:  # stream requested, Content-Type not SSE: look at the body
            head = data.lstrip()
            if not head:
                self._keep_json(data)
                return
            self._mode = "json" if head[:1] in (b"{", b"[") else "sse"
            if self._mode == "sse":
                self._body.clear()  # only whitespace so far
        if self._mode == "sse":
            self._feed_sse(data)
        else:
            self._keep_json(data)

    def _keep_json(self, data: bytes) -> None:
        if len(self._body) + len(data) > _MAX_BODY:
            raise UsageParseError(f"response body larger than {_MAX_BODY} bytes")
        self._body += data
        self.peak_retained = max(self.peak_retained, len(self._body))

    # -- server-sent events (https://html.spec.whatwg.org/#event-stream-interpretation) --

    def _feed_sse(self, data: bytes) -> None:
        if self._skip_lf:  # the previous chunk ended with CR: a LF now is the same line end
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        for piece in data.splitlines(keepends=True):
            if piece.endswith(b"\n"):
                body = piece[:-2] if piece.endswith(b"\r\n") else piece[:-1]
            elif piece.endswith(b"\r"):
                body = piece[:-1]
            else:  # the unfinished last line of the chunk
                self._partial(piece)
                continue
            if self._line or self._line_over:
                self._partial(body)
                line, over = bytes(self._line), self._line_over
                self._line, self._line_over = bytearray(), False
            else:
                line, over = body, self._data_len + len(body) > MAX_EVENT_BYTES
            if over:  # the event this line belongs to is skipped
                self._data, self._data_len, self._event_over = [], 0, True
                continue
            self._field(line)
        self._skip_lf = data.endswith(b"\r")

    def _partial(self, piece: bytes) -> None:
        if self._line_over:
            return
        if self._data_len + len(self._line) + len(piece) > MAX_EVENT_BYTES:
            self._line, self._line_over = bytearray(), True
            self._data, self._data_len = [], 0
            return
        self._line += piece
        self.peak_retained = max(self.peak_retained, self.retained)

    def _field(self, line: bytes) -> None:
        if not line:
            self._dispatch()
            return
        if line[:1] == b":":
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            if self._event_over:
                return
            self._data.append(value)
            self._data_len += len(value) + 1
            self.peak_retained = max(self.peak_retained, self.retained)
        elif name == b"event":
            self._event = value[:100]

    def _dispatch(self) -> None:
        lines, event, over = self._data, self._event, self._event_over
        self._data, self._data_len, self._event, self._event_over = [], 0, b"", False
        if over:
            self._skipped += 1
            self._unsure = True
            return
        if not lines:
            return
        data = b"\n".join(lines)
        if data == b"[DONE]":
            return
        # Only events that can carry usage (or report an error) are decoded: those that say
        # "usage" or "error", or use a \u escape (which could spell either).
        quiet = b"usage" not in data and b"\\u" not in data and b"error" not in data
        if quiet and event != b"error":
            return
        try:
            payload = json.loads(data)
        except ValueError:
            raise UsageParseError(
                f"stream event {event.decode(errors='replace')!r}: data is not JSON: "
                f"{data[:80]!r}"
            ) from None
        if not isinstance(payload, dict):
            return
        self._event_payload(event.decode(errors="replace"), payload)

    def _note_model(self, payload: Mapping[str, Any]) -> None:
        for value in (payload.get("modelVersion"), payload.get("model")):
            if isinstance(value, str) and value:
                self.model = value[:200]
                return

    def _event_payload(self, event: str, payload: dict[str, Any]) -> None:
        kind = payload.get("type", event)
        if kind == "error" or event == "error":
            self.stream_error = str(payload.get("error", payload))[:200]
        seen = False
        if self.endpoint.provider == "gemini":
            if isinstance(payload.get("usageMetadata"), Mapping):
                self._openai = payload["usageMetadata"]
                self._final = _gemini_final(payload)
                self._note_model(payload)
                seen = True
        elif self.endpoint.provider == "anthropic":
            if kind == "message_start":
                message = payload.get("message")
                if isinstance(message, Mapping) and isinstance(message.get("usage"), Mapping):
                    self._start = dict(message["usage"])
                    self._note_model(message)
                    seen = True
            elif kind == "message_delta" and isinstance(payload.get("usage"), Mapping):
                self._delta = payload["usage"]
                seen = True
        elif kind in _USAGE_EVENTS:
            response = payload.get("response")
            if isinstance(response, Mapping) and isinstance(response.get("usage"), Mapping):
                self._openai = response["usage"]
                self._note_model(response)
                seen = True
        elif isinstance(payload.get("usage"), Mapping):
            self._openai = payload["usage"]
            self._note_model(payload)
            seen = True
        if seen:
            self._unsure = False

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> Usage | None:
        """The body's usage, or ``None`` if it ended without one.

        Raises:
            UsageParseError: see the class docstring.
        """
        if self._error is not None:
            raise self._error
        if self._mode is None:  # a requested stream whose body was empty or blank
            return None
        if self._mode == "sse":
            return self._finish_sse()
        try:
            payload = _loads(bytes(self._body))
        except (ValueError, UnicodeDecodeError):
            raise UsageParseError(
                f"response body is not JSON: {bytes(self._body[:80])!r}"
            ) from None
        if self.endpoint.provider == "gemini":
            return self._finish_gemini_json(payload)
        if not isinstance(payload, dict):
            raise UsageParseError(f"response body is not a JSON object: {payload!r:.80}")
        self._note_model(payload)
        usage = payload.get("usage")
        if usage is None or (isinstance(usage, Mapping) and not usage):
            return None
        return self._usage(usage)

    def _finish_gemini_json(self, payload: object) -> Usage | None:
        # A response object, or a stream sent as a JSON array of them (no ``alt=sse``): the
        # last one carrying usageMetadata has the final counts.
        chunks = payload if isinstance(payload, list) else [payload]
        for chunk in reversed(chunks):
            if not isinstance(chunk, dict):
                raise UsageParseError(f"response is not a JSON object: {chunk!r:.80}")
            if "usageMetadata" in chunk:
                self._note_model(chunk)
                return usage_from_gemini(chunk["usageMetadata"])
        return None

    def _finish_sse(self) -> Usage | None:
        if self._line or self._line_over or self._data or self._event_over:
            self._feed_sse(b"\n\n")  # the stream ended inside an event: end it
        if self._unsure:
            raise UsageParseError(
                f"{self._skipped} stream event(s) longer than {MAX_EVENT_BYTES} bytes were "
                "skipped, one after the last usage seen: the final usage is unknown"
            )
        if self.endpoint.provider == "anthropic":
            if self._start is None or self._delta is None:
                return None
            if self._delta.get("output_tokens") is None:
                state = "null" if "output_tokens" in self._delta else "missing"
                raise UsageParseError(
                    f"the last message_delta's usage.output_tokens is {state}: the cost "
                    "cannot be known"
                )
            final = {k: v for k, v in self._delta.items() if v is not None}
            return usage_from_anthropic({**self._start, **final})
        if self._openai is None or not self._openai:
            return None
        if self.endpoint.provider == "gemini" and not self._final:
            return None  # every chunk has usageMetadata; only the last one's counts are final
        return self._usage(self._openai)

    def _usage(self, usage: object) -> Usage:
        if self.endpoint.provider == "gemini":
            return usage_from_gemini(usage)
        if self.endpoint.provider == "anthropic":
            return usage_from_anthropic(usage)
        return usage_from_openai(usage, embeddings=self.endpoint.kind == "embeddings")
