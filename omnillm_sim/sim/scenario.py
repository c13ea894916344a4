"""Scenario files: TOML loaded by one loader into frozen, keyword-only dataclasses.

A scenario says what traffic arrives (``[workload]``, ``[requests]``), what the gateway is
(``[gateway]``, ``[[keys]]``, ``[budget]``, ``[prices]``) and how the provider behaves
(``[provider]``, ``[[faults]]``). Every value is checked here; an error names the file, the key
path, what was expected and what was found::

    scenarios/x.toml: workload.rate: expected a rate like "20/s" or "500/min", got 'fast'

Unknown keys are errors too (a typo must not silently fall back to a default). Files are UTF-8
(a UTF-8 byte-order mark is accepted); numbers in strings (rates, durations, money) are ASCII
digits only, so ``"１０/s"`` or ``"1_000"`` are refused rather than guessed.

Sizes the user controls have documented limits, checked here before any run (``[limits]``,
`LimitsSpec`): keys, samples per run, expected arrivals and trace line length. Each can be
raised in the file or with ``--set limits.KEY=N``. `load_scenario`
also applies dotted-path overrides (``{"workload.rate": "40/s", "keys.0.count": 4}``) before
checking, which is how ``sweep`` and ``plan`` vary a scenario.
"""

from __future__ import annotations

import math
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from omnillm_sim.errors import ScenarioError
from omnillm_sim.money import MicroDollar
from omnillm_sim.sim.distributions import DISTRIBUTIONS, Distribution
from omnillm_sim.sim.units import (
    DURATION_EXPECTED,
    MONEY_EXPECTED,
    RATE_EXPECTED,
)
from omnillm_sim.sim.units import parse_duration as _parse_duration
from omnillm_sim.sim.units import parse_money as _parse_money
from omnillm_sim.sim.units import parse_rate as _parse_rate

__all__ = [
    "TRACE_FORMATS",
    "WORKLOADS",
    "BudgetSpec",
    "FaultSpec",
    "GatewaySpec",
    "KeySpec",
    "LimitsSpec",
    "PricesSpec",
    "ProviderSpec",
    "RequestSpec",
    "Scenario",
    "TraceSpec",
    "WorkloadSpec",
    "coerce_literal",
    "expected_arrivals",
    "load_scenario",
    "parse_toml",
    "read_text_file",
    "scenario_from_dict",
    "scenario_from_text",
]

WORKLOADS = ("poisson", "bursty", "diurnal", "closed", "trace")
TRACE_FORMATS = ("azure", "burstgpt", "csv", "jsonl",
                 "pytest-omnillm", "otel-genai", "litellm-spend")  # the last 3: sim/importers
_KNOWN_POLICIES = ("omnillm-0.1.5", "safe")
_DEFAULT_FALLBACK: str | None = "gpt-4o"
_STRATEGIES = ("omnillm", "round-robin", "least-loaded", "power-of-two")


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSpec:
    """``[limits]``: bounds on sizes the user controls, checked before a run starts.

    ``keys``: keys after expanding ``count``; ``samples``: budget samples per run (duration /
    sample_interval); ``arrivals``: expected requests of a synthetic workload (rate x duration,
    or ``max_requests`` if smaller); ``line_length``: characters in one trace line (a trace of
    one endless line, like /dev/zero, stops there). Raise one with ``--set limits.keys=500000``.
    """

    keys: int = 100_000
    samples: int = 100_000
    arrivals: int = 5_000_000
    line_length: int = 1 << 20  # characters (1 Mi)


