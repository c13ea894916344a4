"""Pre-call cost estimates: what a gateway reserves before it knows the real usage.

Two estimators, chosen by name from `ESTIMATORS`:

* ``omnillm`` (faithful): ``max(1, prompt_bytes // 4) + (max_output or 1024)`` tokens, *all*
  priced at the input rate with omnillm's ``floor``. Not an upper bound: output tokens cost
  3-6x the input rate, so actual costs often exceed it (reference section 5).
* ``upper-bound``: a true worst case. Prompt tokens are bounded by the prompt's UTF-8 bytes
  (byte-level BPE tokenizers never emit a token for less than one byte) plus a per-message
  allowance for chat-template tokens; they are priced at the highest input-side rate the
  model has (cache writes and long-context tiers included), and ``max_output`` tokens (plus
  ``thinking_tokens``, billed as output) at the highest output rate, rounded up. Every usage
  within those bounds costs at most the estimate, so budget invariant I2 applies. A request
  with no output bound has no true worst case: the estimator then uses ``default_max_output``
  and marks the estimate unbounded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from omnillm_sim.errors import ConfigError, InvalidValueError
from omnillm_sim.money import MicroDollar
from omnillm_sim.pricing import PriceTable
from omnillm_sim.validate import non_negative_int, positive_int

__all__ = [
    "ESTIMATORS",
    "MESSAGE_OVERHEAD_TOKENS",
    "REQUEST_OVERHEAD_TOKENS",
    "Estimate",
    "EstimateRequest",
    "Estimator",
    "OmnillmEstimator",
    "UpperBoundEstimator",
    "get_estimator",
    "omnillm_prompt_bytes",
    "prompt_token_bound",
]

OMNILLM_DEFAULT_MAX_OUTPUT = 1024
MESSAGE_OVERHEAD_TOKENS = 8
"""Chat-template tokens allowed per message (OpenAI's format uses 3-4)."""
REQUEST_OVERHEAD_TOKENS = 16
"""Chat-template tokens allowed per request (reply priming, system framing)."""
_new = tuple.__new__  # a named tuple without the keyword-parsing constructor (hot path)


class _EstimateRequestFields(NamedTuple):
    model: str
    prompt_bytes: int
    max_output_tokens: int | None
    messages: int
    prompt_tokens: int | None
    omnillm_prompt_bytes: int | None
    thinking_tokens: int


class EstimateRequest(_EstimateRequestFields):
    """What is known about a request before it is sent (keyword arguments only).

    ``prompt_bytes`` is the UTF-8 length of the prompt text (messages, instructions, tool
    payloads); ``messages`` the number of chat messages; ``prompt_tokens`` an exact token
    count when the caller has one (a tokenizer, or a trace that records it).
    ``omnillm_prompt_bytes``, when known, is the byte count omnillm's own rendering of the
    request gives (`omnillm_prompt_bytes`); the ``omnillm`` estimator prefers it.
    ``thinking_tokens`` are output tokens a thinking budget allows on top of
    ``max_output_tokens`` (Gemini's ``thinkingConfig.thinkingBudget``; billed as output).

    An immutable named tuple (one is made per request the simulator or the plugin sees).

    Raises:
        InvalidValueError: negative or non-integer counts, or an empty model name.
    """

    __slots__ = ()

    def __new__(
        cls,
        *,
        model: str,
        prompt_bytes: int = 0,
        max_output_tokens: int | None = None,
        messages: int = 1,
        prompt_tokens: int | None = None,
        omnillm_prompt_bytes: int | None = None,
        thinking_tokens: int = 0,
    ) -> EstimateRequest:
        if omnillm_prompt_bytes is not None:
            non_negative_int("omnillm_prompt_bytes", omnillm_prompt_bytes)
        if thinking_tokens:
            non_negative_int("thinking_tokens", thinking_tokens)
        if not isinstance(model, str) or not model.strip():
            raise InvalidValueError("model", model, "must be a non-empty model name")
        pb, msgs, mo, pt = prompt_bytes, messages, max_output_tokens, prompt_tokens
        if not (  # hot path: plain ints pass one test
            type(pb) is int and pb >= 0 and type(msgs) is int and msgs >= 0
            and (mo is None or (type(mo) is int and mo >= 0))
            and (pt is None or (type(pt) is int and pt >= 0))
        ):
            non_negative_int("prompt_bytes", pb)
            non_negative_int("messages", msgs)
            if mo is not None:
                non_negative_int("max_output_tokens", mo)
            if pt is not None:
                non_negative_int("prompt_tokens", pt)
        return _new(cls, (model, pb, mo, msgs, pt, omnillm_prompt_bytes, thinking_tokens))

    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, object]]:
        return (), self._asdict()  # copy and pickle through the keyword-only constructor


