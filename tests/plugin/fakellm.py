"""A fake OpenAI + Anthropic HTTP server on 127.0.0.1, run in a thread by the tests.

It answers the five priced endpoints in the providers' wire formats (JSON and SSE streams),
with usage the test chooses, scripted errors (with ``retry-after-ms`` so SDK retries are
quick), bodies without usage, garbage bodies and cut-off streams. It records what it received
and the usage it billed, so tests assert on what actually reached "the provider".

Hostile modes (all off by default): ``patch_usage`` replaces or (with `DROP`) removes fields
of every usage object of the reply, ``patch_last_delta`` those of an Anthropic stream's last
``message_delta`` only; ``stream_content_type`` sends streams with another Content-Type (``""``:
none); ``big_chunk`` makes a stream's first content chunk carry that many characters on one
line; ``gzip`` compresses streams too; ``encoding`` ("gzip", "br", "zstd") compresses a JSON
reply. Request bodies with a ``Content-Encoding`` (gzip, deflate, br, zstd, or a list) are
decoded before they are read; ``sent_digests`` has the SHA-256 of every stream body as sent
(compressed, with ``gzip``).

Usage of a reply: ``input`` tokens (default 10, uncached; OpenAI ``prompt_tokens`` is input +
cached), ``output`` tokens (an int, or ``"max"``: the request's output bound), ``cached``
(cache reads), ``cache_write`` (Anthropic 5-minute writes).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DROP: Any = object()
"""A `Reply.patch_usage` value that removes the field."""


@dataclass
class Reply:
    """How to answer one request."""

    status: int = 200
    input: int = 10
    output: int | str = 5
    cached: int = 0
    cache_write: int = 0
    omit_usage: bool = False
    garbage: bool = False
    cut_stream: bool = False
    gzip: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    redirect: str | None = None  # answer 307 with this Location (nothing billed)
    patch_usage: dict[str, Any] = field(default_factory=dict)
    patch_last_delta: dict[str, Any] = field(default_factory=dict)
    stream_content_type: str | None = None
    big_chunk: int = 0
    encoding: str = ""  # "gzip", "br" or "zstd": compress a JSON reply with it
    thoughts: int = 0  # Gemini thoughtsTokenCount (billed as output)
    tool_use: int = 0  # Gemini toolUsePromptTokenCount (billed as input)
    response_model: str | None = None  # the model the reply names (default: the request's)


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes = b""


@dataclass
class Billed:
    """Usage the server reported in a complete response (what a provider would charge)."""

    model: str
    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    thoughts: int = 0
    tool_use: int = 0


class FakeLLM:
    """The server: ``url`` is its base URL; ``script`` replies are used first, then ``default``."""

    def __init__(self) -> None:
        self.default = Reply()
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self.billed: list[Billed] = []
        self.sent_digests: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, each reply would wait
            # ~40 ms for the client's delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.billed.clear()
            self.sent_digests.clear()
            self.script.clear()
            self.default = Reply()

    # -- request handling -----------------------------------------------------------------

    def _next(self) -> Reply:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length", "0"))
        raw = h.rfile.read(length)
        try:
            body = json.loads(_decoded(raw, h.headers.get("content-encoding", "")))
        except Exception:  # not JSON, or not decodable: answer as to an empty body
            body = {}
        if not isinstance(body, dict):
            body = {}
        path = h.path.split("?")[0]
        with self._lock:
            self.received.append(Received(path, body, dict(h.headers), raw))
        reply = self._next()
        if reply.redirect is not None:
            self._send_raw(h, 307, b"", "text/plain", {**reply.headers, "location": reply.redirect})
            return
        if reply.status >= 400:
            payload = {"error": {"message": "scripted error", "type": "server_error"}}
            self._send_json(h, reply.status, payload, reply.headers)
            return
        if reply.garbage:
            self._send_raw(h, 200, b"<html>not json</html>", "application/json", reply.headers)
            return
        gemini = _GEMINI_PATH.search(path)
        if gemini is not None:
            self._gemini(h, gemini.group(1), gemini.group(2), body, reply)
            return
        kind = _kind(path)
        model = str(body.get("model", "?"))
        output = _output(reply, body, kind)
        tokens = Billed(model, reply.input, output, reply.cached, reply.cache_write)
        stream = body.get("stream") is True
        # Billing is recorded before the reply goes out: the client may check it as soon as
        # it has read the reply.
        if stream:
            events = _stream_events(kind, body, tokens, reply)
            if not reply.cut_stream and not reply.omit_usage and _stream_has_usage(kind, body):
                with self._lock:
                    self.billed.append(tokens)
            self._send_stream(h, events, reply)
            return
        if not reply.omit_usage:
            with self._lock:
                self.billed.append(tokens)
        payload = _response(kind, body, tokens, reply.omit_usage)
        if reply.response_model is not None:
            payload["model"] = reply.response_model
        if reply.patch_usage and isinstance(payload.get("usage"), dict):
            payload["usage"] = _patched(payload["usage"], reply.patch_usage)
        if reply.encoding:
            data = _compress(json.dumps(payload).encode(), reply.encoding)
            headers = {**reply.headers, "content-encoding": reply.encoding}
            self._send_raw(h, 200, data, "application/json", headers)
        elif reply.gzip:
            data = gzip.compress(json.dumps(payload).encode())
            headers = {**reply.headers, "content-encoding": "gzip"}
            self._send_raw(h, 200, data, "application/json", headers)
        else:
            self._send_json(h, 200, payload, reply.headers)

    def _gemini(
        self, h: BaseHTTPRequestHandler, model: str, action: str, body: dict[str, Any], r: Reply
    ) -> None:
        """Gemini generateContent / streamGenerateContent (alt=sse, or a JSON array) /
        countTokens (free: nothing billed)."""
        if action == "countTokens":
            self._send_json(h, 200, {"totalTokens": r.input}, r.headers)
            return
        config = body.get("generationConfig") or {}
        output = int(r.output) if r.output != "max" else int(config.get("maxOutputTokens", 4096))
        t = Billed(model, r.input, output, r.cached, thoughts=r.thoughts, tool_use=r.tool_use)
        version = r.response_model or model
        usage = None if r.omit_usage else _patched(_gemini_usage(t), r.patch_usage)
        if action == "generateContent":
            if usage is not None:
                with self._lock:
                    self.billed.append(t)
            payload = _gemini_chunk("hi", "STOP", usage, version)
            self._send_json(h, 200, payload, r.headers)
            return
        # A stream: every chunk carries usageMetadata, the first ones partial (prompt only).
        partial = None if r.omit_usage else {
            "promptTokenCount": t.input + t.cached,
            "totalTokenCount": t.input + t.cached,
        }
        chunks = [
            _gemini_chunk("h", None, partial, version),
            _gemini_chunk("i", "STOP", usage, version),
        ]
        if not r.cut_stream and usage is not None:
            with self._lock:
                self.billed.append(t)
        if "alt=sse" in h.path:
            self._send_stream(h, [(None, c) for c in chunks], r)
            return
        if r.cut_stream:  # the JSON array stops in the middle
            data = ("[" + json.dumps(chunks[0]) + ",\r\n").encode()
        else:
            data = ("[" + ",\r\n".join(json.dumps(c) for c in chunks) + "]").encode()
        self._send_raw(h, 200, data, "application/json", r.headers)

    def _send_raw(
        self, h: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str, extra: dict[str, str]
    ) -> None:
        h.send_response(status)
        h.send_header("content-type", ctype)
        h.send_header("content-length", str(len(data)))
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _send_json(
        self, h: BaseHTTPRequestHandler, status: int, payload: Any, extra: dict[str, str]
    ) -> None:
        self._send_raw(h, status, json.dumps(payload).encode(), "application/json", extra)

    def _send_stream(
        self, h: BaseHTTPRequestHandler, events: list[tuple[str | None, Any]], reply: Reply
    ) -> None:
        h.send_response(200)
        ctype = reply.stream_content_type
        if ctype is None:
            ctype = "text/event-stream"
        if ctype:
            h.send_header("content-type", ctype)
        h.send_header("connection", "close")
        if reply.gzip:
            h.send_header("content-encoding", "gzip")
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        if reply.cut_stream:
            events = events[: max(1, len(events) // 2)]
        digest = hashlib.sha256()
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16) if reply.gzip else None
        for piece in _event_pieces(events, reply.big_chunk):
            out = packer.compress(piece) if packer else piece
            if out:
                digest.update(out)
                h.wfile.write(out)
                h.wfile.flush()
        if packer:
            out = packer.flush()
            digest.update(out)
            h.wfile.write(out)
        with self._lock:
            self.sent_digests.append(digest.hexdigest())
        h.close_connection = True


_BIG = "@@big-chunk@@"


def _event_pieces(events: list[tuple[str | None, Any]], big: int) -> Iterator[bytes]:
    """The stream's bytes, event by event; a `_BIG` marker expands to ``big`` characters."""
    for name, data in events:
        text = "" if name is None else f"event: {name}\n"
        text += f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
        head, marker, tail = text.partition(_BIG)
        yield head.encode()
        if marker:
            for start in range(0, big, 1 << 20):
                yield b"x" * min(1 << 20, big - start)
            yield tail.encode()