MAX_TOKENS = 1_000_000_000
"""Largest token count a request size (mean, low, high) may have: beyond any model's window."""
MAX_CV = 100.0
"""Largest coefficient of variation of a lognormal (sigma ~ 3; larger is numerically NaN)."""
SPEED_RANGE = (1e-6, 1e6)
"""Replay speed factors accepted: slower or faster than that no longer fits a float clock."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    """One ``[[keys]]`` entry; ``count > 1`` expands to labels ``label-1`` .. ``label-N``."""

    label: str
    count: int = 1
    rpm: int = 500
    tpm: int = 90_000
    tokens_per_minute: int | None = None

    def labels(self) -> list[str]:
        """The labels this entry expands to."""
        if self.count == 1:
            return [self.label]
        return [f"{self.label}-{i}" for i in range(1, self.count + 1)]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySpec:
    """``[gateway]``: the policy and its knobs (defaults are omnillm's)."""

    policy: str = "omnillm-0.1.5"
    strategy: str | None = None
    attempt_cap: int = 5
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    request_timeout: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSpec:
    """``[budget]``: the limit in micro-dollars, ``None`` for unlimited."""

    limit: MicroDollar | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PricesSpec:
    """``[prices]``: which catalogue prices the run (one table for every policy)."""

    catalogue: str = "omnillm-0.1.5"
    fallback: str | None = "gpt-4o"
    overrides: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSpec:
    """``[requests]``: what each synthetic request looks like.

    ``output_tokens`` is what the model would generate; the provider stops at
    ``max_output_tokens`` (which every simulated request declares). ``stream_fraction`` of the
    requests stream; ``cancel_rate`` of them are cancelled by the client half-way.
    """

    model: str = "gpt-4o"
    prompt_tokens: Distribution = field(default_factory=lambda: Distribution.constant(1000))
    output_tokens: Distribution = field(default_factory=lambda: Distribution.constant(250))
    max_output_tokens: int = 1024
    stream_fraction: float = 0.0
    cancel_rate: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceSpec:
    """``[workload]`` of kind ``trace``: a file replayed at ``speed`` x real time."""

    path: Path
    format: str = "azure"
    speed: float = 1.0
    columns: tuple[tuple[str, str], ...] = ()
    time_unit: str = "s"
    models: tuple[tuple[str, str], ...] = ()
    limit: int | None = None
    max_line_length: int = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSpec:
    """``[workload]``: how requests arrive.

    * ``poisson``: ``rate``;
    * ``bursty``: a two-state Markov-modulated Poisson process, ``rate`` in the calm state and
      ``burst_rate`` in the burst state, with exponential sojourns of mean ``calm_time`` and
      ``burst_time``;
    * ``diurnal``: ``rate x (1 + amplitude x sin(2 pi (t / period + phase)))``;
    * ``closed``: ``clients`` that each send a request, wait for its answer (or rejection),
      think for ``think_time`` and repeat;
    * ``trace``: replay a file (`TraceSpec`).
    """

    kind: str = "poisson"
    rate: float = 1.0
    burst_rate: float = 0.0
    calm_time: float = 60.0
    burst_time: float = 10.0
    amplitude: float = 0.5
    period: float = 86_400.0
    phase: float = 0.0
    clients: int = 1
    think_time: Distribution = field(default_factory=lambda: Distribution.exponential(5.0))
    trace: TraceSpec | None = None

    def scaled(self, factor: float) -> WorkloadSpec:
        """The same workload with ``factor`` x the traffic (rates, clients or replay speed)."""
        if self.kind == "closed":
            return replace(self, clients=max(1, round(self.clients * factor)))
        if self.kind == "trace" and self.trace is not None:
            return replace(self, trace=replace(self.trace, speed=self.trace.speed * factor))
        return replace(self, rate=self.rate * factor, burst_rate=self.burst_rate * factor)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    """``[provider]``: how the provider serves a request on one key.

    Latency = ``ttft`` + output tokens / ``tokens_per_second``, times a uniform jitter factor in
    ``[1 - jitter, 1 + jitter]``; ``service`` (a distribution) replaces that formula when set.
    ``concurrency`` slots per key (0 = unlimited) make requests queue at the provider.
    ``rpm`` / ``tpm``: the provider's own per-key limits, answered with 429 and a
    ``retry-after`` header of the whole seconds until the window frees; ``odd_retry_after``
    of those headers are fractional seconds instead (``"12.3"``: omnillm reads 60 s).
    Streams only: ``abandon_rate`` of them are dropped by the client mid-way without a cancel
    (omnillm never settles them), ``late_cancel_rate`` get the client's cancel just after
    ``Completed`` (omnillm settles them twice).
    """

    ttft: Distribution = field(default_factory=lambda: Distribution.constant(0.5))
    tokens_per_second: float = 50.0
    jitter: float = 0.1
    service: Distribution | None = None
    concurrency: int = 0
    rpm: int | None = None
    tpm: int | None = None
    error_latency: float = 0.2
    odd_retry_after: float = 0.0
    abandon_rate: float = 0.0
    late_cancel_rate: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    """``[[faults]]``: key ``key`` answers ``status`` with probability ``rate`` in [start, end)."""

    key: str
    status: int
    rate: float = 1.0
    start: float = 0.0
    end: float = math.inf
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole scenario file, checked.

    ``duration`` is how long arrivals are generated (a trace ends earlier if it is shorter);
    the run then drains the requests in flight. ``question`` is the file's leading comment.
    ``records = false`` keeps no per-request records (nor the budget step timeline), so memory
    does not grow with the number of requests; every aggregate is still computed exactly.
    """

    name: str
    source: str = "<scenario>"
    question: str = ""
    description: str = ""
    seed: int = 1
    duration: float = 600.0
    max_requests: int | None = None
    sample_interval: float | None = None
    records: bool = True
    gateway: GatewaySpec = field(default_factory=GatewaySpec)
    keys: tuple[KeySpec, ...] = (KeySpec(label="key"),)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    prices: PricesSpec = field(default_factory=PricesSpec)
    requests: RequestSpec = field(default_factory=RequestSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    provider: ProviderSpec = field(default_factory=ProviderSpec)
    faults: tuple[FaultSpec, ...] = ()
    limits: LimitsSpec = field(default_factory=LimitsSpec)

    def key_labels(self) -> list[str]:
        """Every key label after expanding ``count``."""
        return [label for spec in self.keys for label in spec.labels()]

    def with_policy(self, policy: str) -> Scenario:
        """The same scenario under another gateway policy."""
        return replace(self, gateway=replace(self.gateway, policy=policy))

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with ``factor`` x the traffic."""
        return replace(self, workload=self.workload.scaled(factor))

    def with_key_count(self, count: int) -> Scenario:
        """The same scenario with the first ``[[keys]]`` entry expanded to ``count`` keys."""
        first = replace(self.keys[0], count=count)
        return replace(self, keys=(first, *self.keys[1:]))


# -- loading ----------------------------------------------------------------------------------

T = TypeVar("T")


class _Table:
    """A TOML table being read: remembers which keys were used so leftovers are errors."""

    def __init__(
        self, data: object, source: str, prefix: str, allowed: tuple[str, ...] = ()
    ) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(source, prefix or "<root>", "a table", data)
        self.data: dict[str, Any] = data
        self.source = source
        self.prefix = prefix
        self.used: set[str] = set()
        # Unknown keys first: a typo must be reported as such, not as the key it hides.
        for key in data if allowed else ():
            if key not in allowed:
                raise self.error(key, "one of the keys " + ", ".join(allowed) + " (a typo?)",
                                 data[key])

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, expected: str, got: object) -> ScenarioError:
        return ScenarioError(self.source, self.path(key), expected, got)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, parse: Callable[[object], T], expected: str, default: T) -> T:
        self.used.add(key)
        if key not in self.data:
            return default
        raw = self.data[key]
        try:
            return parse(raw)
        except (ValueError, TypeError, OverflowError) as exc:
            raise self.error(key, expected, raw) from exc

    def required(self, key: str, parse: Callable[[object], T], expected: str) -> T:
        self.used.add(key)
        if key not in self.data:
            raise self.error(key, expected, "nothing (the key is missing)")
        raw = self.data[key]
        try:
            return parse(raw)
        except (ValueError, TypeError, OverflowError) as exc:
            raise self.error(key, expected, raw) from exc

    def sub(self, key: str, allowed: tuple[str, ...] = ()) -> _Table:
        self.used.add(key)
        return _Table(self.data.get(key, {}), self.source, self.path(key), allowed)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise self.error(key, "no such key (a typo?)", self.data[key])


