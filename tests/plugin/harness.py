"""A budget session for tests that drive the interception layer directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Harness:
    """A `BudgetSession` pushed as the innermost interception handler for one test.

    Requests made while it is active are budgeted by it alone (the outer run's plugin does not
    see them). ``test`` is the current test budget; ``records`` its request records.
    """

    def __init__(self, prices_path: Path) -> None:
        from omnillm_sim import catalogue
        from pytest_omnillm.session import BudgetSession, UnlimitedTracker

        self.prices = catalogue("current", overrides=prices_path)
        self.session_tracker = UnlimitedTracker()
        self.session = BudgetSession(
            prices=self.prices,
            default_max_output=4096,
            session_budget=self.session_tracker,
            session_source="test harness",
            enforce=True,
        )
        self.test = None

    def begin(self, limit_usd: str | None = None, session_limit_usd: str | None = None) -> None:
        from omnillm_sim import BudgetTracker, usd_to_micro
        from pytest_omnillm.settings import Budget

        if session_limit_usd is not None:
            self.session_tracker = BudgetTracker(session_limit_usd)
            self.session.session_budget = self.session_tracker
        micros = None if limit_usd is None else usd_to_micro(limit_usd)
        self.test = self.session.begin_test("harness::test", Budget(micros, "harness"))

    @property
    def records(self) -> list[Any]:
        assert self.test is not None
        return self.test.requests

    def end(self) -> list[str]:
        assert self.test is not None
        self.session.end_test(self.test)
        return list(self.test.problems)
