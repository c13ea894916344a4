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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from omnillm_sim.errors import ConfigError
from omnillm_sim.sim.metrics import METRIC_NAMES, Metrics
from omnillm_sim.sim.scenario import Scenario
from omnillm_sim.sim.units import parse_duration

__all__ = ["PlanResult", "Target", "parse_target", "plan"]

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


@dataclass(frozen=True)
class PlanResult:
    """The answer (``None`` if even the smallest setting misses) and every evaluated point."""

    vary: str
    answer: float | None
    targets: tuple[Target, ...]
    points: tuple[tuple[float, dict[str, float], bool], ...]
    seeds: tuple[int, ...]
    note: str


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
) -> PlanResult:
    """Search the capacity of ``scenario`` against ``targets`` (see the module docstring).

    Raises:
        ConfigError: no targets, an unknown ``vary``, or bad search bounds.
    """
    if not targets:
        raise ConfigError("--target", None, "is required at least once")
    if vary not in ("traffic", "keys"):
        raise ConfigError("vary", vary, "must be 'traffic' or 'keys'")
    if not 0 < start <= max_factor:
        raise ConfigError("start", start, f"must be in (0, {max_factor:g}]")
    run_one = runner or _default_runner(check)
    points: list[tuple[float, dict[str, float], bool]] = []

    def at(x: float) -> bool:
        candidate = scenario.scaled(x) if vary == "traffic" else scenario.with_key_count(int(x))
        values, ok = _evaluate(candidate, targets, seeds, run_one)
        points.append((x, values, ok))
        if on_point is not None:
            on_point(x, values, ok)
        return ok

    if vary == "traffic":
        answer, note = _search_traffic(at, start, max_factor, tolerance, max_evaluations)
    else:
        answer, note = _search_keys(at, scenario.keys[0].count, max_keys, max_evaluations)
    return PlanResult(vary, answer, tuple(targets), tuple(points), tuple(seeds), note)


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
