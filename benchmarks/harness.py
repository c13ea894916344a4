"""Measuring side by side: every figure is a ratio against a baseline run in the same process.

The machines are shared and noisy, so absolute times drift; a ratio of medians measured in
interleaved repetitions (ours, baseline, ours, baseline, ...) does not.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Size = Literal["smoke", "full"]
Direction = Literal["ratio<=", "ratio>=", "value<="]


@dataclass(frozen=True)
class Figure:
    """One row of the benchmark table.

    ``ours`` and ``baseline`` are medians in ``unit``; ``ratio`` is ours / baseline, and
    ``spread`` the lowest and highest ratio of one repetition's pair (ours_i / baseline_i), so
    the noise of the machine shows beside the median. The target
    reads ``ratio <= 1.5`` (ours may take at most 1.5x the baseline's time), ``ratio >= 0.35``
    (ours must reach 35% of the baseline's throughput) or ``value <= 300`` (an absolute bound,
    e.g. peak RSS in MB).
    """

    name: str
    ours: float
    baseline: float | None
    unit: str
    direction: Direction
    target: float
    reps: int
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # not measured (e.g. its data is absent); ``note`` says why
    spread: tuple[float, float] | None = None  # (min, max) ratio over the repetitions

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline

    @property
    def passed(self) -> bool:
        if self.skipped:
            return False
        if self.direction == "value<=":
            return self.ours <= self.target
        ratio = self.ratio
        if ratio is None:
            return False
        return ratio <= self.target if self.direction == "ratio<=" else ratio >= self.target

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["passed"] = self.passed
        return data


@dataclass(frozen=True)
class Paired:
    """Interleaved measurements of ours and the baseline; unpacks as ``(ours, baseline)``."""

    ours_runs: tuple[float, ...]
    baseline_runs: tuple[float, ...]

    @property
    def ours(self) -> float:
        return statistics.median(self.ours_runs)

    @property
    def baseline(self) -> float:
        return statistics.median(self.baseline_runs)

    @property
    def spread(self) -> tuple[float, float] | None:
        """(min, max) of the per-repetition ratios ours_i / baseline_i."""
        ratios = [a / b for a, b in zip(self.ours_runs, self.baseline_runs, strict=True) if b]
        return (min(ratios), max(ratios)) if ratios else None

    def __iter__(self) -> Iterator[float]:
        return iter((self.ours, self.baseline))


def side_by_side(ours: Callable[[], float], baseline: Callable[[], float], reps: int) -> Paired:
    """``reps`` interleaved runs of each; each callable returns its own measurement."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(reps):
        a.append(ours())
        b.append(baseline())
    return Paired(tuple(a), tuple(b))


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """Wrap ``fn`` so that calling it returns its wall time in seconds."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


@dataclass(frozen=True)
class ChildRun:
    """One command run in a child process: its output, wall and CPU time, and peak RSS."""

    stdout: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


def run_child(argv: Sequence[str], *, cwd: Path | None = None) -> ChildRun:
    """Run ``argv`` to completion and measure the whole command from outside.

    The peak RSS is the child's ``ru_maxrss`` as the kernel reports it when the child has
    exited, so it covers everything the command did (start-up, the run, the metrics, the
    output). A small intermediate process (``python -m benchmarks.harness``) starts it: Linux
    carries the parent's high-water mark into a forked child across ``exec``, so measuring
    from this (large) process would report our own RSS instead of a small command's.

    Raises:
        subprocess.CalledProcessError: the command failed (its stderr is attached).
    """
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    data = json.loads(proc.stdout)
    return ChildRun(data["stdout"], data["seconds"], data["cpu_seconds"], data["peak_rss_mb"])


def _measure_main(argv: Sequence[str]) -> int:
    """The intermediate process of `run_child`: run ``argv``, print its figures as JSON."""
    start = time.perf_counter()
    child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate()
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # its only child: the command
    print(
        json.dumps(
            {
                "stdout": out,
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
            }
        )
    )
    return child.returncode


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux
        return 0.0


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }


if __name__ == "__main__":
    raise SystemExit(_measure_main(sys.argv[1:]))