def _compress(data: bytes, encoding: str) -> bytes:
    if encoding == "br":
        import brotli

        return bytes(brotli.compress(data))
    if encoding == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        return bytes(zstd.compress(data))
    return gzip.compress(data)


def _decoded(raw: bytes, encoding: str) -> bytes:
    """Undo a request's Content-Encoding (a list: the last one applied is undone first)."""
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding in ("gzip", "x-gzip"):
            raw = gzip.decompress(raw)
        elif coding == "deflate":
            try:
                raw = zlib.decompress(raw)
            except zlib.error:
                raw = zlib.decompress(raw, -zlib.MAX_WBITS)
        elif coding == "br":
            import brotli

            raw = bytes(brotli.decompress(raw))
        elif coding == "zstd":
            try:
                from compression import zstd
            except ImportError:
                from backports import zstd
            raw = bytes(zstd.decompress(raw))
    return raw


_GEMINI_PATH = re.compile(r"models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")


def _gemini_usage(t: Billed) -> dict[str, Any]:
    """usageMetadata as the Gemini API sends it: zero breakdowns are left out (proto3 JSON)."""
    usage: dict[str, Any] = {
        "promptTokenCount": t.input + t.cached,
        "candidatesTokenCount": t.output,
        "totalTokenCount": t.input + t.cached + t.output + t.thoughts + t.tool_use,
    }
    if t.cached:
        usage["cachedContentTokenCount"] = t.cached
    if t.thoughts:
        usage["thoughtsTokenCount"] = t.thoughts
    if t.tool_use:
        usage["toolUsePromptTokenCount"] = t.tool_use
    return usage


