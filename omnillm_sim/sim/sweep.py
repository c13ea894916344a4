"""Parameter sweeps: every grid point x every seed, run in parallel.

A grid maps dotted scenario keys to values (``{"workload.rate": ["10/s", "20/s"],
"gateway.policy": ["omnillm-0.1.5", "safe"]}``); each point is the scenario file with those
overrides, checked by the same loader as the file itself. Tasks carry the scenario's *text*
(not its path), so they run the same on local processes and on a remote Dask cluster.

Executors:

* local processes (`concurrent.futures.ProcessPoolExecutor`, the default);
* ``dask="local"``: a `dask.distributed.LocalCluster` started for the sweep;
* ``dask="tcp://host:8786"``: an existing Dask scheduler.

Each task is a pure function of (scenario text, overrides, seed), so every executor gives the
same rows, in the same (grid, seed) order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnillm_sim.sim.metrics import METRIC_NAMES
from omnillm_sim.sim.scenario import Scenario, load_scenario, scenario_from_text

__all__ = ["SweepResult", "SweepTask", "expand_grid", "run_task", "sweep"]


@dataclass(frozen=True, slots=True)
class SweepTask:
    """One run of a sweep: the scenario text, where it came from, its overrides and seed."""

    text: str
    source: str
    base: str
    name: str
    overrides: tuple[tuple[str, Any], ...]
    seed: int
    check: bool = True


def run_task(task: SweepTask) -> dict[str, Any]:
    """Run one task and return its row: the point, the seed and every metric (picklable)."""
    from omnillm_sim.sim.engine import run

    scenario = scenario_from_text(
        task.text, source=task.source, base=Path(task.base), name=task.name,
        overrides=dict(task.overrides),
    )
    metrics = run(scenario, task.seed, check=task.check).metrics
    row: dict[str, Any] = {
        "point": dict(task.overrides),
        "seed": task.seed,
        "arrivals": metrics.arrivals,
        "admitted": metrics.admitted,
        "ok": metrics.ok,
    }
    for name in METRIC_NAMES:
        value = getattr(metrics, name)
        row[name] = round(value, 6) if isinstance(value, float) else value
    return row


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the grid's values, in the order given (last key varies fastest)."""
    keys = list(grid)
    return [tuple(zip(keys, combo, strict=True))
            for combo in itertools.product(*(grid[k] for k in keys))]


@dataclass(frozen=True)
class SweepResult:
    """The rows of a sweep, ordered by grid point then seed."""

    scenario: Scenario
    grid: dict[str, list[Any]]
    seeds: tuple[int, ...]
    rows: tuple[dict[str, Any], ...]
    executor: str

    def table(self) -> list[dict[str, Any]]:
        """Rows without the executor-specific parts (for comparing executors)."""
        return [dict(row) for row in self.rows]


def _dask_map(tasks: list[SweepTask], address: str) -> list[dict[str, Any]]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "--dask needs the optional dependency: pip install 'omnillm-sim[dask]'"
        ) from exc
    if address == "local":
        with LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            futures = client.map(run_task, tasks, pure=False)
            return list(client.gather(futures))
    with Client(address) as client:  # type: ignore[no-untyped-call]
        futures = client.map(run_task, tasks, pure=False)
        return list(client.gather(futures))


def sweep(
    path: str | Path,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    *,
    workers: int | None = None,
    dask: str | None = None,
    check: bool = True,
) -> SweepResult:
    """Run the scenario file at ``path`` over ``grid`` x ``seeds``.

    ``workers`` limits local processes (default: the CPU count; 1 runs in this process).

    Raises:
        ScenarioError: a grid value the scenario loader rejects (checked before any run).
    """
    path = Path(path)
    scenario = load_scenario(path)
    text = path.read_text(encoding="utf-8")
    points = expand_grid(grid)
    for point in points:  # fail fast, with the loader's message, before starting workers
        load_scenario(path, dict(point))
    tasks = [
        SweepTask(text, str(path), str(path.parent.resolve()), path.stem, point, seed, check)
        for point in points
        for seed in seeds
    ]
    if dask is not None:
        rows = _dask_map(tasks, dask)
        executor = "dask-local" if dask == "local" else f"dask {dask}"
    elif workers == 1 or len(tasks) == 1:
        rows = [run_task(t) for t in tasks]
        executor = "in-process"
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(run_task, tasks))
        executor = "processes"
    return SweepResult(
        scenario=scenario,
        grid={k: list(v) for k, v in grid.items()},
        seeds=tuple(seeds),
        rows=tuple(rows),
        executor=executor,
    )
