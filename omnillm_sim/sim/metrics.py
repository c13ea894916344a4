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
* throughput = ``ok`` replies / the run's length (the time of the last event of any request).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from omnillm_sim.budget import BudgetStats
from omnillm_sim.sim.scenario import Scenario

__all__ = [
    "METRIC_NAMES",
    "Metrics",
    "RequestRecord",
    "RunResult",
    "Sample",
    "compute_metrics",
    "percentile",
]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request's fate. Money in micro-dollars; times in simulated seconds.

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


@dataclass(frozen=True)
class RunResult:
    """Everything one run produced.

    ``budget_steps`` holds ``(time, used, spent, open_reserved)`` after each budget change;
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


def compute_metrics(result: RunResult) -> Metrics:
    """Aggregate a run's records and areas into `Metrics`."""
    records = result.records
    arrivals = len(records)
    admitted = [r for r in records if r.decision == "admitted"]
    ok = [r for r in admitted if r.status == "ok"]
    latencies = sorted(r.end - r.arrival for r in ok if r.end is not None)
    waits = [r.start - r.arrival for r in admitted if r.start is not None]
    reasons = Counter(r.reason for r in records if r.reason is not None)
    statuses = Counter(r.status for r in records)
    length = result.end_time
    per_key = []
    for i, label in enumerate(result.key_labels):
        on_key = [r for r in admitted if r.key == label]
        key_ok = sum(1 for r in on_key if r.status == "ok")
        busy = result.key_busy_area[i] / result.end_time if result.end_time > 0 else 0.0
        per_key.append((label, len(on_key), key_ok, busy))
    stats = result.budget
    return Metrics(
        arrivals=arrivals,
        admitted=len(admitted),
        rejected=arrivals - len(admitted),
        ok=len(ok),
        errors=len(admitted) - len(ok),
        rejections_by_reason=tuple(sorted(reasons.items())),
        statuses=tuple(sorted(statuses.items())),
        rejection=(arrivals - len(admitted)) / arrivals if arrivals else 0.0,
        error=(len(admitted) - len(ok)) / len(admitted) if admitted else 0.0,
        throughput=len(ok) / length if length > 0 else 0.0,
        length=length,
        p50=percentile(latencies, 50),
        p90=percentile(latencies, 90),
        p95=percentile(latencies, 95),
        p99=percentile(latencies, 99),
        max_latency=latencies[-1] if latencies else None,
        mean_latency=sum(latencies) / len(latencies) if latencies else None,
        mean_wait=sum(waits) / len(waits) if waits else None,
        spent=stats.spent,
        overshoot=stats.overshoot,
        peak_used=stats.peak_used,
        underestimated=stats.underestimated,
        mean_in_system=result.inflight_area / result.end_time if result.end_time > 0 else 0.0,
        per_key=tuple(per_key),
    )