def _gemini_chunk(
    text: str, finish: str | None, usage: dict[str, Any] | None, version: str
) -> dict[str, Any]:
    content = {"role": "model", "parts": [{"text": text}]}
    candidate: dict[str, Any] = {"content": content, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": version, "responseId": "r1"}
    if usage is not None:
        out["usageMetadata"] = usage
    return out


def _patched(usage: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = {**usage, **patch}
    return {k: v for k, v in out.items() if v is not DROP}


def _kind(path: str) -> str:
    for suffix, kind in (
        ("/chat/completions", "chat"),
        ("/completions", "completions"),
        ("/responses", "responses"),
        ("/embeddings", "embeddings"),
        ("/messages", "messages"),
    ):
        if path.rstrip("/").endswith(suffix):
            return kind
    return "unknown"


def _output(reply: Reply, body: dict[str, Any], kind: str) -> int:
    if kind == "embeddings":
        return 0
    if reply.output != "max":
        return int(reply.output)
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int):
            return int(body[key]) * int(body.get("n") or 1)
    return 4096


def _stream_has_usage(kind: str, body: dict[str, Any]) -> bool:
    if kind in ("chat", "completions"):
        return bool((body.get("stream_options") or {}).get("include_usage"))
    return True


def _openai_usage(t: Billed) -> dict[str, Any]:
    prompt = t.input + t.cached
    return {
        "prompt_tokens": prompt,
        "completion_tokens": t.output,
        "total_tokens": prompt + t.output,
        "prompt_tokens_details": {"cached_tokens": t.cached},
    }


def _responses_usage(t: Billed) -> dict[str, Any]:
    prompt = t.input + t.cached
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": t.cached},
        "output_tokens": t.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + t.output,
    }


