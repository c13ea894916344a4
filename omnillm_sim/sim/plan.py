"""Capacity planning: the largest traffic (or the fewest keys) that still meets the targets.

Targets are written ``metric op bound``: ``rejection<=0.01``, ``p99<=20s``,
``throughput>=5``, ``error<=2%`` (metrics: `METRIC_NAMES`; latency bounds accept durations;
fractions accept percentages). A point meets the targets when every target holds for every
seed (the worst seed decides).

* ``vary="traffic"``: search the traffic multiplier (rates, clients or replay speed x factor).
  Starting from ``start``, double until a point fails (at most ``max_factor``), then bisect
  between the last passing and the first failing factor until they are within ``tolerance``
  (relative). The answer is the last passing factor.
* ``vary="keys"``: search the number of keys of the first ``[[keys]]`` entry; double until a
  count passes (at most ``max_keys``), then bisect on integers. The answer is the smallest
  passing count.

Both assume monotonicity (more traffic never helps, more keys never hurt), which holds for the
metrics here up to simulation noise; the capacity chart shows every evaluated point so a
non-monotone curve is visible.

With ``confidence`` set (the CLI's default, 0.95) a point is decided on confidence intervals
instead of the worst seed: each target's metric gets a Student-t interval over the seeds
(`omnillm_sim.sim.stats.mean_ci`); a ``<=`` target is met when the interval's upper bound is
within the bound, missed when its lower bound is beyond it. While some target is neither,
seeds are added one at a time (sequential replications) up to ``max_seeds``; a point still
straddling a bound then is *undecided*, and the search treats it as not meeting the targets
(so the answer is one whose intervals clear every target).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from omnillm_sim.errors import ConfigError
from omnillm_sim.sim.metrics import METRIC_NAMES, Metrics
from omnillm_sim.sim.scenario import Scenario
from omnillm_sim.sim.stats import Interval, mean_ci
from omnillm_sim.sim.units import parse_duration

__all__ = ["PlanResult", "PointDetail", "Target", "parse_target", "plan"]

_TARGET_RE = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=)\s*(\S+)\s*$")
_LATENCY = ("p50", "p95", "p99", "mean_latency", "mean_wait")


@dataclass(frozen=True, slots=True)
class Target:
    """``metric op bound``, e.g. ``Target("p99", "<=", 20.0)``."""

    metric: str
    op: str
    bound: float

    def met(self, value: float) -> bool:
        """Whether ``value`` satisfies the target."""
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        unit = "s" if self.metric in _LATENCY else ""
        return f"{self.metric}{self.op}{self.bound:g}{unit}"


def parse_target(text: str) -> Target:
    """Parse ``"rejection<=0.01"``, ``"p99<=20s"``, ``"error<=2%"``, ``"throughput>=5"``.

    Raises:
        ConfigError: not of the form ``metric<=value`` / ``metric>=value``, an unknown metric,
            or a bad value.
    """
    match = _TARGET_RE.match(text)
    if not match:
        raise ConfigError("--target", text, 'must look like "rejection<=0.01" or "p99<=20s"')
    metric, op, raw = match.groups()
    if metric not in METRIC_NAMES:
        raise ConfigError("--target", text, f"names an unknown metric; use one of "
                          f"{', '.join(METRIC_NAMES)}")
    try:
        if metric in _LATENCY:
            bound = parse_duration(raw) if raw[-1].isalpha() else float(raw)
        elif raw.endswith("%"):
            bound = float(raw[:-1]) / 100.0
        else:
            bound = float(raw)
    except ValueError:
        raise ConfigError("--target", text, "has a bound that is not a number") from None
    if bound != bound or bound < 0:
        raise ConfigError("--target", text, "has a bound that must be a number >= 0")
    return Target(metric, op, bound)


@dataclass(frozen=True, slots=True)
class PointDetail:
    """How a point was decided on intervals: ``verdict`` is ``meets``, ``misses`` or
    ``undecided``; ``intervals`` per target metric over the ``seeds`` run there."""

    x: float
    verdict: str
    seeds: tuple[int, ...]
    intervals: dict[str, Interval]


@dataclass(frozen=True)
class PlanResult:
    """The answer (``None`` if even the smallest setting misses) and every evaluated point.

    ``points`` hold ``(x, values, meets)`` (values: worst seed, or means with ``confidence``);
    ``details`` the intervals and verdict of each point when decided on intervals.
    """

    vary: str
    answer: float | None
    targets: tuple[Target, ...]
    points: tuple[tuple[float, dict[str, float], bool], ...]
    seeds: tuple[int, ...]
    note: str
    confidence: float | None = None
    details: tuple[PointDetail, ...] = ()

    def detail(self, x: float | None) -> PointDetail | None:
        """The interval detail of point ``x`` (``None``: not decided on intervals)."""
        return next((d for d in self.details if d.x == x), None)


Runner = Callable[[Scenario, int], Metrics]


def _evaluate(
    scenario: Scenario, targets: Sequence[Target], seeds: Sequence[int], runner: Runner
) -> tuple[dict[str, float], bool]:
    worst: dict[str, float] = {}
    for seed in seeds:
        m = runner(scenario, seed)
        for t in targets:
            value = m.value(t.metric)
            if t.metric not in worst:
                worst[t.metric] = value
            elif t.op == "<=":
                worst[t.metric] = max(worst[t.metric], value)
            else:
                worst[t.metric] = min(worst[t.metric], value)
    return worst, all(t.met(worst[t.metric]) for t in targets)


def _verdict(target: Target, iv: Interval, values: Sequence[float]) -> str:
    """``meets``, ``misses`` or ``undecided`` for one target's interval."""
    if values and all(math.isinf(v) for v in values):  # undefined on every seed (no reply)
        return "misses" if target.op == "<=" else "meets"
    if target.op == "<=":
        if iv.high <= target.bound:
            return "meets"
        return "misses" if iv.low > target.bound else "undecided"
    if iv.low >= target.bound:
        return "meets"
    return "misses" if iv.high < target.bound else "undecided"


