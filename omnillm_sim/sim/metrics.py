"""What a run produces: per-request records, timelines, and the aggregates computed from them.

`RunResult` is plain data (computing is separate from rendering): the report package turns it
into JSON, Markdown and charts; ``sweep`` and ``plan`` read its `Metrics`.

Definitions used everywhere:

* latency = reply time - arrival time, over requests that completed ``ok``;
* wait = service start - arrival time (time queued at the provider), over served requests;
* rejection rate = gateway rejections / arrivals; error rate = admitted requests that did not
  end ``ok`` / admitted;
* percentiles use the nearest-rank method on the sorted values (deterministic, no
  interpolation); ``None`` when there is no value;
* means are ``math.fsum`` / count: correctly rounded, so independent of the order requests
  finished in;
* throughput = ``ok`` replies / the run's length (the time of the last event of any request).

The aggregates come from a `Tally` the engine keeps for every run, with or without per-request
records: counters, plus every latency and wait in a compact ``array('d')`` (8 bytes a request,
so a million-request run needs 16 MB for them). Percentiles are therefore exact, not streamed
estimates, and a run with ``records = false`` has exactly the metrics of the same run with
records.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from omnillm_sim.budget import BudgetStats
from omnillm_sim.sim.scenario import Scenario

__all__ = [
    "METRIC_NAMES",
    "Metrics",
    "RequestRecord",
    "RunResult",
    "Sample",
    "Tally",
    "compute_metrics",
    "percentile",
]


class RequestRecord(NamedTuple):
    """One request's fate. Money in micro-dollars; times in simulated seconds.

    An immutable named tuple (cheap to make: the engine makes one per request).

    ``decision`` is ``admitted`` or ``rejected``; ``reason`` the rejection reason
    (``NO_KEY``, ``BUDGET``, ``RATE_LIMITED``); ``status`` is ``ok``, ``http_<code>``,
    ``timeout``, ``cancelled`` or ``rejected``; ``actual`` is what the
    gateway finally charged.
    """

    id: int
    arrival: float
    model: str
    prompt_tokens: int
    output_tokens: int
    decision: str
    reason: str | None
    key: str | None
    start: float | None
    end: float | None
    estimate: int | None
    actual: int | None
    status: str


@dataclass(frozen=True, slots=True)
class Sample:
    """The state at one sampling instant (every ``sample_interval`` seconds).

    ``inflight`` and ``key_states`` are per key (in key order); a key state is ``available``,
    ``cooling`` (429 cooldown), ``open`` (breaker), ``half-open`` or ``dead``. ``rejected`` is
    the cumulative count per rejection reason so far.
    """

    time: float
    used: int
    spent: int
    open_reserved: int
    inflight: tuple[int, ...]
    key_states: tuple[str, ...]
    rejected: tuple[tuple[str, int], ...]


class Tally:
    """Running aggregates of one run, updated by the engine as requests end.

    ``latencies`` holds arrival-to-reply times of ``ok`` requests and ``waits`` the
    arrival-to-service-start times of served requests, in the order they happened;
    ``key_admitted`` / ``key_ok`` count per key index. Memory: two floats per request.
    """

    __slots__ = ("admitted", "arrivals", "key_admitted", "key_ok", "latencies", "ok", "reasons",
                 "statuses", "waits")

    def __init__(self, keys: int) -> None:
        self.arrivals = 0
        self.admitted = 0
        self.ok = 0
        self.reasons: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.latencies = array("d")
        self.waits = array("d")
        self.key_admitted = [0] * keys
        self.key_ok = [0] * keys

    def rejected(self, reason: str) -> None:
        """An arrival the gateway refused for ``reason``."""
        self.arrivals += 1
        self.reasons[reason] += 1
        self.statuses["rejected"] += 1

    def served(self, key: int, status: str, arrival: float, start: float | None,
               end: float) -> None:
        """An admitted request on key index ``key`` ended with ``status`` at ``end``."""
        self.arrivals += 1
        self.admitted += 1
        self.statuses[status] += 1
        self.key_admitted[key] += 1
        if start is not None:
            self.waits.append(start - arrival)
        if status == "ok":
            self.ok += 1
            self.key_ok[key] += 1
            self.latencies.append(end - arrival)

    def sorted_latencies(self) -> list[float]:
        """The latencies of ``ok`` requests, ascending."""
        return sorted(self.latencies)

    def __repr__(self) -> str:
        return (f"Tally(arrivals={self.arrivals}, admitted={self.admitted}, ok={self.ok}, "
                f"reasons={dict(self.reasons)})")


@dataclass(frozen=True)
class RunResult:
    """Everything one run produced.

    ``records`` (in id order) and ``budget_steps`` are empty when the scenario says
    ``records = false``; ``tally`` and ``samples`` are always kept, and `metrics` comes from
    ``tally``. ``budget_steps`` holds ``(time, used, spent, open_reserved)`` after each budget
    change;
    ``inflight_area`` is the exact time integral of the number of admitted requests in flight
    (for Little's law), ``key_busy_area`` the same per key. ``findings`` are documented,
    allowed deviations seen by the invariant checker (e.g. the faithful policy's overshoot).
    """

    scenario: Scenario
    seed: int
    policy: str
    key_labels: tuple[str, ...]
    records: tuple[RequestRecord, ...]
    samples: tuple[Sample, ...]
    budget_steps: tuple[tuple[float, int, int, int], ...]
    end_time: float
    inflight_area: float
    key_busy_area: tuple[float, ...]
    budget: BudgetStats
    gateway_stats: dict[str, Any]
    findings: tuple[str, ...]
    events: int
    checked: bool
    tally: Tally = field(repr=False, compare=False)
    _metrics: list[Metrics] = field(default_factory=list, repr=False, compare=False)

    @property
    def metrics(self) -> Metrics:
        """The aggregates (computed once)."""
        if not self._metrics:
            self._metrics.append(compute_metrics(self))
        return self._metrics[0]


METRIC_NAMES = (
    "rejection",
    "error",
    "p50",
    "p95",
    "p99",
    "mean_latency",
    "mean_wait",
    "throughput",
    "spent",
    "overshoot",
)
"""Metric names accepted by ``plan --target`` and shown by ``sweep``."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """Aggregates of one run (see the module docstring for definitions)."""

    arrivals: int
    admitted: int
    rejected: int
    ok: int
    errors: int
    rejections_by_reason: tuple[tuple[str, int], ...]
    statuses: tuple[tuple[str, int], ...]
    rejection: float
    error: float
    throughput: float
    length: float
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max_latency: float | None
    mean_latency: float | None
    mean_wait: float | None
    spent: int
    overshoot: int
    peak_used: int
    underestimated: int
    mean_in_system: float
    per_key: tuple[tuple[str, int, int, float], ...]

    def value(self, name: str) -> float:
        """A metric by `METRIC_NAMES` name, as a float (``inf`` when undefined, e.g. no reply).

        Raises:
            KeyError: an unknown name.
        """
        if name not in METRIC_NAMES:
            raise KeyError(name)
        raw = getattr(self, name)
        if raw is None:
            return math.inf
        return float(raw)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0 < q <= 100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def _mean(values: array[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def compute_metrics(result: RunResult) -> Metrics:
    """Aggregate a run's `Tally` and time integrals into `Metrics`."""
    tally = result.tally
    arrivals, admitted, ok = tally.arrivals, tally.admitted, tally.ok
    latencies = tally.sorted_latencies()
    length = result.end_time
    per_key = []
    for i, label in enumerate(result.key_labels):
        busy = result.key_busy_area[i] / length if length > 0 else 0.0
        per_key.append((label, tally.key_admitted[i], tally.key_ok[i], busy))
    stats = result.budget
    return Metrics(
        arrivals=arrivals,
        admitted=admitted,
        rejected=arrivals - admitted,
        ok=ok,
        errors=admitted - ok,
        rejections_by_reason=tuple(sorted(tally.reasons.items())),
        statuses=tuple(sorted(tally.statuses.items())),
        rejection=(arrivals - admitted) / arrivals if arrivals else 0.0,
        error=(admitted - ok) / admitted if admitted else 0.0,
        throughput=ok / length if length > 0 else 0.0,
        length=length,
        p50=percentile(latencies, 50),
        p90=percentile(latencies, 90),
        p95=percentile(latencies, 95),
        p99=percentile(latencies, 99),
        max_latency=latencies[-1] if latencies else None,
        mean_latency=_mean(tally.latencies),
        mean_wait=_mean(tally.waits),
        spent=stats.spent,
        overshoot=stats.overshoot,
        peak_used=stats.peak_used,
        underestimated=stats.underestimated,
        mean_in_system=result.inflight_area / length if length > 0 else 0.0,
        per_key=tuple(per_key),
    )