def _anthropic_usage(t: Billed, output: int) -> dict[str, Any]:
    return {
        "input_tokens": t.input,
        "output_tokens": output,
        "cache_creation_input_tokens": t.cache_write,
        "cache_read_input_tokens": t.cached,
    }


def _response_object(body: dict[str, Any], t: Billed, omit: bool) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": t.model,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hi", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None if omit else _responses_usage(t),
    }


def _response(kind: str, body: dict[str, Any], t: Billed, omit: bool) -> dict[str, Any]:
    if kind == "chat":
        out: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": t.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _openai_usage(t),
        }
    elif kind == "completions":
        out = {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": t.model,
            "choices": [{"text": "hi", "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": _openai_usage(t),
        }
    elif kind == "embeddings":
        vector = [0.25, 0.5]
        inputs = body.get("input")
        n = len(inputs) if isinstance(inputs, list) and inputs and isinstance(inputs[0], str) else 1
        if body.get("encoding_format") == "base64":
            encoded: Any = base64.b64encode(struct.pack("<2f", *vector)).decode()
        else:
            encoded = vector
        out = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encoded} for i in range(n)],
            "model": t.model,
            "usage": {"prompt_tokens": t.input, "total_tokens": t.input},
        }
    elif kind == "responses":
        return _response_object(body, t, omit)
    else:
        out = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": t.model,
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": _anthropic_usage(t, t.output),
        }
    if omit:
        out.pop("usage", None)
    return out


def _stream_events(
    kind: str, body: dict[str, Any], t: Billed, reply: Reply
) -> list[tuple[str | None, Any]]:
    omit = reply.omit_usage
    if kind in ("chat", "completions"):
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def chunk(choice: dict[str, Any] | None, usage: Any = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-1",
                "object": obj,
                "created": 1,
                "model": reply.response_model or t.model,
                "choices": [choice] if choice else [],
                "usage": usage,
            }

        if kind == "chat":
            first = {"index": 0, "delta": {"role": "assistant", "content": "h"}}
            if reply.big_chunk:
                first["delta"]["content"] = _BIG
            last = {"index": 0, "delta": {"content": "i"}, "finish_reason": "stop"}
        else:
            first = {"index": 0, "text": _BIG if reply.big_chunk else "h", "finish_reason": None,
                     "logprobs": None}
            last = {"index": 0, "text": "i", "finish_reason": "stop", "logprobs": None}
        events: list[tuple[str | None, Any]] = [(None, chunk(first)), (None, chunk(last))]
        if _stream_has_usage(kind, body) and not omit:
            events.append((None, chunk(None, _patched(_openai_usage(t), reply.patch_usage))))
        events.append((None, "[DONE]"))
        return events
    if kind == "responses":
        created = _response_object(body, t, True)
        created["status"] = "in_progress"
        done = _response_object(body, t, omit)
        if reply.patch_usage and isinstance(done.get("usage"), dict):
            done["usage"] = _patched(done["usage"], reply.patch_usage)
        return [
            (
                "response.created",
                {"type": "response.created", "response": created, "sequence_number": 0},
            ),
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "delta": "hi",
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "sequence_number": 1,
                },
            ),
            (
                "response.completed",
                {"type": "response.completed", "response": done, "sequence_number": 2},
            ),
        ]
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": t.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _patched(_anthropic_usage(t, 1), reply.patch_usage),
        },
    }
    events = [
        ("message_start", start),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hi"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    # Two cumulative deltas: a reader that sums them instead of taking the last one is wrong.
    half = max(t.output // 2, 1)
    if not omit:
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": None, "stop_sequence": None},
                    "usage": _patched({"output_tokens": half}, reply.patch_usage),
                },
            )
        )
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": _patched(
                        _patched({"output_tokens": t.output}, reply.patch_usage),
                        reply.patch_last_delta,
                    ),
                },
            )
        )
    events.append(("message_stop", {"type": "message_stop"}))
    return events
