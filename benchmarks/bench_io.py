"""Trace ingest against csv.reader, and sweep scaling on local processes.

Ingest: a trace in the Azure format (``TIMESTAMP,ContextTokens,GeneratedTokens``, timestamps
like ``2023-11-16 18:15:46.6805900``) of 19,366 rows, the size of the Azure conversation
trace, generated deterministically into a temporary folder at bench time (`azure_like_trace`),
so the figure exists on every machine and is the same file everywhere. It is read 50 times
(968,300 rows) by ``read_trace(path, "azure")`` (every row converted and checked: timestamp,
order, token counts, a `TraceRow`) against `csv.reader` over the same file, no conversion.

Sweep: 8 grid points of a scenario, ``sweep(..., workers=2)`` (a process pool) against
``workers=1`` (in this process), both with the checker off. The target figure is the CPU-time
parallel efficiency: CPU seconds of the 8 points run in this process divided by the CPU
seconds the 2-process run spent in all (this process, which starts the pool and unpickles
results, plus the workers). It is 1.0 when splitting the work costs nothing and does not
depend on how many cores other jobs leave free. The wall-clock speedup (1-process wall time /
2-process wall time) is printed beside it: its ceiling is the number of free cores.
"""

from __future__ import annotations

import csv
import random
import resource
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from benchmarks.harness import Figure, Size, load_average, side_by_side, timed
from omnillm_sim.sim.sweep import sweep
from omnillm_sim.sim.traces import read_trace

AZURE_ROWS = 19_366  # rows of AzureLLMInferenceTrace_conv.csv

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


def azure_like_trace(path: Path, rows: int = AZURE_ROWS, seed: int = 2023) -> Path:
    """Write an Azure-format trace of ``rows`` requests (deterministic for a seed).

    Poisson arrivals at the conversation trace's mean rate (about 5.6/s) from 2023-11-16
    18:15:46, written with the trace's 7 fractional digits; log-normal prompt and output
    token counts around its medians (1,020 and 129).
    """
    rng = random.Random(seed)
    start = datetime(2023, 11, 16, 18, 15, 46, 680590)
    ticks = 0  # 100 ns units, as the trace's timestamps have
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for _ in range(rows):
            ticks += round(rng.expovariate(5.6) * 10_000_000)
            when = start + timedelta(microseconds=ticks // 10)
            prompt = max(2, min(14_050, round(rng.lognormvariate(6.93, 1.0))))
            output = max(1, min(2_000, round(rng.lognormvariate(4.86, 0.9))))
            fh.write(f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond:06d}{ticks % 10},"
                     f"{prompt},{output}\n")
    return path


def trace_ingest(size: Size) -> Figure:
    name = "trace ingest: Azure format x50 vs csv.reader"
    times, reps = (1, 3) if size == "smoke" else (50, 5)
    with tempfile.TemporaryDirectory() as tmp:
        trace = azure_like_trace(Path(tmp) / "azure-like.csv")
        rows = _read_ours(trace, 1)
        pair = side_by_side(
            timed(lambda: _read_ours(trace, times)),
            timed(lambda: _read_csv(trace, times)),
            reps,
        )
    ours = pair.ours
    return Figure(
        name,
        ours,
        pair.baseline,
        "s",
        "ratio<=",
        2.0,
        reps,
        note=f"{rows * times:,} rows per repetition ({rows / (ours / times):,.0f} rows/s "
        f"converted); a generated {rows:,}-row trace in the Azure format (azure_like_trace)",
        spread=pair.spread,
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
            before, start = children_cpu() + time.process_time(), time.perf_counter()
            sweep(path, grid, [1], workers=2, check=False)
            elapsed = time.perf_counter() - start
            cpu["two"].append(children_cpu() + time.process_time() - before)
            return elapsed

        def one() -> float:
            before, start = time.process_time(), time.perf_counter()
            sweep(path, grid, [1], workers=1, check=False)
            elapsed = time.perf_counter() - start
            cpu["one"].append(time.process_time() - before)
            return elapsed

        pair = side_by_side(two, one, reps)
    load = load_average()
    # Per repetition: CPU of the 8 points in one process / CPU of the 2-process run in all.
    efficiency = [a / b for a, b in zip(cpu["one"], cpu["two"], strict=True)]
    cpu_one, cpu_two = statistics.median(cpu["one"]), statistics.median(cpu["two"])
    t_two, t_one = pair.ours, pair.baseline
    speedups = [b / a for a, b in zip(pair.ours_runs, pair.baseline_runs, strict=True)]
    return Figure(
        "sweep: 8 points, 2 processes: CPU-time efficiency",
        statistics.median(efficiency),
        1.0,
        "x",
        "ratio>=",
        0.85,
        reps,
        note=f"CPU: 1 process {cpu_one:.2f} s, 2 processes {cpu_two:.2f} s in all (pool start,"
        f" pickling, both workers); wall speedup {t_one / t_two:.2f}x (spread "
        f"{min(speedups):.2f}-{max(speedups):.2f}; 1 process {t_one:.2f} s, 2 processes "
        f"{t_two:.2f} s; its ceiling is the free cores); load average {load:.2f} at the end; "
        f"{duration} of Poisson traffic per point",
        extra={"one_process_s": t_one, "two_processes_s": t_two, "cpu_one_s": cpu_one,
               "cpu_two_s": cpu_two, "wall_speedup": t_one / t_two},
        spread=(min(efficiency), max(efficiency)),
    )


BENCHMARKS = [trace_ingest, sweep_scaling]


if __name__ == "__main__":  # pragma: no cover - manual use
    start = time.perf_counter()
    for bench in BENCHMARKS:
        print(bench("full"))
    print(f"{time.perf_counter() - start:.1f} s")
