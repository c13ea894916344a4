"""check_tracker: passes on our tracker, fails with a shrunk, reproducible counter-example on a
check-then-act tracker that is correct when called sequentially."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from omnillm_sim import BudgetTracker, InvariantViolation
from pytest_omnillm import check_tracker


class CheckThenAct:
    """omnillm's seed tracker without its compare-and-swap: check, then act, on two lines."""

    def __init__(self, limit_usd: float) -> None:
        self._limit = round(limit_usd * 1_000_000)
        self._used = 0

    def try_reserve(self, est: int) -> bool:
        if self._used + est > self._limit:
            return False
        self._used += est
        return True

    def settle(self, est: int, actual: int) -> None:
        self._used += actual - est

    def used_usd(self) -> float:
        return self._used / 1_000_000

    def limit_usd(self) -> float:
        return self._limit / 1_000_000


class LostUpdateSettle(CheckThenAct):
    """Admission holds a lock (so the stepper must schedule around it); settle reads and
    writes ``used`` without it, so a concurrent admission can be lost."""

    def __init__(self, limit_usd: float) -> None:
        super().__init__(limit_usd)
        self._lock = threading.Lock()

    def try_reserve(self, est: int) -> bool:
        with self._lock:
            if self._used + est > self._limit:
                return False
            self._used += est
            return True

    def settle(self, est: int, actual: int) -> None:
        used = self._used
        self._used = used + actual - est


def test_our_tracker_passes() -> None:
    check_tracker(BudgetTracker)


def test_check_then_act_is_sequentially_correct() -> None:
    # Without concurrency there is nothing to find: the failure below is the race alone.
    t = CheckThenAct(0.000002)
    assert t.try_reserve(2) and not t.try_reserve(1)
    t.settle(2, 1)
    assert t.try_reserve(1) and t.used_usd() == 0.000002


def _failure(factory: type) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as info:
        check_tracker(factory)
    return info.value


def test_check_then_act_fails_with_a_shrunk_interleaving() -> None:
    err = _failure(CheckThenAct)
    assert err.invariant == "I2"
    # Shrunk to the smallest case: limit 1 µ$, two 1 µ$ requests, both checks before an add.
    assert "try_reserve(1) and try_reserve(1) from used=0, limit=1 returned (True, True)" in str(
        err
    )
    notes = "\n".join(getattr(err, "__notes__", []))
    assert "state.create(limit=1)" in notes
    assert "state.concurrent_reserves(a_percent=100, b_percent=100)" in notes
    assert "interleaving T0:start T0:" in str(err)
    # Reproducible: a second run finds the very same counter-example and interleaving.
    again = _failure(CheckThenAct)
    assert str(again) == str(err)
    assert getattr(again, "__notes__", []) == getattr(err, "__notes__", [])


def test_lost_update_in_settle_is_found() -> None:
    err = _failure(LostUpdateSettle)
    assert err.invariant == "I1"
    assert "concurrent settle(" in str(err) and "no sequential order does that" in str(err)


def test_counter_example_does_not_depend_on_what_else_is_imported() -> None:
    # Hypothesis biases generation with constants from imported modules; check_tracker must
    # not: a process that imported the simulator and reports finds the same counter-example.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import omnillm_sim.sim, omnillm_sim.report, omnillm_sim.cli, omnillm_sim.gateway\n"
        "from test_check_tracker import CheckThenAct\n"
        "from pytest_omnillm import check_tracker\n"
        "try:\n    check_tracker(CheckThenAct)\nexcept AssertionError as e:\n    print(e)\n"
    )
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", code, here], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == str(_failure(CheckThenAct))
