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

Interruption: tasks are handed out a few at a time (never all at once), so Ctrl-C or SIGTERM
(which the CLI turns into `KeyboardInterrupt`) cancels what is still pending, terminates the
worker processes (or cancels the Dask futures) and returns within a couple of seconds. Local
workers ignore SIGINT themselves: the terminal sends it to the whole process group, and only
the parent decides what to stop.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnillm_sim.errors import ConfigError
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


DASK_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a Dask scheduler (``--dask tcp://...``) before giving up."""


def _dask_map(tasks: Sequence[SweepTask], address: str) -> list[dict[str, Any]]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("--dask", address, "needs the optional dependency: "
                          "pip install 'omnillm-sim[dask]'") from None
    if address == "local":
        with LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            return _dask_gather(client, tasks)
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError("--dask", address, f"is not a reachable Dask scheduler ({exc})"
                          ) from None
    with client:
        return _dask_gather(client, tasks)


def _dask_gather(client: Any, tasks: Sequence[SweepTask]) -> list[dict[str, Any]]:
    futures = client.map(run_task, tasks, pure=False)
    try:
        return list(client.gather(futures))
    except BaseException:
        client.cancel(futures)  # Ctrl-C or an error: nothing keeps running on the cluster
        raise


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel pending tasks and end the workers now, without waiting for running ones."""
    pool.shutdown(wait=False, cancel_futures=True)
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()
    for process in list(processes.values()):
        process.join(timeout=1.0)
        if process.is_alive():  # pragma: no cover - a worker that ignores SIGTERM
            process.kill()


def _local_map(tasks: Iterator[SweepTask], workers: int | None) -> list[dict[str, Any]]:
    """Run ``tasks`` on local processes, at most ``2 x workers`` submitted at a time."""
    size = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(max_workers=size, initializer=_ignore_sigint)
    rows: dict[int, dict[str, Any]] = {}
    pending: dict[Future[dict[str, Any]], int] = {}
    numbered = enumerate(tasks)
    try:
        while True:
            for number, task in itertools.islice(numbered, 2 * size - len(pending)):
                pending[pool.submit(run_task, task)] = number
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                rows[pending.pop(future)] = future.result()
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    return [rows[i] for i in range(len(rows))]


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
    text = path.read_text(encoding="utf-8-sig")
    points = expand_grid(grid)
    for point in points:  # fail fast, with the loader's message, before starting workers
        load_scenario(path, dict(point))
    if workers is not None and workers < 1:
        raise ConfigError("workers", workers, "must be >= 1")
    base = str(path.parent.resolve())

    def tasks() -> Iterator[SweepTask]:
        for point in points:
            for seed in seeds:
                yield SweepTask(text, str(path), base, scenario.name, point, seed, check)

    if dask is not None:
        rows = _dask_map(list(tasks()), dask)
        executor = "dask-local" if dask == "local" else f"dask {dask}"
    elif workers == 1 or len(points) * len(seeds) == 1:
        rows = [run_task(t) for t in tasks()]
        executor = "in-process"
    else:
        rows = _local_map(tasks(), workers)
        executor = "processes"
    return SweepResult(
        scenario=scenario,
        grid={k: list(v) for k, v in grid.items()},
        seeds=tuple(seeds),
        rows=tuple(rows),
        executor=executor,
    )