def _ascii(parse: Callable[[object], T]) -> Callable[[object], T]:
    """``parse`` that refuses non-ASCII strings: ``float("１０")`` and ``\\d`` accept them."""

    def wrapped(value: object) -> T:
        if isinstance(value, str) and not value.isascii():
            raise ValueError(value)
        return parse(value)

    return wrapped


parse_duration = _ascii(_parse_duration)
parse_rate = _ascii(_parse_rate)
_MONEY_RE = re.compile(r"\s*\$?\s*(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*", re.ASCII)


def parse_money(value: object) -> MicroDollar | None:
    """`units.parse_money`, but a string must be plain ASCII decimal (no ``1_000``, no ``１``)."""
    if (isinstance(value, str) and value.strip().lower() != "unlimited"
            and not _MONEY_RE.fullmatch(value)):
        raise ValueError(value)
    return _parse_money(value)


def _int(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if type(value) is not int or value < minimum:
            raise ValueError(value)
        if maximum is not None and value > maximum:
            raise ValueError(value)
        return value

    return parse


def _float(minimum: float, *, strict: bool = False, maximum: float = math.inf) -> Callable[
    [object], float
]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(value)
        number = float(value)
        if not math.isfinite(number) or number < minimum or number > maximum:
            raise ValueError(value)
        if strict and number == minimum:
            raise ValueError(value)
        return number

    return parse


def _string(choices: tuple[str, ...] = ()) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(value)
        if choices and value not in choices:
            raise ValueError(value)
        return value

    return parse


NAME_MAX_LENGTH = 100
NAME_EXPECTED = (
    f"a label of at most {NAME_MAX_LENGTH} characters with no path separator, no '..', no "
    "control character, not starting with '.' (the name becomes the folder reports/<name>)"
)


def _label(value: object) -> str:
    """A scenario name: a label that is also a safe single folder name (never a path)."""
    if not isinstance(value, str) or not value.strip() or len(value) > NAME_MAX_LENGTH:
        raise ValueError(value)
    if value.startswith(".") or "/" in value or "\\" in value or ".." in value:
        raise ValueError(value)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise ValueError(value)
    return value


def _optional(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    def wrapped(value: object) -> T | None:
        if value == "none":
            return None
        return parse(value)

    return wrapped


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(value)
    return value


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(value)
    return seconds


def _one_of(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(repr(c) for c in choices)


def _distribution(
    table: _Table, key: str, default: Distribution, *, duration: bool
) -> Distribution:
    """A constant (number, or duration string) or a ``{ dist = ..., ... }`` table."""
    table.used.add(key)
    if key not in table.data:
        return default
    raw = table.data[key]
    number = parse_duration if duration else _float(0.0, maximum=MAX_TOKENS)
    unit = " (seconds or a duration)" if duration else f" and <= {MAX_TOKENS:,}"
    if not isinstance(raw, dict):
        try:
            return Distribution.constant(number(raw))
        except (ValueError, OverflowError):
            expected = (
                f"a number >= 0{unit} or a table like {{ dist = \"exponential\", mean = ... }}"
            )
            raise table.error(key, expected, raw) from None
    sub = _Table(raw, table.source, table.path(key), ("dist", "mean", "low", "high", "cv"))
    kind = sub.required("dist", _string(DISTRIBUTIONS), _one_of(DISTRIBUTIONS))
    params: dict[str, float] = {}
    needed = {"constant": ("mean",), "uniform": ("low", "high"), "exponential": ("mean",),
              "lognormal": ("mean",)}[kind]
    for name in ("mean", "low", "high"):
        if name in needed:
            params[name] = sub.required(name, number, f"a number >= 0{unit}")
    if kind == "lognormal":
        params["cv"] = sub.get("cv", _float(0.0, maximum=MAX_CV), f"a number in [0, {MAX_CV:g}]",
                               1.0)
    sub.finish()
    try:
        return Distribution(kind=kind, **params)
    except ValueError as exc:
        raise table.error(key, "a valid distribution", f"{raw} ({exc})") from None


def _read_keys(root: _Table, limit: int) -> tuple[KeySpec, ...]:
    root.used.add("keys")
    raw = root.data.get("keys")
    if raw is None:
        return (KeySpec(label="key"),)
    if not isinstance(raw, list) or not raw:
        raise root.error("keys", "a non-empty array of tables ([[keys]])", raw)
    specs = []
    for i, entry in enumerate(raw):
        t = _Table(entry, root.source, f"keys[{i}]",
                   ("label", "count", "rpm", "tpm", "tokens_per_minute"))
        spec = KeySpec(
            label=t.get("label", _string(), "a non-empty string", f"key{i + 1}"),
            count=t.get("count", _int(1), "a positive integer", 1),
            rpm=t.get("rpm", _int(1), "a positive integer", 500),
            tpm=t.get("tpm", _int(1), "a positive integer", 90_000),
            tokens_per_minute=t.get(
                "tokens_per_minute", _optional(_int(1)), "a positive integer", None
            ),
        )
        t.finish()
        specs.append(spec)
        total = sum(s.count for s in specs)
        if total > limit:  # before expanding the labels: count = 10**9 must not allocate
            raise ScenarioError(root.source, f"keys[{i}].count",
                                f"at most {limit:,} keys in all (raise limits.keys for more)",
                                spec.count)
    seen: set[str] = set()
    for spec in specs:
        for label in spec.labels():
            if label in seen:
                raise root.error("keys", "unique key labels", label)
            seen.add(label)
    return tuple(specs)


def _read_trace(t: _Table, base: Path, limits: LimitsSpec) -> TraceSpec:
    path = t.required("path", _string(), "a path to a trace file")
    resolved = Path(path) if Path(path).is_absolute() else (base / path)
    fmt = t.get("format", _string(TRACE_FORMATS), _one_of(TRACE_FORMATS), "azure")
    low, high = SPEED_RANGE
    speed = t.get("speed", _float(low, maximum=high), f"a number in [{low:g}, {high:g}]", 1.0)
    columns = t.sub("columns")
    column_map = {}
    for name in list(columns.data):
        column_map[name] = columns.get(name, _string(), "a column name", "")
    allowed = ("time", "prompt_tokens", "output_tokens", "model",
               "end", "duration", "status", "cost", "key")  # the last 5: observed logs
    for name in column_map:
        if name not in allowed:
            raise columns.error(name, "one of " + ", ".join(allowed), column_map[name])
    if fmt in ("csv", "jsonl"):
        for name in ("time", "prompt_tokens", "output_tokens"):
            if name not in column_map:
                raise columns.error(name, "the name of the trace's column for " + name, None)
    time_unit = t.get("time_unit", _string(("s", "ms", "iso")), _one_of(("s", "ms", "iso")), "s")
    models = t.sub("models")
    model_map = {
        name: models.get(name, _string(), "a model name", "") for name in list(models.data)
    }
    limit = t.get("limit", _optional(_int(1)), "a positive integer", None)
    return TraceSpec(
        path=resolved.resolve(),
        format=fmt,
        speed=speed,
        columns=tuple(sorted(column_map.items())),
        time_unit=time_unit,
        models=tuple(sorted(model_map.items())),
        limit=limit,
        max_line_length=limits.line_length,
    )


def _read_workload(t: _Table, base: Path, limits: LimitsSpec) -> WorkloadSpec:
    kind = t.get("kind", _string(WORKLOADS), _one_of(WORKLOADS), "poisson")
    default = WorkloadSpec()
    rate_needed = kind in ("poisson", "bursty", "diurnal")
    if rate_needed:
        rate = t.required("rate", parse_rate, RATE_EXPECTED)
    else:
        rate = t.get("rate", parse_rate, RATE_EXPECTED, default.rate)
    spec = WorkloadSpec(
        kind=kind,
        rate=rate,
        burst_rate=(
            t.required("burst_rate", parse_rate, RATE_EXPECTED)
            if kind == "bursty"
            else t.get("burst_rate", parse_rate, RATE_EXPECTED, 0.0)
        ),
        calm_time=t.get("calm_time", _positive_duration, DURATION_EXPECTED, default.calm_time),
        burst_time=t.get("burst_time", _positive_duration, DURATION_EXPECTED, default.burst_time),
        amplitude=t.get("amplitude", _float(0.0, maximum=1.0), "a number in [0, 1]", 0.5),
        period=t.get("period", _positive_duration, DURATION_EXPECTED, default.period),
        phase=t.get("phase", _float(0.0, maximum=1.0), "a fraction of the period in [0, 1]", 0.0),
        clients=(
            t.required("clients", _int(1), "a positive integer")
            if kind == "closed"
            else t.get("clients", _int(1), "a positive integer", 1)
        ),
        think_time=_distribution(t, "think_time", default.think_time, duration=True),
        trace=_read_trace(t.sub("trace", ("path", "format", "speed", "columns", "time_unit",
                                            "models", "limit")), base, limits)
        if kind == "trace" else None,
    )
    if kind != "trace" and t.has("trace"):
        raise t.error("trace", 'no [workload.trace] table unless kind = "trace"', t.data["trace"])
    return spec


def _read_faults(root: _Table, labels: list[str]) -> tuple[FaultSpec, ...]:
    root.used.add("faults")
    raw = root.data.get("faults", [])
    if not isinstance(raw, list):
        raise root.error("faults", "an array of tables ([[faults]])", raw)
    faults = []
    for i, entry in enumerate(raw):
        t = _Table(entry, root.source, f"faults[{i}]",
                   ("key", "status", "rate", "start", "end", "retry_after"))
        key = t.required("key", _string(tuple(labels)), "a key label: " + _one_of(tuple(labels)))
        fault = FaultSpec(
            key=key,
            status=t.required("status", _int(100), "an HTTP status code (100-599)"),
            rate=t.get("rate", _float(0.0, maximum=1.0), "a probability in [0, 1]", 1.0),
            start=t.get("start", parse_duration, DURATION_EXPECTED, 0.0),
            end=t.get("end", parse_duration, DURATION_EXPECTED, math.inf),
            retry_after=t.get("retry_after", _optional(parse_duration), DURATION_EXPECTED, None),
        )
        if fault.status > 599:
            raise t.error("status", "an HTTP status code (100-599)", fault.status)
        if fault.end <= fault.start:
            raise t.error("end", f"a time after start ({fault.start:g}s)", t.data.get("end"))
        t.finish()
        faults.append(fault)
    return tuple(faults)


def _leading_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        lines.append(stripped.lstrip("#").strip())
    return "\n".join(lines).strip()


def scenario_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "<scenario>",
    base: Path | None = None,
    name: str = "scenario",
    question: str = "",
) -> Scenario:
    """Check a parsed scenario table and build the `Scenario`.

    Relative trace paths resolve against ``base`` (the scenario file's directory).

    Raises:
        ScenarioError: a missing, unknown or invalid key (the message names the key path).
    """
    root = _Table(dict(data), source, "", (
        "name", "description", "seed", "duration", "max_requests", "sample_interval", "records",
        "gateway", "keys", "budget", "prices", "requests", "workload", "provider", "faults",
        "limits",
    ))
    base = base or Path.cwd()
    lt = root.sub("limits", ("keys", "samples", "arrivals", "line_length"))
    dlim = LimitsSpec()
    limits = LimitsSpec(
        keys=lt.get("keys", _int(1), "a positive integer", dlim.keys),
        samples=lt.get("samples", _int(1), "a positive integer", dlim.samples),
        arrivals=lt.get("arrivals", _int(1), "a positive integer", dlim.arrivals),
        line_length=lt.get("line_length", _int(1), "a positive integer", dlim.line_length),
    )
    lt.finish()
    gw = root.sub("gateway", ("policy", "strategy", "attempt_cap", "breaker_threshold",
                              "breaker_cooldown", "request_timeout"))
    gateway = GatewaySpec(
        policy=gw.get("policy", _string(_KNOWN_POLICIES), _one_of(_KNOWN_POLICIES),
                      "omnillm-0.1.5"),
        strategy=gw.get("strategy", _optional(_string(_STRATEGIES)), _one_of(_STRATEGIES), None),
        attempt_cap=gw.get("attempt_cap", _int(0), "an integer >= 0", 5),
        breaker_threshold=gw.get("breaker_threshold", _int(0), "an integer >= 0", 5),
        breaker_cooldown=gw.get("breaker_cooldown", parse_duration, DURATION_EXPECTED, 30.0),
        request_timeout=gw.get("request_timeout", _positive_duration, DURATION_EXPECTED, 120.0),
    )
    gw.finish()
    keys = _read_keys(root, limits.keys)

    bt = root.sub("budget", ("limit",))
    budget = BudgetSpec(limit=bt.get("limit", parse_money, MONEY_EXPECTED, None))
    bt.finish()

    from omnillm_sim.pricing import CATALOGUES

    pt = root.sub("prices", ("catalogue", "fallback", "overrides"))
    cats = tuple(sorted(CATALOGUES))
    prices = PricesSpec(
        catalogue=pt.get("catalogue", _string(cats), _one_of(cats), "omnillm-0.1.5"),
        fallback=pt.get("fallback", _optional(_string()), 'a model name or "none"',
                        _DEFAULT_FALLBACK),
        overrides=pt.get("overrides", _optional(_string()), "a path to a TOML price file", None),
    )
    if prices.overrides is not None and not Path(prices.overrides).is_absolute():
        prices = replace(prices, overrides=str((base / prices.overrides).resolve()))
    pt.finish()

    rt = root.sub("requests", ("model", "prompt_tokens", "output_tokens", "max_output_tokens",
                               "stream_fraction", "cancel_rate"))
    dflt = RequestSpec()
    requests = RequestSpec(
        model=rt.get("model", _string(), "a model name", dflt.model),
        prompt_tokens=_distribution(rt, "prompt_tokens", dflt.prompt_tokens, duration=False),
        output_tokens=_distribution(rt, "output_tokens", dflt.output_tokens, duration=False),
        max_output_tokens=rt.get("max_output_tokens", _int(1), "a positive integer", 1024),
        stream_fraction=rt.get("stream_fraction", _float(0.0, maximum=1.0), "a fraction in [0, 1]",
                               0.0),
        cancel_rate=rt.get("cancel_rate", _float(0.0, maximum=1.0), "a fraction in [0, 1]", 0.0),
    )
    rt.finish()

    wt = root.sub("workload", ("kind", "rate", "burst_rate", "calm_time", "burst_time",
                               "amplitude", "period", "phase", "clients", "think_time", "trace"))
    workload = _read_workload(wt, base, limits)
    wt.finish()

    pv = root.sub("provider", ("ttft", "tokens_per_second", "jitter", "service", "concurrency",
                               "rpm", "tpm", "error_latency", "odd_retry_after",
                               "abandon_rate", "late_cancel_rate"))
    pdef = ProviderSpec()
    provider = ProviderSpec(
        ttft=_distribution(pv, "ttft", pdef.ttft, duration=True),
        tokens_per_second=pv.get("tokens_per_second", _float(0.0, strict=True), "a number > 0",
                                 pdef.tokens_per_second),
        jitter=pv.get("jitter", _float(0.0, maximum=0.99), "a fraction in [0, 0.99]", pdef.jitter),
        service=(
            _distribution(pv, "service", Distribution.constant(0.0), duration=True)
            if pv.has("service")
            else None
        ),
        concurrency=pv.get("concurrency", _int(0), "an integer >= 0 (0 = unlimited)", 0),
        rpm=pv.get("rpm", _optional(_int(1)), "a positive integer", None),
        tpm=pv.get("tpm", _optional(_int(1)), "a positive integer", None),
        error_latency=pv.get("error_latency", parse_duration, DURATION_EXPECTED, 0.2),
        odd_retry_after=pv.get("odd_retry_after", _float(0.0, maximum=1.0),
                               "a fraction in [0, 1]", 0.0),
        abandon_rate=pv.get("abandon_rate", _float(0.0, maximum=1.0), "a fraction in [0, 1]",
                            0.0),
        late_cancel_rate=pv.get("late_cancel_rate", _float(0.0, maximum=1.0),
                                "a fraction in [0, 1]", 0.0),
    )
    pv.used.add("service")
    pv.finish()

    faults = _read_faults(root, [label for spec in keys for label in spec.labels()])
    scenario = Scenario(
        name=root.get("name", _label, NAME_EXPECTED, "") or _default_name(source, name),
        source=source,
        question=question,
        description=root.get("description", _string(), "a non-empty string", ""),
        seed=root.get("seed", _int(0), "an integer >= 0", 1),
        duration=root.get("duration", _positive_duration, DURATION_EXPECTED, 600.0),
        max_requests=root.get("max_requests", _optional(_int(1)), "a positive integer", None),
        sample_interval=root.get(
            "sample_interval", _optional(_positive_duration), DURATION_EXPECTED, None
        ),
        records=root.get("records", _boolean, "true or false", True),
        gateway=gateway,
        keys=keys,
        budget=budget,
        prices=prices,
        requests=requests,
        workload=workload,
        provider=provider,
        faults=faults,
        limits=limits,
    )
    root.finish()
    _check_sizes(scenario, source)
    return scenario


def expected_arrivals(scenario: Scenario) -> float:
    """An upper estimate of the requests a synthetic workload makes (``inf``: unbounded).

    Traces count as 0 here: their rows are bounded by the file (see `TraceSpec.limit`).
    """
    w = scenario.workload
    if w.kind == "trace":
        return 0.0
    if w.kind == "closed":
        cycle = w.think_time.expected
        expected = w.clients * scenario.duration / cycle if cycle > 0 else math.inf
    elif w.kind == "bursty":
        expected = max(w.rate, w.burst_rate) * scenario.duration
    elif w.kind == "diurnal":
        expected = w.rate * (1.0 + w.amplitude) * scenario.duration
    else:
        expected = w.rate * scenario.duration
    if scenario.max_requests is not None:
        expected = min(expected, scenario.max_requests)
    return expected


def _check_sizes(scenario: Scenario, source: str) -> None:
    """The derived sizes of a run against `LimitsSpec` (before any run starts)."""
    limits = scenario.limits
    interval = scenario.sample_interval or max(scenario.duration / 200.0, 1e-3)  # the engine's
    samples = scenario.duration / interval
    if samples > limits.samples:
        raise ScenarioError(
            source, "sample_interval",
            f"an interval giving at most {limits.samples:,} samples over duration "
            f"{scenario.duration:g}s (this gives {samples:,.0f}; raise limits.samples for more)",
            scenario.sample_interval)
    arrivals = expected_arrivals(scenario)
    if arrivals > limits.arrivals:
        got = "unbounded (think_time 0)" if math.isinf(arrivals) else f"about {arrivals:,.0f}"
        raise ScenarioError(
            source, "workload",
            f"a workload of at most {limits.arrivals:,} requests (rate x duration, or "
            "max_requests; raise limits.arrivals for more)", got)


def _default_name(source: str, name: str) -> str:
    try:
        return _label(name)
    except ValueError:
        raise ScenarioError(source, "name", NAME_EXPECTED + "; the file name does not give "
                            "one, so set name = \"...\"", name) from None


def _set_path(data: dict[str, Any], dotted: str, value: object, source: str) -> None:
    parts = dotted.replace("[", ".").replace("]", "").split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ScenarioError(source, where, f"an index below {len(node)}", part)
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ScenarioError(source, where, "a table to set a key in", node)


def coerce_literal(text: str) -> object:
    """A command-line value as TOML would read it: ``4`` -> 4, ``0.5`` -> 0.5, else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return text


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The table in a scenario's TOML ``text``.

    Raises:
        ScenarioError: invalid TOML, nesting too deep to read, an integer of over 4,300 digits.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "<toml>", "valid TOML", str(exc)) from None
    except RecursionError:
        raise ScenarioError(source, "<toml>", "TOML nested less deeply",
                            "arrays or tables nested too deeply to read") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ScenarioError(source, "<toml>", "numbers of a sensible size", str(exc)) from None


def scenario_from_text(
    text: str,
    *,
    source: str = "<scenario>",
    base: Path | None = None,
    name: str = "scenario",
    overrides: Mapping[str, object] | None = None,
) -> Scenario:
    """Parse, override and check the TOML text of a scenario (see `load_scenario`).

    Raises:
        ScenarioError: invalid TOML, or a bad or unknown key.
    """
    data = parse_toml(text, source)
    for dotted, value in (overrides or {}).items():
        _set_path(data, dotted, value, source)
    return scenario_from_dict(
        data, source=source, base=base, name=name, question=_leading_comment(text)
    )


MAX_FILE_BYTES = 16 << 20
"""Largest scenario file read (a scenario is a few kB; /dev/zero must not fill the memory)."""


def _encoding_hint(data: bytes, exc: UnicodeDecodeError) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (save the file as UTF-8)"
    return (f"byte 0x{data[exc.start]:02x} at offset {exc.start}, which is not UTF-8 "
            "(Latin-1 or binary? save the file as UTF-8)")


def read_text_file(path: Path, what: str) -> str:
    """The text of a UTF-8 file (a UTF-8 byte-order mark is accepted and dropped).

    Raises:
        ScenarioError: the file cannot be read, or is not UTF-8 (UTF-16, Latin-1, binary).
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(str(path), "<file>", what, exc.strerror or str(exc)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(str(path), "<file>", f"a file of at most {MAX_FILE_BYTES:,} bytes",
                            "a larger file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(path), "<file>", "UTF-8 text", _encoding_hint(data, exc)
                            ) from None


def load_scenario(path: str | Path, overrides: Mapping[str, object] | None = None) -> Scenario:
    """Read, override and check a scenario file.

    ``overrides`` maps dotted key paths (``workload.rate``, ``keys.0.count``) to values applied
    before checking, so they are validated like the file's own values. Relative paths inside
    the file (traces, price overrides) are relative to the file's folder.

    Raises:
        ScenarioError: the file is missing, is not valid TOML, or has a bad or unknown key.
    """
    path = Path(path)
    text = read_text_file(path, "a readable scenario file")
    return scenario_from_text(
        text, source=str(path), base=path.parent.resolve(), name=path.stem, overrides=overrides
    )
