"""The simulator's invariant checker fed broken states from the outside: a budget whose figures
are set by the test, and key statuses at and past their limits (issue 13)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from omnillm_sim.budget import BudgetStats
from omnillm_sim.errors import InvariantViolation
from omnillm_sim.sim.checker import InvariantChecker


class FixedBudget:
    """A stand-in budget that reports whatever figures the test sets (a broken tracker)."""

    def __init__(self, *, used: int, limit: int, spent: int = 0, open_count: int = 0,
                 underestimated: int = 0) -> None:  # fmt: skip
        self.figures = {"used": used, "limit": limit, "spent": spent, "open_count": open_count,
                        "underestimated": underestimated}  # fmt: skip

    @property
    def used(self) -> int:
        return self.figures["used"]

    @property
    def limit(self) -> int:
        return self.figures["limit"]

    def stats(self) -> BudgetStats:
        f = self.figures
        return BudgetStats(
            limit=f["limit"], used=f["used"], spent=f["spent"],
            open_reserved=f["used"] - f["spent"], open_count=f["open_count"],
            peak_used=f["used"], overshoot=max(f["used"] - f["limit"], 0), admitted=0,
            rejected=0, settled=0, released=0, underestimated=f["underestimated"],
        )  # fmt: skip


def checker_for(budget: FixedBudget, limits: dict[str, tuple[int, int]] | None = None) -> Any:
    return InvariantChecker(budget, limits or {})  # type: ignore[arg-type]


def test_a_consistent_state_passes_at_the_limit() -> None:
    budget = FixedBudget(used=100, limit=100, spent=60, open_count=1)
    checker = checker_for(budget)
    checker.admitted(1, 40)
    checker.admitted(2, 0)
    checker.settled(2, 60)  # 60 over its estimate of 0
    checker.check(1, 1.0)
    assert checker.findings == []  # used == limit is no overshoot


def test_i1_names_both_sides() -> None:
    checker = checker_for(FixedBudget(used=41, limit=100))
    checker.admitted(1, 40)
    with pytest.raises(InvariantViolation) as info:
        checker.check(3, 0.5)
    assert info.value.invariant == "I1"
    assert info.value.detail.startswith("event #3 at t=0.500000s: used 41 != charged + open 40 (")


def test_i2_over_the_limit_with_no_underestimate() -> None:
    checker = checker_for(FixedBudget(used=101, limit=100, spent=101))
    checker.admitted(1, 101)
    checker.settled(1, 101)  # exactly its estimate: no underestimate
    with pytest.raises(InvariantViolation) as info:
        checker.check(4, 2.0)
    assert info.value.invariant == "I2"
    assert "used above limit although no actual cost exceeded its estimate" in info.value.detail


def test_i3_over_the_limit_by_more_than_the_underestimates() -> None:
    budget = FixedBudget(used=131, limit=100, spent=131, underestimated=30)
    checker = checker_for(budget)
    checker.admitted(1, 101)
    checker.settled(1, 131)  # 30 over its estimate
    with pytest.raises(InvariantViolation) as info:
        checker.check(5, 3.0)
    assert info.value.invariant == "I3"
    assert "used above limit + underestimated" in info.value.detail
    # Exactly limit + underestimated is allowed, and recorded once as a finding.
    budget.figures["used"] = budget.figures["spent"] = 130
    checker2 = checker_for(budget)
    checker2.admitted(1, 100)
    checker2.settled(1, 130)
    checker2.check(6, 3.0)
    checker2.check(7, 4.0)
    assert len(checker2.findings) == 1
    assert checker2.findings[0].startswith("budget overshoot from event #6 at t=3.000s")


def test_i4_at_the_end_sees_what_the_budget_still_holds() -> None:
    budget = FixedBudget(used=0, limit=100, open_count=1)  # the checker saw nothing open
    checker = checker_for(budget)
    with pytest.raises(InvariantViolation) as info:
        checker.at_end(9, 9.0)
    assert info.value.invariant == "I4"
    assert "0 admissions never ended; the budget still has 1 open reservations" in str(info.value)
    checker_for(FixedBudget(used=0, limit=100)).at_end(9, 9.0)  # quiescent: passes


def test_i5_needs_no_estimate_to_be_spurious() -> None:
    checker = checker_for(FixedBudget(used=0, limit=100))
    checker.refused(1, None)
    with pytest.raises(InvariantViolation) as info:
        checker.check(1, 1.0)
    assert info.value.invariant == "I5"
    ok = checker_for(FixedBudget(used=50, limit=100))
    ok.admitted(1, 50)
    ok.refused(2, 51)  # 50 + 51 > 100: a fair refusal
    ok.check(1, 1.0)
    edge = checker_for(FixedBudget(used=50, limit=100))
    edge.admitted(1, 50)
    edge.refused(2, 50)  # 50 + 50 fits exactly: refusing it is spurious
    with pytest.raises(InvariantViolation, match="I5"):
        edge.check(1, 1.0)


def _status(label: str, inflight: int, rpm_used: int) -> SimpleNamespace:
    return SimpleNamespace(label=label, inflight_tokens=inflight, rpm_used=rpm_used)


@pytest.mark.parametrize(
    ("inflight", "rpm_used", "invariant"),
    [(100, 10, None), (0, 0, None), (101, 0, "K1"), (-1, 0, "K1"), (50, 11, "K2")],
)
def test_key_statuses_passed_to_check_are_checked(
    inflight: int, rpm_used: int, invariant: str | None
) -> None:
    checker = checker_for(FixedBudget(used=0, limit=100), {"a": (10, 100), "b": (10, 100)})
    statuses = [_status("a", 1, 1), _status("b", inflight, rpm_used)]
    if invariant is None:
        checker.check(1, 0.0, statuses)
        return
    with pytest.raises(InvariantViolation) as info:
        checker.check(1, 0.0, statuses)
    assert info.value.invariant == invariant and "key b" in info.value.detail


def _key(label: str, inflight: int, rpm_used: int) -> SimpleNamespace:
    status = _status(label, inflight, rpm_used)
    return SimpleNamespace(
        label=label,
        cap=SimpleNamespace(inflight=inflight),
        rpm=SimpleNamespace(count=lambda now: rpm_used),
        status=lambda now: status,
    )


def test_keys_exactly_at_their_limits_pass_after_a_gateway_call() -> None:
    budget = FixedBudget(used=0, limit=100)
    keys = [_key("a", 100, 10), _key("b", 0, 0)]
    checker = InvariantChecker(budget, {"a": (10, 100), "b": (10, 100)}, keys)  # type: ignore[arg-type]
    checker.touched(None)
    checker.check(1, 0.0)
    keys.append(_key("c", 0, 3))
    over = InvariantChecker(budget, {"a": (10, 100), "b": (10, 100), "c": (2, 5)}, keys)  # type: ignore[arg-type]
    over.check(1, 0.0)  # not touched: keys are not read
    over.touched(2)  # about key c: the checker reads the keys a gateway call touched
    with pytest.raises(InvariantViolation) as info:
        over.check(2, 0.0)
    assert info.value.invariant == "K2" and "key c admitted 3 requests in 60 s (rpm 2)" in str(
        info.value
    )
