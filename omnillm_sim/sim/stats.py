"""Statistics of replications: Student-t confidence intervals, paired differences, MSER-5.

The simulation literature's practice (Law, *Simulation Modeling and Analysis*, ch. 9-10):

* **independent replications** — one run per seed; each run's metric is one observation, and
  the interval for the mean is ``mean ± t(1 - α/2, n - 1) · s / √n`` (`mean_ci`);
* **common random numbers** — every configuration runs on the same seeds, whose arrival,
  request and provider draws come from separate streams (``f"{seed}/arrivals"``,
  ``f"{seed}/requests"``, ...), so the configurations see the same traffic and their
  difference is estimated per seed (`paired_ci`), with a much tighter interval;
* **warm-up deletion** — `mser5` picks how many leading observations to drop so the mean of
  the rest is least uncertain (White's MSER with batches of 5).

The t quantile is computed here from the exact Student-t CDF for integer degrees of freedom
(Abramowitz & Stegun 26.7.3-4) by bisection, so no SciPy is needed. Pure Python; no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_CONFIDENCE",
    "SCALAR_METRICS",
    "Interval",
    "Warmup",
    "mean_ci",
    "metric_intervals",
    "mser5",
    "paired_ci",
    "paired_intervals",
    "steady_mean_latency",
    "t_critical",
    "warmup",
]

SCALAR_METRICS = (
    "arrivals", "admitted", "rejected", "ok", "errors", "rejection", "error", "throughput",
    "length", "p50", "p90", "p95", "p99", "max_latency", "mean_latency", "mean_wait", "spent",
    "overshoot", "peak_used", "underestimated", "mean_in_system",
)
"""Every number of a run's `Metrics` that replications average (the summary's metrics)."""

DEFAULT_CONFIDENCE = 0.95


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (integer >= 1) degrees of freedom, t >= 0."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):  # c + (2/3)c^3 + (2·4)/(3·5)c^5 + ...
            if k > 1:
                term *= c * c * (2 * k - 2) / (2 * k - 1)
            total += term
        return (2 / math.pi) * (theta + s * total) if df > 1 else 2 * theta / math.pi
    total, term = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):  # 1 + (1/2)c^2 + (1·3)/(2·4)c^4 + ...
        term *= c * c * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_critical(confidence: float, df: int) -> float:
    """The two-sided Student-t critical value: ``P(|T| <= t) = confidence`` with ``df``.

    >>> round(t_critical(0.95, 4), 3)
    2.776

    Raises:
        ValueError: ``confidence`` outside (0, 1) or ``df`` < 1.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence(={confidence!r}) must be in (0, 1)")
    if df < 1:
        raise ValueError(f"df(={df!r}) must be >= 1")
    low, high = 0.0, 1.0
    while _t_central(high, df) < confidence:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if _t_central(mid, df) < confidence:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean and its confidence interval over ``n`` replications.

    With one replication (or an undefined value in any) the interval is unbounded
    (``low = -inf``, ``high = inf``): nothing can be said about its precision.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def half_width(self) -> float:
        """Half the interval's width (``inf`` when unbounded)."""
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return self.low <= value <= self.high

    def __str__(self) -> str:
        if math.isinf(self.half_width):
            return f"{self.mean:.4g} (n={self.n}, no interval)"
        return (f"{self.mean:.4g} ({self.confidence:.0%} CI {self.low:.4g} .. {self.high:.4g}, "
                f"n={self.n})")