class Estimate(NamedTuple):
    """An estimate: the tokens reserved against a key's token cap and the money reserved.

    ``bounded`` is True when ``cost`` is a true upper bound of the request's actual cost.
    An immutable named tuple (one is made per simulated request shape).
    """

    tokens: int
    prompt_tokens: int
    output_tokens: int
    cost: MicroDollar
    bounded: bool


class Estimator(Protocol):
    """Turns an `EstimateRequest` into an `Estimate` with a price table."""

    @property
    def name(self) -> str: ...

    def estimate(self, request: EstimateRequest, prices: PriceTable) -> Estimate: ...


def prompt_token_bound(prompt_bytes: int, messages: int = 1) -> int:
    """An upper bound on the prompt tokens of ``prompt_bytes`` of text in ``messages`` messages."""
    non_negative_int("prompt_bytes", prompt_bytes)
    non_negative_int("messages", messages)
    return prompt_bytes + MESSAGE_OVERHEAD_TOKENS * messages + REQUEST_OVERHEAD_TOKENS


@dataclass(frozen=True, slots=True)
class OmnillmEstimator:
    """omnillm 0.1.5's estimate: bytes/4 + max_output (1024 default), all at the input rate."""

    default_max_output: int = OMNILLM_DEFAULT_MAX_OUTPUT
    name: str = "omnillm"

    def estimate(self, request: EstimateRequest, prices: PriceTable) -> Estimate:
        """Reproduce ``estimated_tokens()`` and ``pricing::estimate`` (floor per 1k tokens)."""
        size = request.omnillm_prompt_bytes
        prompt = max(1, (request.prompt_bytes if size is None else size) // 4)
        output = (
            request.max_output_tokens
            if request.max_output_tokens is not None
            else self.default_max_output
        )
        tokens = prompt + output
        rate = prices.price(request.model).rates.input
        return _new(Estimate, (tokens, prompt, output, tokens * rate // 1_000_000, False))


@dataclass(frozen=True, slots=True)
class UpperBoundEstimator:
    """A true worst-case estimate (see the module docstring).

    ``default_max_output``: the output bound assumed when a request has none (the estimate
    is then marked ``bounded=False``); ``None`` makes such requests an error instead.
    """

    default_max_output: int | None = 4096
    name: str = "upper-bound"

    def __post_init__(self) -> None:
        if self.default_max_output is not None:
            positive_int("default_max_output", self.default_max_output)

    def estimate(self, request: EstimateRequest, prices: PriceTable) -> Estimate:
        """Worst case of every usage within the request's prompt and output bounds.

        Raises:
            InvalidValueError: no output bound and no ``default_max_output``.
        """
        if request.prompt_tokens is not None:
            prompt = request.prompt_tokens
        else:
            prompt = prompt_token_bound(request.prompt_bytes, request.messages)
        bounded = request.max_output_tokens is not None
        if request.max_output_tokens is not None:
            output = request.max_output_tokens
        elif self.default_max_output is not None:
            output = self.default_max_output
        else:
            raise InvalidValueError(
                "max_output_tokens", None, "is required by the upper-bound estimator"
            )
        output += request.thinking_tokens
        in_rate, out_rate = prices.price(request.model).worst_rates(prompt)
        numerator = prompt * in_rate + output * out_rate
        cost = -(-numerator // 1_000_000)
        return _new(Estimate, (prompt + output, prompt, output, cost, bounded))


# -- omnillm's prompt size of a wire request (types/request.rs 100-142, message.rs) ------------


def _json_len(value: Any) -> int:
    """UTF-8 length of serde_json's compact ``Value::to_string()`` (key order does not matter)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _text_len(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else 0


def _tool_output(content: Any) -> Any:
    """The crate's ``content_to_json_string``: text blocks joined, else the JSON as a string."""
    if isinstance(content, list):
        text = "".join(
            b["text"] for b in content
            if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
        return text if text else json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    return None if content is None else content


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


_Part = tuple[int, str | None]  # (estimated chars, plain text or None)


def _openai_parts(message: Mapping[str, Any]) -> list[_Part]:
    if message.get("role") == "tool":  # one ToolResult part: output.to_string()
        return [(_json_len(_tool_output(message.get("content"))), None)]
    parts: list[_Part] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append((_text_len(content), content))
    elif isinstance(content, list):
        for raw in content:
            part = raw if isinstance(raw, dict) else {}
            kind = part.get("type", "text")
            kind = kind if isinstance(kind, str) else "text"  # serde: as_str() or "text"
            if kind == "text":
                text = part.get("text")
                text = text if isinstance(text, str) else ""
                parts.append((_text_len(text), text))
            elif kind == "image_url":  # ImageUrl: the URL's length (a data: URL included)
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                parts.append((_text_len(url), None))
            elif kind == "refusal":
                text = part.get("text")
                text = text if isinstance(text, str) else ""
                parts.append((_text_len(text), text))
            else:
                parts.append((_json_len(part), None))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        function = function if isinstance(function, dict) else {}
        arguments = _maybe_json(function.get("arguments", {}))
        parts.append((_json_len(arguments) + _text_len(function.get("name", "")), None))
    return parts


def _anthropic_parts(message: Mapping[str, Any]) -> list[_Part]:
    content = message.get("content")
    if isinstance(content, str):
        return [(_text_len(content), content)]
    parts: list[_Part] = []
    for block in content if isinstance(content, list) else ():
        kind = block.get("type", "") if isinstance(block, dict) else ""
        source = block.get("source") if isinstance(block, dict) else None
        data = source.get("data") if isinstance(source, dict) else None
        if kind == "text":
            text = block.get("text")
            text = text if isinstance(text, str) else ""
            parts.append((_text_len(text), text))
        elif kind == "tool_use":
            parts.append((_json_len(block.get("input")) + _text_len(block.get("name", "")), None))
        elif kind == "tool_result":
            parts.append((_json_len(_tool_output(block.get("content"))), None))
        elif kind in ("image", "document"):  # base64 data counts len / 8
            parts.append(((len(data) if isinstance(data, str) else 0) // 8, None))
        else:
            parts.append((_json_len(block), None))
    return parts


def omnillm_prompt_bytes(
    body: Mapping[str, Any], wire: Literal["openai-chat", "anthropic-messages"]
) -> int:
    """The prompt size omnillm 0.1.5 estimates from, for a request body of ``wire`` format.

    The crate sums the UTF-8 length of every input item (text its bytes; an image URL its
    length; base64 images and files ``len / 8``; tool calls their JSON arguments plus name;
    tool results and unknown parts their JSON), then adds its instructions: Anthropic's
    ``system`` (which it also keeps as a first system message, so it counts twice), or, with
    no instructions (OpenAI chat), the text of the system and developer messages joined by
    ``"\n\n"`` (counted a second time). Tool definitions and response schemas are not
    counted. `OmnillmEstimator` takes ``max(1, bytes // 4)`` of it.

    Raises:
        InvalidValueError: an unknown ``wire`` or a body without a ``messages`` list.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidValueError("body", "messages", "must have a 'messages' list")
    items: list[tuple[str, list[_Part]]] = []
    instructions: str | None = None
    if wire == "openai-chat":
        for m in messages:
            m = m if isinstance(m, Mapping) else {}
            role = m.get("role")
            items.append((role if isinstance(role, str) else "user", _openai_parts(m)))
    elif wire == "anthropic-messages":
        system = body.get("system")
        if isinstance(system, list):
            system = "\n".join(
                b["text"] for b in system
                if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
        if isinstance(system, str) and system:
            instructions = system
            items.append(("system", [(_text_len(system), system)]))
        for m in messages:
            m = m if isinstance(m, Mapping) else {}
            role = m.get("role", "assistant")
            items.append((role if isinstance(role, str) else "user", _anthropic_parts(m)))
    else:
        raise InvalidValueError("wire", wire, "must be 'openai-chat' or 'anthropic-messages'")
    total = sum(chars for _, parts in items for chars, _ in parts)
    if instructions is None:
        folded = [
            "".join(text for _, text in parts if text is not None)
            for role, parts in items
            if role in ("system", "developer")
        ]
        instructions = "\n\n".join(text for text in folded if text)
    return total + len(instructions.encode())


ESTIMATORS: dict[str, type[OmnillmEstimator] | type[UpperBoundEstimator]] = {
    "omnillm": OmnillmEstimator,
    "upper-bound": UpperBoundEstimator,
}


def get_estimator(name: str, *, default_max_output: int | None = None) -> Estimator:
    """An estimator by name; ``default_max_output`` overrides its default output bound.

    Raises:
        ConfigError: unknown estimator name.
    """
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ConfigError(
            "estimator", name, f"must be one of {', '.join(sorted(ESTIMATORS))}"
        ) from None
    if default_max_output is None:
        return cls()
    return cls(default_max_output)
