"""Pre-call cost estimates: what a gateway reserves before it knows the real usage.

Two estimators, chosen by name from `ESTIMATORS`:

* ``omnillm`` (faithful): ``max(1, prompt_bytes // 4) + (max_output or 1024)`` tokens, *all*
  priced at the input rate with omnillm's ``floor``. Not an upper bound: output tokens cost
  3-6x the input rate, so actual costs often exceed it (reference section 5).
* ``upper-bound``: a true worst case. Prompt tokens are bounded by the prompt's UTF-8 bytes
  (byte-level BPE tokenizers never emit a token for less than one byte) plus a per-message
  allowance for chat-template tokens; they are priced at the highest input-side rate the
  model has (cache writes and long-context tiers included), and ``max_output`` tokens at the
  highest output rate, rounded up. Every usage within those bounds costs at most the
  estimate, so budget invariant I2 applies. A request with no output bound has no true worst
  case: the estimator then uses ``default_max_output`` and marks the estimate unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
    "prompt_token_bound",
]

OMNILLM_DEFAULT_MAX_OUTPUT = 1024
MESSAGE_OVERHEAD_TOKENS = 8
"""Chat-template tokens allowed per message (OpenAI's format uses 3-4)."""
REQUEST_OVERHEAD_TOKENS = 16
"""Chat-template tokens allowed per request (reply priming, system framing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EstimateRequest:
    """What is known about a request before it is sent.

    ``prompt_bytes`` is the UTF-8 length of the prompt text (messages, instructions, tool
    payloads); ``messages`` the number of chat messages; ``prompt_tokens`` an exact token
    count when the caller has one (a tokenizer, or a trace that records it).

    Raises:
        InvalidValueError: negative or non-integer counts, or an empty model name.
    """

    model: str
    prompt_bytes: int = 0
    max_output_tokens: int | None = None
    messages: int = 1
    prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidValueError("model", self.model, "must be a non-empty model name")
        pb, msgs = self.prompt_bytes, self.messages
        mo, pt = self.max_output_tokens, self.prompt_tokens
        if (  # hot path (one per simulated request): plain ints pass one test
            type(pb) is int and pb >= 0 and type(msgs) is int and msgs >= 0
            and (mo is None or (type(mo) is int and mo >= 0))
            and (pt is None or (type(pt) is int and pt >= 0))
        ):
            return
        non_negative_int("prompt_bytes", self.prompt_bytes)
        non_negative_int("messages", self.messages)
        if self.max_output_tokens is not None:
            non_negative_int("max_output_tokens", self.max_output_tokens)
        if self.prompt_tokens is not None:
            non_negative_int("prompt_tokens", self.prompt_tokens)


@dataclass(frozen=True, slots=True)
class Estimate:
    """An estimate: the tokens reserved against a key's token cap and the money reserved.

    ``bounded`` is True when ``cost`` is a true upper bound of the request's actual cost.
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
        prompt = max(1, request.prompt_bytes // 4)
        output = (
            request.max_output_tokens
            if request.max_output_tokens is not None
            else self.default_max_output
        )
        tokens = prompt + output
        rate = prices.price(request.model).rates.input
        return Estimate(tokens, prompt, output, tokens * rate // 1_000_000, bounded=False)


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
        in_rate, out_rate = prices.price(request.model).worst_rates(prompt)
        numerator = prompt * in_rate + output * out_rate
        return Estimate(prompt + output, prompt, output, -(-numerator // 1_000_000), bounded)


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
