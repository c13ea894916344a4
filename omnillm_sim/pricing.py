"""Prices and costs: one `PriceTable` type, two catalogues, integer arithmetic.

Prices are integer micro-dollars per million tokens (``$2.50/M`` is ``2_500_000``), so a cost
is ``sum(tokens x rate)`` divided by 10**6 in integers. Two rounding rules exist, one per
catalogue:

* ``"ceil"`` (the ``current`` catalogue and TOML overrides): the whole sum rounds up once, so
  a cost is never below the exact price;
* ``"omnillm"`` (the ``omnillm-0.1.5`` catalogue): omnillm's ``floor(tokens x rate / 1000)``
  per component, with its cache rules (reference section 6), so the faithful policy charges
  what the real gateway charges.

Catalogues:

* ``omnillm-0.1.5``: the seed gateway's hard-coded prefix table (first matching prefix wins).
  Unknown models are an error unless you pass ``fallback="gpt-4o"``, which reproduces omnillm's
  catch-all $5/$15 (what the faithful policy does).
* ``current``: today's prices from the ``genai-prices`` package's bundled data; fully offline.

`Usage.input_tokens` counts *uncached* input tokens (Anthropic's ``input_tokens``; OpenAI's
``prompt_tokens - cached_tokens``); cache reads and writes are separate fields.

`Usage.shape` says how the provider reported the counts: ``"openai"`` (cached tokens are
part of ``prompt_tokens``) or ``"anthropic"`` (cache reads and writes are reported beside
``input_tokens``); ``None`` when unknown. ``current`` prices every shape alike; the
``omnillm-0.1.5`` rules depend on it, exactly as the crate's ``actual()`` (pricing.rs 79-113):

* OpenAI-shaped on a row with a cached-input rate (gpt-5.x): uncached prompt at the input
  rate, cached at the cached rate; on any other row (Claude rows included) the whole prompt
  at the input rate;
* Anthropic-shaped: ``input_tokens`` at the input rate, plus, on Claude rows only, reads at
  the read rate and 5-minute / 1-hour writes at theirs; on other rows (the catch-all:
  claude-3-7-sonnet, claude-3-5-haiku, claude-3-opus, ...) cache reads and writes are free.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple

from omnillm_sim.errors import ConfigError, InvalidValueError, UnknownModelError
from omnillm_sim.money import MicroDollar, usd_to_micro
from omnillm_sim.validate import non_negative_int

__all__ = [
    "CATALOGUES",
    "ModelPrice",
    "PriceTable",
    "PriceTier",
    "Rates",
    "Rounding",
    "Usage",
    "UsageShape",
    "catalogue",
    "load_overrides",
]

Rounding = Literal["ceil", "omnillm"]
UsageShape = Literal["openai", "anthropic"]
_new = tuple.__new__
_PER_MILLION = 1_000_000


class _UsageFields(NamedTuple):
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    shape: UsageShape | None


class Usage(_UsageFields):
    """Tokens one request consumed, as a provider reports them.

    ``input_tokens`` excludes cache reads and writes; ``cache_write_tokens`` are 5-minute
    cache writes and ``cache_write_1h_tokens`` 1-hour ones (Anthropic). ``shape`` is the wire
    shape the counts came in (see the module docstring); it does not take part in equality:
    two usages with the same counts are equal.

    An immutable named tuple, not a frozen dataclass: one is made per simulated reply, and a
    frozen dataclass costs several times as much to construct.

    Raises:
        InvalidValueError: a count that is not an int >= 0, an unknown shape.
    """

    __slots__ = ()

    def __new__(
        cls,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        shape: UsageShape | None = None,
    ) -> Usage:
        i, o, r, w, h = (
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
            cache_write_1h_tokens,
        )
        # Hot path (one Usage per simulated reply): one test when every count is a plain int.
        if not (type(i) is int and type(o) is int and type(r) is int and type(w) is int
                and type(h) is int and i >= 0 and o >= 0 and r >= 0 and w >= 0 and h >= 0
                and (shape is None or shape == "openai" or shape == "anthropic")):
            if shape is not None and shape not in ("openai", "anthropic"):
                raise InvalidValueError("shape", shape, "must be 'openai', 'anthropic' or None")
            non_negative_int("input_tokens", i)
            non_negative_int("output_tokens", o)
            non_negative_int("cache_read_tokens", r)
            non_negative_int("cache_write_tokens", w)
            non_negative_int("cache_write_1h_tokens", h)
        return _new(cls, (i, o, r, w, h, shape))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Usage):
            return self[:5] == other[:5]
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Usage):
            return self[:5] != other[:5]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self[:5])

    @property
    def prompt_tokens(self) -> int:
        """Every input-side token: uncached input plus cache reads and writes."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.cache_write_1h_tokens
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rates:
    """Micro-dollars per million tokens. A missing cache rate means "charged as input"."""

    input: int
    output: int
    cache_read: int | None = None
    cache_write: int | None = None
    cache_write_1h: int | None = None

    def __post_init__(self) -> None:
        non_negative_int("input", self.input)
        non_negative_int("output", self.output)
        for name in ("cache_read", "cache_write", "cache_write_1h"):
            value = getattr(self, name)
            if value is not None:
                non_negative_int(name, value)

    @property
    def max_input_side(self) -> int:
        """The highest rate any input-side token can be charged at."""
        return max(
            r
            for r in (self.input, self.cache_read, self.cache_write, self.cache_write_1h)
            if r is not None
        )

    def exact_cost_numerator(self, usage: Usage) -> int:
        """``sum(tokens x rate)``: the cost in micro-dollars times 10**6, exactly."""
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        write_1h = write if self.cache_write_1h is None else self.cache_write_1h
        return (
            usage.input_tokens * self.input
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
            + usage.cache_write_1h_tokens * write_1h
            + usage.output_tokens * self.output
        )

    def omnillm_cost(self, usage: Usage) -> MicroDollar:
        """omnillm 0.1.5's ``actual()``: per-component ``floor(tokens x rate / 1000)`` (per 1k).

        Rows with cache read and write rates are the crate's Claude rows; a row with only a
        read rate is an OpenAI row (its cached-input rate). A shaped usage is priced as the
        crate prices that shape (module docstring). An unshaped one: Claude rows add cache
        reads and writes on top of the uncached input, OpenAI rows charge reads at the
        cached rate, and with no cache rate every input-side token is charged at the input
        rate.
        """

        m = _PER_MILLION  # each part: floor(tokens x rate / 1e6), written out (hot path)
        cost = usage.output_tokens * self.output // m
        claude = self.cache_read is not None and self.cache_write is not None
        if usage.shape == "openai":
            # prompt_tokens counts the cached tokens; only a cached-input rate discounts them
            prompt = usage.prompt_tokens
            if claude or self.cache_read is None:
                return cost + prompt * self.input // m
            cached = usage.cache_read_tokens
            return cost + (prompt - cached) * self.input // m + cached * self.cache_read // m
        if usage.shape == "anthropic":
            cost += usage.input_tokens * self.input // m
            if not claude:
                return cost  # no Claude cache rates on this row: reads and writes cost nothing
            assert self.cache_read is not None and self.cache_write is not None
            write_1h = self.cache_write if self.cache_write_1h is None else self.cache_write_1h
            return (
                cost
                + usage.cache_read_tokens * self.cache_read // m
                + usage.cache_write_tokens * self.cache_write // m
                + usage.cache_write_1h_tokens * write_1h // m
            )
        if self.cache_read is not None and self.cache_write is not None:
            write_1h = self.cache_write if self.cache_write_1h is None else self.cache_write_1h
            return (
                cost
                + usage.input_tokens * self.input // m
                + usage.cache_read_tokens * self.cache_read // m
                + usage.cache_write_tokens * self.cache_write // m
                + usage.cache_write_1h_tokens * write_1h // m
            )
        writes = usage.cache_write_tokens + usage.cache_write_1h_tokens
        if self.cache_read is not None:
            return (
                cost
                + (usage.input_tokens + writes) * self.input // m
                + usage.cache_read_tokens * self.cache_read // m
            )
        # every input-side token (`usage.prompt_tokens`, without the property's call)
        return cost + (usage.input_tokens + usage.cache_read_tokens + writes) * self.input // m


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Rates that apply to the whole request once its prompt tokens exceed ``start``."""

    start: int
    rates: Rates


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """A model's prices: base rates plus optional long-context tiers ("cliff" pricing)."""

    model: str
    rates: Rates
    tiers: tuple[PriceTier, ...] = ()
    source: str = ""

    def rates_for(self, prompt_tokens: int) -> Rates:
        """The rates that apply to a request with ``prompt_tokens`` input-side tokens."""
        chosen = self.rates
        for tier in self.tiers:  # sorted by start
            if prompt_tokens > tier.start:
                chosen = tier.rates
        return chosen

    def worst_rates(self, prompt_tokens_bound: int) -> tuple[int, int]:
        """Highest (input-side, output) rates any request of <= ``prompt_tokens_bound`` can pay."""
        candidates = [self.rates] + [t.rates for t in self.tiers if prompt_tokens_bound > t.start]
        return (
            max(r.max_input_side for r in candidates),
            max(r.output for r in candidates),
        )


