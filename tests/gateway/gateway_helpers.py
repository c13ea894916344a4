"""Shared builders for the gateway tests: a gateway on omnillm's prices with a pinned start.

Imported by the test modules of this directory as ``gateway_helpers``."""

import random

from omnillm_sim.budget import BudgetTracker
from omnillm_sim.gateway import Gateway, GatewayConfig, KeyConfig, Request
from omnillm_sim.pricing import catalogue

PRICES = catalogue("omnillm-0.1.5", fallback="gpt-4o")


class FixedStart(random.Random):
    """A Random whose `randrange` always returns `start` (omnillm's random start, pinned)."""

    def __init__(self, start: int = 0) -> None:
        super().__init__(0)
        self.start = start

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return self.start


def make_gateway(
    policy: str,
    *,
    keys: int = 1,
    limit: int = 10_000_000,
    start: int = 0,
    key: dict[str, int] | None = None,
    **config: object,
) -> Gateway:
    """A gateway with ``keys`` identical keys, a budget of ``limit`` µ$ and a pinned start."""
    cfg = GatewayConfig(
        keys=tuple(KeyConfig(label=f"k{i}", **(key or {})) for i in range(keys)),
        policy=policy,
        **config,  # type: ignore[arg-type]
    )
    return Gateway(
        cfg, budget=BudgetTracker.from_micros(limit), prices=PRICES, rng=FixedStart(start)
    )


def req(
    rid: int = 1,
    *,
    prompt: int = 100,
    out: int | None = 1024,
    stream: bool = False,
    model: str = "gpt-4o",
    prompt_bytes: int | None = None,
) -> Request:
    """A request; gpt-4o costs 5 µ$ per input token and 15 µ$ per output token."""
    return Request(
        id=rid,
        model=model,
        prompt_tokens=prompt,
        max_output_tokens=out,
        stream=stream,
        prompt_bytes=prompt_bytes,
    )
