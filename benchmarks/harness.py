"""Measuring side by side: every figure is a ratio against a baseline run in the same process.

The machines are shared and noisy, so absolute times drift; a ratio of medians measured in
interleaved repetitions (ours, baseline, ours, baseline, ...) does not.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

Size = Literal["smoke", "full"]
Direction = Literal["ratio<=", "ratio>=", "value<="]


@dataclass(frozen=True)
class Figure:
    """One row of the benchmark table.

    ``ours`` and ``baseline`` are medians in ``unit``; ``ratio`` is ours / baseline. The target
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


def side_by_side(
    ours: Callable[[], float], baseline: Callable[[], float], reps: int
) -> tuple[float, float]:
    """Median of ``reps`` interleaved runs of each; each callable returns its own measurement."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(reps):
        a.append(ours())
        b.append(baseline())
    return statistics.median(a), statistics.median(b)


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """Wrap ``fn`` so that calling it returns its wall time in seconds."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