@dataclass(frozen=True)
class PriceTable:
    """Maps model names to `ModelPrice` and computes costs in integer micro-dollars.

    Lookup order: exact ``entries`` (overrides first), then ``prefixes`` in order, then the
    ``resolver`` (genai-prices for ``current``), then ``fallback`` if one was chosen.

    Raises (from `price` and `cost`):
        UnknownModelError: the model is unknown and no fallback was chosen.
        InvalidValueError: the model name is not a non-empty string.
    """

    name: str
    rounding: Rounding
    entries: Mapping[str, ModelPrice] = field(default_factory=dict)
    prefixes: tuple[ModelPrice, ...] = ()
    resolver: Callable[[str], ModelPrice | None] | None = None
    fallback: str | None = None
    _cache: dict[str, ModelPrice] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.rounding not in ("ceil", "omnillm"):
            raise InvalidValueError("rounding", self.rounding, "must be 'ceil' or 'omnillm'")
        if self.fallback is not None:
            # Fail at construction, not in the middle of a run.
            self._lookup(self.fallback, "fallback")

    def price(self, model: str) -> ModelPrice:
        """The `ModelPrice` for ``model``; unknown models use the fallback, if one was chosen."""
        cached = self._cache.get(model)
        if cached is not None:
            return cached
        found = self._lookup(model, "model", allow_fallback=True)
        self._cache[model] = found
        return found

    def _lookup(self, model: str, parameter: str, *, allow_fallback: bool = False) -> ModelPrice:
        if not isinstance(model, str) or not model.strip():
            raise InvalidValueError(parameter, model, "must be a non-empty model name")
        if model in self.entries:
            return self.entries[model]
        for entry in self.prefixes:
            if model.startswith(entry.model):
                return entry
        if self.resolver is not None:
            resolved = self.resolver(model)
            if resolved is not None:
                return resolved
        if allow_fallback and self.fallback is not None:
            return replace(
                self._lookup(self.fallback, "fallback"), source=f"fallback {self.fallback}"
            )
        hint = "pass a fallback model or add it to a prices TOML file (--prices FILE)"
        raise UnknownModelError(model, self.name, hint)

    def cost(self, model: str, usage: Usage) -> MicroDollar:
        """The cost of ``usage`` on ``model``, in micro-dollars, with this table's rounding."""
        price = self._cache.get(model) or self.price(model)
        rates = price.rates_for(usage.prompt_tokens) if price.tiers else price.rates
        if self.rounding == "omnillm":
            return rates.omnillm_cost(usage)
        return -(-rates.exact_cost_numerator(usage) // _PER_MILLION)

    def coster(self, model: str) -> Callable[[Usage], MicroDollar]:
        """``lambda usage: self.cost(model, usage)``, resolved once: for callers that price
        many usages of one model (the simulated gateway prices one per request).

        Raises:
            UnknownModelError: the model is unknown and no fallback was chosen.
            InvalidValueError: the model name is not a non-empty string.
        """
        price = self.price(model)
        if not price.tiers and self.rounding == "omnillm":
            return price.rates.omnillm_cost  # what `cost` returns for every usage
        return partial(self.cost, model)

    def known_models(self) -> list[str]:
        """Names this table knows without asking the resolver (entries, then prefixes)."""
        return list(self.entries) + [p.model for p in self.prefixes]

    def with_overrides(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        """A copy where ``overrides`` win over everything else."""
        return replace(self, entries={**self.entries, **overrides}, _cache={})

    def with_fallback(self, fallback: str | None) -> PriceTable:
        """A copy pricing unknown models as ``fallback`` (``None``: unknown is an error)."""
        return replace(self, fallback=fallback, _cache={})


# -- omnillm 0.1.5 ----------------------------------------------------------------------------


def _usd_per_m(value: str) -> int:
    return usd_to_micro(value, name="price")


def _omnillm_entry(prefix: str, inp: str, out: str, **cache: str) -> ModelPrice:
    rates = Rates(
        input=_usd_per_m(inp),
        output=_usd_per_m(out),
        **{k: _usd_per_m(v) for k, v in cache.items()},
    )
    return ModelPrice(model=prefix, rates=rates, source="omnillm-0.1.5 prefix")


def omnillm_table() -> PriceTable:
    """omnillm 0.1.5's hard-coded prefix table (reference section 6), first match wins."""
    claude_sonnet = {"cache_read": "0.30", "cache_write": "3.75", "cache_write_1h": "6.00"}
    rows = (
        _omnillm_entry("gpt-5.5", "5.00", "30.00", cache_read="0.50"),
        _omnillm_entry("gpt-5.4-mini", "0.75", "4.50", cache_read="0.075"),
        _omnillm_entry("gpt-5.4", "2.50", "15.00", cache_read="0.25"),
        _omnillm_entry("gpt-4o-mini", "0.15", "0.60"),
        _omnillm_entry("gpt-4o", "5.00", "15.00"),
        _omnillm_entry(
            "claude-opus-4",
            "5.00",
            "25.00",
            cache_read="0.50",
            cache_write="6.25",
            cache_write_1h="10.00",
        ),
        _omnillm_entry("claude-sonnet-4", "3.00", "15.00", **claude_sonnet),
        _omnillm_entry("claude-3-5-sonnet", "3.00", "15.00", **claude_sonnet),
        _omnillm_entry(
            "claude-haiku-4",
            "1.00",
            "5.00",
            cache_read="0.10",
            cache_write="1.25",
            cache_write_1h="2.00",
        ),
        _omnillm_entry(
            "claude-3-haiku",
            "0.25",
            "1.25",
            cache_read="0.03",
            cache_write="0.30",
            cache_write_1h="0.50",
        ),
    )
    return PriceTable(name="omnillm-0.1.5", rounding="omnillm", prefixes=rows)


# -- current (genai-prices) -------------------------------------------------------------------

_GENAI_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}


def _micros_per_m(value: Decimal) -> int:
    # genai-prices stores USD per million tokens; a sub-micro-dollar rate rounds up (conservative).
    return int((value * _PER_MILLION).to_integral_value(rounding=ROUND_CEILING))


def _genai_resolver(as_of: datetime) -> Callable[[str], ModelPrice | None]:
    # genai-prices (and pydantic) take ~0.15 s to import and load: only on the first lookup, so
    # a table that is never asked (a test suite that makes no LLM call) costs nothing.
    loaded: list[Any] = []

    def resolve(model: str) -> ModelPrice | None:
        from genai_prices import data_snapshot, types

        if not loaded:  # a race only loads the same snapshot twice
            loaded.append(data_snapshot.get_snapshot())
        snapshot = loaded[0]
        try:
            provider, info = snapshot.find_provider_model(model, None, None, None)
        except LookupError:
            return None
        prices = info.get_prices(as_of)
        raw = {ours: getattr(prices, theirs, None) for ours, theirs in _GENAI_KEYS.items()}
        if raw["input"] is None or raw["output"] is None:
            return None  # not priced per token (images, audio): unknown to us

        def at(value: Any, start: int | None) -> int | None:
            if value is None:
                return None
            if isinstance(value, types.TieredPrices):
                chosen = value.base
                for tier in value.tiers:
                    if start is not None and start >= tier.start:
                        chosen = tier.price
                return _micros_per_m(chosen)
            return _micros_per_m(value)

        def rates_at(start: int | None) -> Rates:
            values = {k: at(v, start) for k, v in raw.items()}
            return Rates(
                input=values["input"] or 0,
                output=values["output"] or 0,
                cache_read=values["cache_read"],
                cache_write=values["cache_write"],
                cache_write_1h=values["cache_write_1h"],
            )

        starts = sorted(
            {t.start for v in raw.values() if isinstance(v, types.TieredPrices) for t in v.tiers}
        )
        return ModelPrice(
            model=model,
            rates=rates_at(None),
            tiers=tuple(PriceTier(s, rates_at(s)) for s in starts),
            source=f"genai-prices {provider.id}/{info.id}",
        )

    return resolve


def current_table(as_of: datetime | None = None) -> PriceTable:
    """Prices from the bundled ``genai-prices`` data (no network). ``as_of`` picks dated prices.

    ``as_of=None`` means the moment the table is built; pass a fixed datetime for runs that
    must price identically on any day.
    """
    when = as_of if as_of is not None else datetime.now(UTC)
    return PriceTable(name="current", rounding="ceil", resolver=_genai_resolver(when))


CATALOGUES: dict[str, Callable[[], PriceTable]] = {
    "omnillm-0.1.5": omnillm_table,
    "current": current_table,
}


def catalogue(
    name: str = "current",
    *,
    overrides: str | Path | None = None,
    fallback: str | None = None,
) -> PriceTable:
    """Build a price table by catalogue name, with optional TOML overrides and fallback model.

    Raises:
        ConfigError: unknown catalogue name, or a malformed overrides file.
        UnknownModelError: ``fallback`` is itself unknown.
    """
    try:
        factory = CATALOGUES[name]
    except KeyError:
        raise ConfigError(
            "catalogue", name, f"must be one of {', '.join(sorted(CATALOGUES))}"
        ) from None
    table = factory()
    if overrides is not None:
        table = table.with_overrides(load_overrides(overrides))
    return table.with_fallback(fallback) if fallback is not None else table


_OVERRIDE_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


def load_overrides(path: str | Path) -> dict[str, ModelPrice]:
    """Read model prices (USD per million tokens) from a TOML file.

    Format::

        [models."my-finetune"]
        input = "2.50"        # required
        output = "10.00"      # required
        cache_read = "1.25"   # optional: cache_read, cache_write, cache_write_1h

    Raises:
        ConfigError: unreadable file, bad TOML, unknown keys or bad prices, naming the file
            and the key path.
    """
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("prices file", source, f"cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("prices file", source, f"is not valid TOML ({exc})") from None
    unknown = set(data) - {"models"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            key, data[key], "is not a known key (expected [models.NAME] tables)", source=source
        )
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("models", models, "must be a table of [models.NAME]", source=source)
    result: dict[str, ModelPrice] = {}
    for model, spec in models.items():
        key = f"models.{model}"
        if not isinstance(spec, dict):
            raise ConfigError(key, spec, "must be a table with input and output", source=source)
        extra = set(spec) - set(_OVERRIDE_FIELDS)
        if extra:
            bad = sorted(extra)[0]
            raise ConfigError(
                f"{key}.{bad}",
                spec[bad],
                f"is not a known key (expected one of {', '.join(_OVERRIDE_FIELDS)})",
                source=source,
            )
        values: dict[str, int] = {}
        for name in _OVERRIDE_FIELDS:
            if name in spec:
                try:
                    values[name] = usd_to_micro(spec[name], name=f"{key}.{name}")
                except InvalidValueError as exc:
                    raise ConfigError(
                        f"{key}.{name}",
                        spec[name],
                        f'must be USD per million tokens like "2.50" ({exc.rule})',
                        source=source,
                    ) from None
            elif name in ("input", "output"):
                raise ConfigError(
                    f"{key}.{name}", None, "is required (USD per million tokens)", source=source
                )
        result[model] = ModelPrice(model=model, rates=Rates(**values), source=f"override {source}")
    return result
