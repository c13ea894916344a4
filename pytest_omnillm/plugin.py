"""pytest hooks of the omnillm budget plugin.

Registered through the ``pytest11`` entry point ``omnillm``; disable with ``-p no:omnillm``.
Module-level hooks add the options and register one `LLMBudgetPlugin` per run; every stateful
hook is a method of that object. The logic lives in ``settings``, ``intercept``, ``adapters``,
``session`` and ``report``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from omnillm_sim.errors import ConfigError, OmniLLMError
from pytest_omnillm import intercept
from pytest_omnillm.settings import (
    MARKER,
    Budget,
    Settings,
    add_options,
    budget_of_marker,
    closest_marker,
    resolve,
)

if TYPE_CHECKING:
    from omnillm_sim.budget import BudgetTracker
    from pytest_omnillm.intercept import Flight, RequestInfo
    from pytest_omnillm.session import BudgetSession, SessionBudget, TestBudget

# Hook httpx/httpx2 imports now, while pytest loads plugins and before any conftest imports a
# library (vcrpy 7) that saves ``_send_single_request`` at import: it then saves our wrapper.
# The budget machinery (session, pricing, trackers, report) is imported when first needed:
# most test runs make no LLM call, and every pytest run loads this module.
intercept.install()

__all__ = ["LLMBudgetPlugin", "llm_budget"]

PLUGIN_NAME = "omnillm-budget"
STATUS_NAME = "omnillm-budget-status"
COLLECTOR_NAME = "omnillm-budget-collector"
PLUGIN_KEY = pytest.StashKey["LLMBudgetPlugin"]()
TEST_KEY = pytest.StashKey["TestBudget"]()
_LEDGER_INPUT = "omnillm_ledger"
_OUTSIDE_OUTPUT = "omnillm_outside"
_REPORT_ATTR = "omnillm_test"
_FAILED_ATTR = "omnillm_failed"

MARKERS = {
    "llm_budget": 'llm_budget(usd): hard LLM budget in USD for this test, e.g. "0.05"; '
    "llm_budget(None) lifts the per-test limit (pytest-omnillm)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for text in MARKERS.values():
        config.addinivalue_line("markers", text)
    try:
        settings = resolve(config)
        plugin = LLMBudgetPlugin(config, settings)
    except OmniLLMError as exc:
        raise pytest.UsageError(f"pytest-omnillm: {exc}") from None
    config.stash[PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    if plugin.controller:
        # Test reports reach the xdist controller from the workers: collect their records,
        # and show a budget failure's own status.
        config.pluginmanager.register(_Collector(plugin), COLLECTOR_NAME)
        config.pluginmanager.register(_BudgetStatus(), STATUS_NAME)


@pytest.fixture
def llm_budget(request: pytest.FixtureRequest) -> BudgetTracker:
    """The test's LLM budget: the same `BudgetTracker` the plugin charges intercepted calls to.

    Use it directly for LLM calls the plugin cannot see (other clients)::

        with llm_budget.reserve(20_000) as r:   # micro-dollars
            r.settle(cost)
    """
    plugin = request.config.stash.get(PLUGIN_KEY, None)
    test = plugin.test_of(request.node) if plugin is not None else None
    if test is None:
        raise pytest.UsageError("llm_budget is only available inside a test")
    return test.tracker


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _is_xdist_controller(config: pytest.Config) -> bool:
    # pytest-xdist's pytest_cmdline_main (run before pytest_configure) sets dist for -n N.
    return not _is_worker(config) and getattr(config.option, "dist", "no") not in ("no", None)


class LLMBudgetPlugin:
    """The plugin's state for one run: settings, the budget session, collected records.

    It is the interception handler. The budget session (and the price table, trackers and
    their modules) is built at the first intercepted request or ``llm_budget`` fixture, or at
    once when a price file, a fallback model or a shared xdist ledger needs checking or
    opening. A test's `TestBudget` is likewise made only when the test first needs one: a
    test that never did is recorded as having spent nothing, which is what its tracker says.
    """

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.ledger: Any = None
        self._ledger_dir: str | None = None
        self._session: BudgetSession | None = None
        self._lock = threading.Lock()
        self._item: pytest.Item | None = None  # the test running now
        self._budget: Budget = settings.budget  # ... and its budget
        self._test: TestBudget | None = None  # ... and its TestBudget, once made
        # Each test's record in the order the tests ended; a str is the node id of a test that
        # made no LLM call under the run's budget (most tests): its record is made when needed.
        self._records: list[dict[str, Any] | str] = []
        self.outside: list[dict[str, Any]] = []
        self.interception_notes: list[str] = []
        self.ledger_kept = False
        self._status_hook = False  # _BudgetStatus registered (at the first budget failure)
        # An xdist controller with workers runs no test: its records come with the workers'
        # reports. (``--dist`` without workers, say from addopts, runs the tests here.)
        self.controller = _is_xdist_controller(config) and bool(getattr(config.option, "tx", None))
        self.worker = _is_worker(config)
        worker_input = getattr(config, "workerinput", {})
        shared = _LEDGER_INPUT in worker_input or (
            settings.session_budget.micros is not None and _is_xdist_controller(config)
        )
        priced = settings.prices is not None or settings.fallback_model is not None
        if shared or priced or settings.model_map:
            # fail now on a bad price file or a model map naming an unpriced model; share the
            # ledger from the start
            self._make_session()
        intercept.push_handler(self)

    @property
    def tests(self) -> list[dict[str, Any]]:
        """Every finished test's record (a dict, as in the JSON report), in order."""
        return list(self._test_records())

    def _test_records(self) -> Any:
        from pytest_omnillm.report import TestRecords

        budget = self.settings.budget
        return TestRecords(self._records, lambda nodeid: _unused_record(nodeid, budget))

    @property
    def session(self) -> BudgetSession:
        """The run's `BudgetSession` (built on first use)."""
        session = self._session
        if session is None:
            with self._lock:
                session = self._session or self._make_session()
        return session

    def _make_session(self) -> BudgetSession:
        from omnillm_sim.budget import BudgetTracker
        from omnillm_sim.pricing import catalogue
        from pytest_omnillm.session import BudgetSession, UnlimitedTracker

        settings = self.settings
        prices = catalogue("current", overrides=settings.prices, fallback=settings.fallback_model)
        session_budget: SessionBudget
        worker_input = getattr(self.config, "workerinput", {})
        limit = settings.session_budget.micros
        if _LEDGER_INPUT in worker_input:
            from omnillm_sim.ledger import Ledger

            self.ledger = Ledger(
                worker_input[_LEDGER_INPUT],
                limit=limit,
                owner=f"{worker_input.get('workerid', 'worker')}:pid:{os.getpid()}",
                name="session LLM budget",
            )
            session_budget = self.ledger
        elif limit is not None and _is_xdist_controller(self.config):
            # The controller's own calls (session fixtures, hooks) share the workers' ledger.
            self.ledger = self._create_ledger(limit)
            session_budget = self.ledger
        elif limit is not None:
            session_budget = BudgetTracker.from_micros(limit, name="session LLM budget")
        else:
            session_budget = UnlimitedTracker(name="session LLM budget")
        self._session = BudgetSession(
            prices=prices,
            default_max_output=settings.default_max_output,
            session_budget=session_budget,
            session_source=settings.session_budget.source,
            enforce=settings.budget.micros is not None or limit is not None,
            worker=worker_input.get("workerid", ""),
            count_replays=settings.budget_replays,
            model_map=settings.model_map,
        )
        return self._session

    def _create_ledger(self, limit: int) -> Any:
        from omnillm_sim.ledger import Ledger

        self._ledger_dir = tempfile.mkdtemp(prefix="pytest-omnillm-")
        path = os.path.join(self._ledger_dir, "session-ledger.sqlite")
        return Ledger(path, limit=limit, owner="controller", name="session LLM budget")

    def test_of(self, item: pytest.Item) -> TestBudget | None:
        """The `TestBudget` of ``item`` if it is the running test (made now if need be)."""
        if item is not self._item:
            return None
        test = self._test
        if test is None:
            session = self.session
            with self._lock:
                test = self._test
                if test is None and item is self._item:
                    test = self._test = session.begin_test(item.nodeid, self._budget)
                    item.stash[TEST_KEY] = test
        return test

    def start(self, info: RequestInfo) -> Flight | None:
        """The interception handler: charge the request to the running test (or outside)."""
        __tracebackhide__ = True
        session = self.session
        item = self._item
        if item is not None:
            self.test_of(item)  # makes it the session's current test
        return session.start(info)

    # -- configuration -----------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: share one SQLite ledger with every worker for the session budget."""
        limit = self.settings.session_budget.micros
        if limit is None:
            return
        if self.ledger is None:
            self.ledger = self._create_ledger(limit)
            self.session.session_budget = self.ledger
        node.workerinput[_LEDGER_INPUT] = self.ledger.path

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: collect requests a worker made outside any test."""
        self.outside.extend(getattr(node, "workeroutput", {}).get(_OUTSIDE_OUTPUT, []))

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Validate every ``llm_budget`` marker now, so a bad value fails before any test."""
        errors = []
        default = self.settings.budget
        above: dict[Any, pytest.Mark | None] = {}  # closest marker of each parent node
        for item in items:
            marker = closest_marker(item, MARKER, above)
            budget = default
            if marker is not None:
                try:
                    budget = budget_of_marker(item, marker)
                except ConfigError as exc:
                    errors.append(str(exc))
            item.stash[_BUDGET_KEY] = budget
        if errors:
            raise pytest.UsageError("pytest-omnillm: " + "\n".join(errors))

    # -- running tests -------------------------------------------------------------------------
    #
    # Most tests make no LLM call, and every hook implementation costs each test a call
    # through pluggy: a test runs two of ours, `pytest_runtest_protocol` (once) and
    # `pytest_runtest_makereport` (per phase). The interception is verified before the setup
    # and after it; the per-test record is made at the teardown report (and kept there, except
    # on the xdist controller, which collects it from the workers' reports); a budget
    # failure's own status ("B", "LLM BUDGET") is a hook registered at the first such failure.

    def _verify_interception(self) -> None:
        try:
            notes = intercept.verify()
        except RuntimeError as exc:
            pytest.exit(str(exc), returncode=pytest.ExitCode.INTERNAL_ERROR)
        for note in notes:
            if note not in self.interception_notes:
                self.interception_notes.append(note)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        budget = item.stash.get(_BUDGET_KEY, None) or self.settings.for_test(item).budget
        self._test = None
        self._budget = budget
        self._item = item
        # Before the test's setup: a library may have replaced our wrapper since the last test.
        self._verify_interception()
        try:
            return (yield)
        finally:
            self._item = self._test = None
            if self._session is not None:
                self._session.current = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if item is not self._item:
            return report
        if call.when == "setup":
            # Before the test's call: fixtures (a cassette, a mock router) may have replaced
            # our wrapper during setup. (Here rather than in pytest_runtest_call: one hook call
            # less for every test.)
            self._verify_interception()
        test = self._test
        if test is None:  # nothing reserved, nothing to check
            if call.when == "teardown":
                if self.worker or self.controller or self._budget is not self.settings.budget:
                    self._record(report, _unused_record(item.nodeid, self._budget))
                else:
                    self._records.append(item.nodeid)  # no record object kept per test
            return report
        from pytest_omnillm.session import check_test

        if call.when == "teardown":
            self.session.end_test(test)
            self._record(report, _test_record(test))
        else:
            test.add_problems(check_test(test, final=False))
        problems = test.unreported()
        if problems:
            text = "\n".join(problems)
            setattr(report, _FAILED_ATTR, True)
            if not self._status_hook:
                self._status_hook = True
                pluginmanager = self.config.pluginmanager
                if pluginmanager.get_plugin(STATUS_NAME) is None:
                    pluginmanager.register(_BudgetStatus(), STATUS_NAME)
            if report.passed:
                report.outcome = "failed"
                report.longrepr = text
            else:
                report.sections.append(("LLM budget", text))
        return report

    def _record(self, report: pytest.TestReport, record: dict[str, Any]) -> None:
        """Keep the test's record; in an xdist worker, attach it to the teardown report, which
        carries it to the controller (a controller that runs a test itself collects it from
        its report the same way)."""
        if self.worker or self.controller:
            setattr(report, _REPORT_ATTR, record)
        else:
            self._records.append(record)

    # -- reporting -----------------------------------------------------------------------------

    def _summary(self) -> Any:
        ledger = entries = None
        if self.ledger is not None:
            stats = self.ledger.stats()
            ledger = dataclasses.asdict(stats)
            entries = [dataclasses.asdict(e) for e in self.ledger.entries()]
            # Open reservations at the end belong to dead processes: keep the file for reclaim.
            self.ledger_kept = stats.open_count > 0
        from pytest_omnillm.report import summarise

        session = self._session
        outside = self.outside + [r.as_dict() for r in session.outside] if session else self.outside
        return summarise(
            self._test_records(),
            outside,
            session_limit=self.settings.session_budget.micros,
            session_source=self.settings.session_budget.source,
            ledger=ledger,
            ledger_entries=entries,
            test_limit=self.settings.budget.micros,
            test_source=self.settings.budget.source,
            ledger_path=self.ledger.path if self.ledger_kept else None,
            notes=self.interception_notes,
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.worker:
            workeroutput = getattr(self.config, "workeroutput", {})
            outside = self._session.outside if self._session is not None else []
            workeroutput[_OUTSIDE_OUTPUT] = [r.as_dict() for r in outside]
            return
        path = self.settings.report
        if path is not None:
            from pytest_omnillm.report import write_json

            write_json(self._summary(), path)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker:
            return
        from pytest_omnillm.report import ledger_kept_lines, render

        summary = self._summary()
        if self.settings.summary == 0:
            for line in ledger_kept_lines(summary):  # never hide a ledger to reclaim
                terminalreporter.write_line(line)
            return
        quiet = not summary.requests and not summary.notes
        if quiet and not any(t["limit"] is not None for t in summary.tests):
            return
        terminalreporter.write_sep("=", "LLM budget")
        for line in render(summary, self.settings.summary):
            terminalreporter.write_line(line)
        if self.settings.report is not None:
            terminalreporter.write_line(f"JSON report: {self.settings.report}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        intercept.pop_handler(self)
        if self.ledger is not None:
            self.ledger.close()
        if self._ledger_dir is not None and not self.ledger_kept:
            shutil.rmtree(self._ledger_dir, ignore_errors=True)


_BUDGET_KEY = pytest.StashKey[Budget]()


class _BudgetStatus:
    """The status of a report failed by its LLM budget: "B" / "LLM BUDGET" (red)."""

    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        if getattr(report, _FAILED_ATTR, False) and report.failed:
            category = "failed" if report.when == "call" else "error"
            return category, "B", ("LLM BUDGET", {"red": True})
        return None


class _Collector:
    """xdist controller: keeps the per-test records the workers' teardown reports carry."""

    def __init__(self, plugin: LLMBudgetPlugin) -> None:
        self._plugin = plugin

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, _REPORT_ATTR, None)
        if record is not None:
            self._plugin._records.append(record)


def _test_record(test: TestBudget) -> dict[str, Any]:
    stats = test.tracker.stats()
    return {
        "nodeid": test.nodeid,
        "limit": test.budget.micros,
        "limit_source": test.budget.source,
        "spent": stats.spent,
        "used": stats.used,
        "overshoot": stats.overshoot,
        "requests": [r.as_dict() for r in test.requests],
        "problems": list(test.problems),
    }


def _unused_record(nodeid: str, budget: Budget) -> dict[str, Any]:
    # What `_test_record` gives for a test whose tracker was never used.
    return {
        "nodeid": nodeid,
        "limit": budget.micros,
        "limit_source": budget.source,
        "spent": 0,
        "used": 0,
        "overshoot": 0,
        "requests": [],
        "problems": [],
    }