def _evaluate_ci(
    x: float, scenario: Scenario, targets: Sequence[Target], seeds: Sequence[int],
    max_seeds: int, confidence: float, runner: Runner,
) -> tuple[dict[str, float], PointDetail]:
    used = list(seeds)
    while len(used) < 2:
        used.append(used[-1] + 1)
    runs = [runner(scenario, seed) for seed in used]
    while True:
        values = {t.metric: [m.value(t.metric) for m in runs] for t in targets}
        intervals = {metric: mean_ci(v, confidence) for metric, v in values.items()}
        verdicts = [_verdict(t, intervals[t.metric], values[t.metric]) for t in targets]
        if "misses" in verdicts:
            verdict = "misses"
        elif all(v == "meets" for v in verdicts):
            verdict = "meets"
        elif len(used) >= max_seeds:
            verdict = "undecided"
        else:
            used.append(used[-1] + 1)
            runs.append(runner(scenario, used[-1]))
            continue
        means = {metric: iv.mean for metric, iv in intervals.items()}
        return means, PointDetail(x, verdict, tuple(used), intervals)


def _default_runner(check: bool) -> Runner:
    def runner(scenario: Scenario, seed: int) -> Metrics:
        from omnillm_sim.sim.engine import run

        return run(scenario, seed, check=check).metrics

    return runner


