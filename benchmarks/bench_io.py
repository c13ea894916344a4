"""Trace ingest against csv.reader, and sweep scaling on local processes.

Ingest: the Azure conversation trace (``../shared/data/AzureLLMInferenceTrace_conv.csv``,
19,366 rows) read 50 times (about 970,000 rows) by ``read_trace(path, "azure")`` (every row
converted and checked: timestamp, order, token counts, a `TraceRow`) against `csv.reader`
over the same file with no conversion. Skipped, with a note, when the trace is absent.

Sweep: 8 grid points of a scenario, ``sweep(..., workers=2)`` (a process pool) against
``workers=1`` (in this process), both with the checker off. The speedup is 1-process time /
2-process time, so its ceiling is the number of free cores.
"""

from __future__ import annotations

import csv
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure, Size, side_by_side, timed
from omnillm_sim.sim.sweep import sweep
from omnillm_sim.sim.traces import read_trace

ROOT = Path(__file__).resolve().parents[1]
AZURE_TRACE = ROOT.parent / "shared" / "data" / "AzureLLMInferenceTrace_conv.csv"

SWEEP_SCENARIO = """\
# sweep benchmark: 8 grid points of a 4-key gateway
seed = 3
duration = "{duration}"

[[keys]]
label = "key"
count = 4
rpm = 500

[budget]
limit = "500.00"

[workload]
kind = "poisson"
rate = "20/s"

[provider]
ttft = "0.5s"
tokens_per_second = 60
"""


def _read_ours(path: Path, times: int) -> int:
    n = 0
    for _ in range(times):
        for _row in read_trace(path, "azure"):
            n += 1
    return n


def _read_csv(path: Path, times: int) -> int:
    n = 0
    for _ in range(times):
        with path.open(newline="", encoding="utf-8") as fh:
            for _fields in csv.reader(fh):
                n += 1
    return n


def trace_ingest(size: Size) -> Figure:
    name = "trace ingest: Azure conv x50 vs csv.reader"
    if not AZURE_TRACE.exists():
        return Figure(name, 0.0, None, "s", "ratio<=", 2.0, 0, skipped=True,
                      note=f"skipped: {AZURE_TRACE} is absent "
                      "(see scenarios/azure-conv-replay.toml)")
    times, reps = (1, 3) if size == "smoke" else (50, 5)
    rows = _read_ours(AZURE_TRACE, 1)
    ours, base = side_by_side(
        timed(lambda: _read_ours(AZURE_TRACE, times)),
        timed(lambda: _read_csv(AZURE_TRACE, times)),
        reps,
    )
    return Figure(
        name,
        ours,
        base,
        "s",
        "ratio<=",
        2.0,
        reps,
        note=f"{rows * times:,} rows per repetition "
        f"({rows / (ours / times):,.0f} rows/s converted)",
    )


def sweep_scaling(size: Size) -> Figure:
    duration, reps = ("10s", 1) if size == "smoke" else ("5m", 5)
    grid = {"workload.rate": ["10/s", "15/s", "20/s", "25/s"],
            "gateway.policy": ["omnillm-0.1.5", "safe"]}
    cpu: dict[str, list[float]] = {"one": [], "two": []}

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep-bench.toml"
        path.write_text(SWEEP_SCENARIO.format(duration=duration), encoding="utf-8")

        def two() -> float:
            before, start = children_cpu(), time.perf_counter()
            sweep(path, grid, [1], workers=2, check=False)
            elapsed = time.perf_counter() - start
            cpu["two"].append(children_cpu() - before)
            return elapsed

        def one() -> float:
            before, start = time.process_time(), time.perf_counter()
            sweep(path, grid, [1], workers=1, check=False)
            elapsed = time.perf_counter() - start
            cpu["one"].append(time.process_time() - before)
            return elapsed

        t_two, t_one = side_by_side(two, one, reps)
    load = os.getloadavg()[0]
    cpu_one, cpu_two = statistics.median(cpu["one"]), statistics.median(cpu["two"])
    return Figure(
        "sweep: 8 points, 2 processes vs 1 (speedup)",
        t_one / t_two,
        1.0,
        "x",
        "ratio>=",
        1.7,
        reps,
        note=f"median wall 1 process {t_one:.2f} s, 2 processes {t_two:.2f} s (pool start "
        f"included); CPU work 1 process {cpu_one:.2f} s, 2 processes {cpu_two:.2f} s in all "
        f"(so {2 * cpu_one / cpu_two:.2f}x with two free cores); load average {load:.2f} at "
        f"the end; {duration} of Poisson traffic per point",
        extra={"one_process_s": t_one, "two_processes_s": t_two, "cpu_one_s": cpu_one,
               "cpu_two_s": cpu_two},
    )


BENCHMARKS = [trace_ingest, sweep_scaling]


if __name__ == "__main__":  # pragma: no cover - manual use
    start = time.perf_counter()
    for bench in BENCHMARKS:
        print(bench("full"))
    print(f"{time.perf_counter() - start:.1f} s")