def mean_ci(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """The mean of ``values`` (one per replication) with its Student-t interval.

    Raises:
        ValueError: no values, or a bad ``confidence``.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence(={confidence!r}) must be in (0, 1)")
    if any(not math.isfinite(v) for v in values):
        mean = math.inf if any(v == math.inf for v in values) else math.nan
        return Interval(mean, -math.inf, math.inf, n, confidence)
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, confidence)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_critical(confidence, n - 1) * math.sqrt(variance / n)
    return Interval(mean, mean - half, mean + half, n, confidence)


def paired_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = DEFAULT_CONFIDENCE
) -> Interval:
    """The mean of ``a[i] - b[i]`` (same seed i under two configurations) with its interval.

    Raises:
        ValueError: lengths differ, no pairs, or a bad ``confidence``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_ci needs as many values on each side ({len(a)} != {len(b)})")
    return mean_ci([x - y for x, y in zip(a, b, strict=True)], confidence)


def mser5(series: Sequence[float]) -> int:
    """How many leading observations to delete as warm-up (MSER-5).

    The series is cut into batches of 5; for each candidate number ``d`` of deleted batches
    (at most half of them) the statistic is ``Σ (Z_j - mean)² / (b - d)²`` over the remaining
    batch means ``Z_j``; the ``d`` minimising it wins (the first on ties). Returns ``5 d``.
    Fewer than 10 observations: 0.
    """
    batches = len(series) // 5
    if batches < 2:
        return 0
    means = [math.fsum(series[5 * j:5 * j + 5]) / 5 for j in range(batches)]
    # A backward Welford pass gives every candidate's statistic in O(b), exactly 0 for a
    # constant suffix (so ties resolve to the smallest cut).
    best_d, best = 0, math.inf
    mean = m2 = 0.0
    stats = [math.inf] * batches
    for j in range(batches - 1, -1, -1):
        k = batches - j
        delta = means[j] - mean
        mean += delta / k
        m2 += delta * (means[j] - mean)
        stats[j] = max(m2, 0.0) / (k * k)
    for d in range(batches // 2 + 1):
        if stats[d] < best:
            best_d, best = d, stats[d]
    return 5 * best_d


def _value(metrics: Any, name: str) -> float:
    raw = getattr(metrics, name)
    return math.inf if raw is None else float(raw)


def metric_intervals(
    runs: Sequence[Any], confidence: float = DEFAULT_CONFIDENCE,
    extra: dict[str, Sequence[float]] | None = None,
) -> dict[str, Interval]:
    """`mean_ci` of every `SCALAR_METRICS` over ``runs`` (one `Metrics` per seed), and of
    each ``extra`` named series of per-seed values."""
    out = {name: mean_ci([_value(m, name) for m in runs], confidence)
           for name in SCALAR_METRICS}
    for name, values in (extra or {}).items():
        out[name] = mean_ci(values, confidence)
    return out


def steady_mean_latency(latencies: Sequence[float]) -> float:
    """Mean of a run's ``ok`` latencies in completion order after an MSER-5 warm-up cut
    (``inf`` with no latency): the steady-state mean, unbiased by the empty start."""
    if not latencies:
        return math.inf
    rest = latencies[mser5(latencies):]
    return math.fsum(rest) / len(rest)


def paired_intervals(
    runs: Sequence[Any], baseline: Sequence[Any], confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Interval]:
    """`paired_ci` of every `SCALAR_METRICS`: ``runs[i] - baseline[i]`` (same seed i)."""
    return {name: paired_ci([_value(m, name) for m in runs],
                            [_value(m, name) for m in baseline], confidence)
            for name in SCALAR_METRICS}


@dataclass(frozen=True, slots=True)
class Warmup:
    """Where MSER-5 cut a run's latency series (``ok`` replies in completion order).

    ``cut`` replies were deleted; ``cut_time`` is when the first kept one completed (``None``
    when the completion times are not known); ``mean_latency`` the mean of the rest.
    """

    cut: int
    cut_time: float | None
    kept: int
    mean_latency: float | None
    mean_all: float | None


def warmup(latencies: Sequence[float], ends: Sequence[float] | None = None) -> Warmup | None:
    """MSER-5 over a run's ``ok`` latencies in completion order (its `Tally`'s, so the same
    with or without per-request records); ``ends``: their completion times, if known, in the
    same order. ``None`` when there is no latency."""
    if not latencies:
        return None
    cut = mser5(latencies)
    rest = latencies[cut:]
    return Warmup(
        cut=cut,
        cut_time=ends[min(cut, len(ends) - 1)] if ends else None,
        kept=len(rest),
        mean_latency=math.fsum(rest) / len(rest) if rest else None,
        mean_all=math.fsum(latencies) / len(latencies),
    )
