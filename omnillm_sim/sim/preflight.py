"""Everything a run would refuse, found before it starts: what ``omnillm-sim validate`` checks.

Loading a scenario already checks every key, value and limit (`load_scenario`). `preflight`
adds what only shows at run time: the gateway's configuration, the price table (its override
file, and every model a request could name, including a trace's after its ``models`` mapping)
and every row of a trace (values, order, line length, encoding).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from omnillm_sim.sim.scenario import Scenario

__all__ = ["Preflight", "preflight"]


@dataclass(frozen=True, slots=True)
class Preflight:
    """What a preflight found: the models checked and, for a trace, its rows."""

    models: tuple[str, ...]
    trace_rows: int | None = None
    replayed_rows: int | None = None


def preflight(scenario: Scenario) -> Preflight:
    """Check ``scenario`` the way a run would, without simulating it.

    Reads a trace to its end (a bad row after the run's horizon is still a bad file).

    Raises:
        TraceError: a bad trace file or row.
        UnknownModelError: a model the price table does not know (and no fallback).
        ConfigError: a bad gateway setting or price override file.
    """
    from omnillm_sim.sim.engine import build_gateway
    from omnillm_sim.sim.importers import in_start_order, is_observed, read_observed
    from omnillm_sim.sim.traces import read_trace

    gateway = build_gateway(scenario, random.Random(0))
    models = {scenario.requests.model}
    rows = replayed = None
    spec = scenario.workload.trace
    if scenario.workload.kind == "trace" and spec is not None and is_observed(
            spec.format, dict(spec.columns)):
        mapping = dict(spec.models)
        rows = replayed = 0
        origin: float | None = None
        logged = in_start_order(read_observed(spec.path, spec.format, columns=dict(spec.columns),
                                              time_unit=spec.time_unit), str(spec.path))
        for rows, obs in enumerate(logged, start=1):
            origin = obs.start if origin is None else origin
            if (obs.start - origin) / spec.speed < scenario.duration and (
                    spec.limit is None or rows <= spec.limit):
                replayed += 1
            if obs.model:
                models.add(mapping.get(obs.model, obs.model))
    elif scenario.workload.kind == "trace" and spec is not None:
        mapping = dict(spec.models)
        rows = replayed = 0
        for row in read_trace(spec.path, spec.format, columns=dict(spec.columns),
                              time_unit=spec.time_unit, max_line_length=spec.max_line_length):
            rows += 1
            if row.time / spec.speed < scenario.duration and (
                    spec.limit is None or rows <= spec.limit):
                replayed += 1
            if row.model:
                models.add(mapping.get(row.model, row.model))
    for model in sorted(models):
        gateway.prices.price(model)
    return Preflight(tuple(sorted(models)), rows, replayed)
