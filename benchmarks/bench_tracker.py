"""Tracker hot paths against a minimal locked tracker doing the same integer updates."""

from __future__ import annotations

import threading

from benchmarks.harness import Figure, Size, side_by_side, timed
from omnillm_sim.budget import BudgetTracker


class LockedBaseline:
    """The least a thread-safe tracker can do: one lock, the same integer updates."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()

    def try_reserve(self, est: int) -> bool:
        with self.lock:
            if self.used + est > self.limit:
                return False
            self.used += est
            return True

    def settle(self, est: int, actual: int) -> None:
        with self.lock:
            self.used += actual - est


def _seed_pair(tracker: BudgetTracker | LockedBaseline, n: int) -> None:
    reserve, settle = tracker.try_reserve, tracker.settle
    for _ in range(n):
        if reserve(1_000):
            settle(1_000, 500)


def _handle_pair(tracker: BudgetTracker, n: int) -> None:
    reserve = tracker.reserve
    for _ in range(n):
        reserve(1_000).settle(500)


def seed_pair(size: Size) -> Figure:
    n, reps = (2_000, 3) if size == "smoke" else (200_000, 7)
    pair = side_by_side(
        timed(lambda: _seed_pair(BudgetTracker.unlimited(), n)),
        timed(lambda: _seed_pair(LockedBaseline(2**64), n)),
        reps,
    )
    return Figure(
        "tracker try_reserve+settle (1 thread)",
        pair.ours,
        pair.baseline,
        "s",
        "ratio<=",
        1.5,
        reps,
        note=f"{n:,} pairs per repetition",
        spread=pair.spread,
    )


def handle_pair(size: Size) -> Figure:
    n, reps = (2_000, 3) if size == "smoke" else (200_000, 7)
    pair = side_by_side(
        timed(lambda: _handle_pair(BudgetTracker.unlimited(), n)),
        timed(lambda: _seed_pair(LockedBaseline(2**64), n)),
        reps,
    )
    return Figure(
        "tracker reserve+Reservation.settle",
        pair.ours,
        pair.baseline,
        "s",
        "ratio<=",
        2.5,
        reps,
        note=f"{n:,} pairs per repetition",
        spread=pair.spread,
    )


BENCHMARKS = [seed_pair, handle_pair]
