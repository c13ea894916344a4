"""The SimPy simulator: scenarios, workloads, traces, provider model, engine, sweep and plan.

>>> from omnillm_sim.sim import load_scenario, run
>>> result = run(load_scenario("scenarios/steady.toml"))       # doctest: +SKIP
>>> result.metrics.rejection, result.metrics.p99                # doctest: +SKIP

`run` is deterministic for a seed; `RunResult` is plain data rendered by
``omnillm_sim.report``. ``sweep`` and ``plan`` live in their own modules
(`omnillm_sim.sim.sweep`, `omnillm_sim.sim.plan`).
"""

from omnillm_sim.sim.engine import run
from omnillm_sim.sim.metrics import Metrics, RequestRecord, RunResult, Sample
from omnillm_sim.sim.scenario import Scenario, load_scenario, scenario_from_dict
from omnillm_sim.sim.traces import TraceRow, read_trace

__all__ = [
    "Metrics",
    "RequestRecord",
    "RunResult",
    "Sample",
    "Scenario",
    "TraceRow",
    "load_scenario",
    "read_trace",
    "run",
    "scenario_from_dict",
]