def plan(
    scenario: Scenario,
    targets: Sequence[Target],
    *,
    vary: str = "traffic",
    seeds: Sequence[int] = (1,),
    start: float = 1.0,
    max_factor: float = 64.0,
    max_keys: int = 256,
    tolerance: float = 0.02,
    max_evaluations: int = 24,
    check: bool = False,
    runner: Runner | None = None,
    on_point: Callable[[float, dict[str, float], bool], None] | None = None,
    confidence: float | None = None,
    max_seeds: int = 10,
    on_detail: Callable[[PointDetail], None] | None = None,
) -> PlanResult:
    """Search the capacity of ``scenario`` against ``targets`` (see the module docstring).

    ``confidence`` decides each point on intervals over at least ``seeds`` (at least two)
    and at most ``max_seeds`` seeds; ``None`` keeps the worst-seed rule.

    Raises:
        ConfigError: no targets, an unknown ``vary``, or bad search bounds.
    """
    if confidence is not None and not 0 < confidence < 1:
        raise ConfigError("--confidence", confidence, "must be in (0, 1), e.g. 0.95")
    if confidence is not None and max_seeds < max(2, len(seeds)):
        raise ConfigError("--max-seeds", max_seeds,
                          f"must be >= the initial seeds and >= 2 (got {len(seeds)} seeds)")
    if not targets:
        raise ConfigError("--target", None, "is required at least once")
    if vary not in ("traffic", "keys"):
        raise ConfigError("vary", vary, "must be 'traffic' or 'keys'")
    if not 0 < start <= max_factor:
        raise ConfigError("start", start, f"must be in (0, {max_factor:g}]")
    run_one = runner or _default_runner(check)
    points: list[tuple[float, dict[str, float], bool]] = []
    details: list[PointDetail] = []

    def at(x: float) -> bool:
        candidate = scenario.scaled(x) if vary == "traffic" else scenario.with_key_count(int(x))
        if confidence is None:
            values, ok = _evaluate(candidate, targets, seeds, run_one)
        else:
            values, detail = _evaluate_ci(x, candidate, targets, seeds, max_seeds, confidence,
                                          run_one)
            ok = detail.verdict == "meets"
            details.append(detail)
            if on_detail is not None:
                on_detail(detail)
        points.append((x, values, ok))
        if on_point is not None:
            on_point(x, values, ok)
        return ok

    if vary == "traffic":
        answer, note = _search_traffic(at, start, max_factor, tolerance, max_evaluations)
    else:
        answer, note = _search_keys(at, scenario.keys[0].count, max_keys, max_evaluations)
    undecided = [d.x for d in details if d.verdict == "undecided"]
    if undecided:
        where = ", ".join(f"{x:.4g}" for x in sorted(undecided))
        note += (f"; undecided after {max_seeds} seeds at {where} (the interval straddles a "
                 "target: counted as not meeting it)")
    return PlanResult(vary, answer, tuple(targets), tuple(points), tuple(seeds), note,
                      confidence, tuple(details))


def _search_traffic(
    at: Callable[[float], bool], start: float, max_factor: float, tolerance: float, budget: int
) -> tuple[float | None, str]:
    low: float | None = None
    high: float | None = None
    x = start
    if at(x):
        low = x
        while x * 2 <= max_factor:
            x *= 2
            if not at(x):
                high = x
                break
            low = x
        if high is None:
            return low, f"still meets the targets at the search limit x{max_factor:g}"
    else:
        high = x
        while x / 2 >= start / 64:
            x /= 2
            if at(x):
                low = x
                break
            high = x
        if low is None:
            return None, f"misses the targets even at x{x:g} of the scenario's traffic"
    evaluations = 0
    while high - low > tolerance * low and evaluations < budget:
        mid = (low + high) / 2
        evaluations += 1
        if at(mid):
            low = mid
        else:
            high = mid
    return low, f"bisected to within {tolerance:.0%} (next failing factor x{high:.4g})"


def _search_keys(
    at: Callable[[float], bool], start: int, max_keys: int, budget: int
) -> tuple[float | None, str]:
    n = max(1, start)
    failing = 0
    passing: int | None = None
    if at(n):
        passing = n
        while passing > 1:
            lower = max(1, passing // 2)
            if at(lower):
                passing = lower
                if lower == 1:
                    break
            else:
                failing = lower
                break
    else:
        failing = n
        while n * 2 <= max_keys:
            n *= 2
            if at(n):
                passing = n
                break
            failing = n
        if passing is None:
            return None, f"misses the targets even with {failing} keys (the search limit)"
    evaluations = 0
    while passing - failing > 1 and evaluations < budget:
        mid = (passing + failing) // 2
        evaluations += 1
        if at(mid):
            passing = mid
        else:
            failing = mid
    return float(passing), "smallest key count that meets every target"
