"""Budget logic of the plugin: per-test and session budgets, request flights, records, checks.

`BudgetSession` is the interception `Handler`: for every LLM request it estimates the worst
case with the ``upper-bound`` estimator, reserves it on the current test's `BudgetTracker` and
on the session budget (a `BudgetTracker`, or the shared `Ledger` under pytest-xdist), and
either refuses the request (raising `LLMBudgetExceeded`; nothing is sent) or lets it go and
settles both reservations when the response's usage arrives:

* a 2xx response with usage: settled at its real cost (``status="ok"``);
* an error status: released, providers do not bill errors (``"http-error"``);
* a connection that failed before sending: released (``"failed"``);
* anything else that ends without usage (no usage chunk in a stream, a body we cannot parse,
  a read error after sending, still open at teardown): the reservation is kept, i.e. charged
  at its estimate (``"no-usage"`` / ``"unparsed"`` / ``"failed"``).

* a redirect (3xx): released; the next hop is a request of its own (``"redirect"``).

With no budget anywhere, trackers are unlimited (no amount is ever refused) and nothing is
refused; a model missing from the price table is then reported as ``"unpriced"`` (never
silently $0). With any budget in force (options, environment, ini, session budget, or only the
test's ``llm_budget`` marker), such a request is refused (`LLMUnknownModel`) unless a fallback
model prices it.

Free endpoints (Gemini ``countTokens``) are listed with status ``"free"``: never reserved,
never charged, never refused. An Azure OpenAI deployment is priced as the model the model map
(``--llm-model-map``) gives it, else as the fallback model, else it cannot be priced (refused
under a budget, ``"unpriced"`` without one). The model the response says answered is recorded
(``response_model``); when it disagrees with a mapped or fallback model, the record carries a
``warning`` that the terminal summary shows.

A response that came from no network connection (a mock, a cassette replay; see
``intercept``) is recorded with ``replayed=True`` and its would-be cost in ``if_live``; its
reservations are released (it cost nothing) unless ``count_replays`` is set, in which case it is
charged like a live call.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from omnillm_sim.budget import BudgetStats, BudgetTracker, check_budget_invariants
from omnillm_sim.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidValueError,
    InvariantViolation,
    UnknownModelError,
)
from omnillm_sim.estimate import Estimate, Estimator, get_estimator
from omnillm_sim.money import U64_MAX, MicroDollar, format_usd
from omnillm_sim.pricing import PriceTable, Usage
from pytest_omnillm.adapters import UsageParseError, UsageReader, parse_request
from pytest_omnillm.intercept import RequestInfo
from pytest_omnillm.report import redact_text, redact_url
from pytest_omnillm.settings import Budget

__all__ = [
    "BudgetSession",
    "LLMBudgetExceeded",
    "LLMUnknownModel",
    "RequestRecord",
    "TestBudget",
]

OUTSIDE_TESTS = "<outside tests>"
MAX_TRACKED: MicroDollar = 2**63 - 1
"""The largest amount (µ$) one request may reserve or settle: the shared ledger stores amounts
as SQLite integers. A larger estimate is refused under a budget; a larger reported cost is not
trusted (charged at the estimate) and fails the test as an overshoot."""


class LLMBudgetExceeded(BudgetExceeded):
    """An LLM request was refused before it was sent: it would exceed a test or session budget.

    Attributes (besides `BudgetExceeded`'s ``requested``, ``available``, ``limit``): ``test``
    (node id), ``scope`` (``"test"`` or ``"session"``), ``model``, ``used`` (µ$ already used),
    ``reason`` (empty for an over-budget estimate; else why the budget could not be enforced
    on the request: a body the plugin cannot read, an estimate too large to track).
    """

    def __init__(
        self,
        *,
        test: str,
        scope: str,
        model: str,
        requested: MicroDollar,
        available: MicroDollar,
        limit: MicroDollar,
        used: MicroDollar,
        source: str,
        reason: str = "",
    ) -> None:
        super().__init__(requested, available, limit, what=f"{scope} LLM budget")
        self.test = test
        self.scope = scope
        self.model = model
        self.used = used
        self.reason = reason
        if reason:  # refused because the budget could not be enforced on this request
            shown = "unlimited" if limit >= U64_MAX else format_usd(limit)
            self.args = (
                f"LLM {scope} budget: request to {model} refused in {test}: {reason}; "
                f"nothing was sent (the {scope} limit is {shown} ({source}), "
                f"{format_usd(used)} already spent)",
            )
            return
        self.args = (
            f"LLM {scope} budget exceeded in {test}: request to {model} estimated at "
            f"{format_usd(requested)}, but the {scope} limit is {format_usd(limit)} "
            f"({source}) and {format_usd(used)} is already spent",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class LLMUnknownModel(UnknownModelError):
    """An LLM request names a model without a price: refused, because a budget is set."""

    def __init__(self, model: str, catalogue: str, test: str) -> None:
        super().__init__(
            model,
            catalogue,
            "the request was refused; add its price with --llm-prices FILE or price unknown "
            "models as another with --llm-fallback-model MODEL",
        )
        self.test = test
        self.args = (f"in {test}: {self.args[0]}",)


_sdk_classes: dict[tuple[type[BaseException], ...], Any] = {}
_E = TypeVar("_E", bound=BaseException)


_SDK_BASES = (("anthropic", "AnthropicError"), ("openai", "OpenAIError"))


def _for_sdk(error_cls: type[_E]) -> type[_E]:
    # The Anthropic SDK and openai 1.x-3.14 wrap any exception from their HTTP client in
    # APIConnectionError and retry it (sleeping between attempts), except their own base
    # error. Mixing those bases in makes a refusal reach the application at once, as itself,
    # with no retry (one refusal, one record).
    bases: list[type[BaseException]] = []
    for module_name, name in _SDK_BASES:
        base = getattr(sys.modules.get(module_name), name, None)
        if isinstance(base, type) and issubclass(base, BaseException) and base not in bases:
            bases.append(base)
    if not bases:
        return error_cls
    key: tuple[type[BaseException], ...] = (error_cls, *bases)
    if key not in _sdk_classes:
        _sdk_classes[key] = type(
            error_cls.__name__, (error_cls, *bases), {"__module__": error_cls.__module__}
        )
    made: type[_E] = _sdk_classes[key]
    return made


class UnlimitedTracker(BudgetTracker):
    """A `BudgetTracker` that records spend and never refuses: "no budget" is unlimited.

    `BudgetTracker.unlimited` stops at the seed's ``u64::MAX``, so an absurd estimate (say
    ``max_tokens=5e18``) would be refused with no budget set; here nothing is.
    """

    __slots__ = ()

    def __init__(self, *, name: str = "budget") -> None:
        self._init(U64_MAX, name)

    def _admit(self, estimated: MicroDollar) -> bool:
        if self._used + estimated > self._limit:
            self._limit = self._used + estimated  # unlimited: the cap moves, never refuses
        return super()._admit(estimated)


class _Handle(Protocol):
    def settle(self, actual: MicroDollar) -> None: ...
    def release(self) -> None: ...


class SessionBudget(Protocol):
    """What the session budget offers: a `BudgetTracker` or an `omnillm_sim.ledger.Ledger`."""

    @property
    def limit(self) -> MicroDollar: ...
    def reserve(self, estimated: MicroDollar, *, label: str = "") -> Any: ...
    def stats(self) -> BudgetStats: ...


@dataclass
class RequestRecord:
    """One intercepted request, as it appears in the JSON report (amounts in µ$)."""

    seq: int
    test: str
    endpoint: str
    url: str
    model: str | None
    stream: bool
    status: str = "open"
    estimate: MicroDollar | None = None
    bounded: bool | None = None
    actual: MicroDollar | None = None
    charged: MicroDollar = 0
    tokens: dict[str, int] | None = None
    http_status: int | None = None
    available: MicroDollar | None = None
    detail: str = ""
    replayed: bool = False
    if_live: MicroDollar | None = None
    worker: str = ""
    ledger_id: int | None = None
    deployment: str | None = None
    model_source: str = ""
    response_model: str | None = None
    warning: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dict(self.__dict__)


@dataclass
class TestBudget:
    """One test's tracker, its requests and the problems that will fail it."""

    nodeid: str
    budget: Budget
    tracker: BudgetTracker
    requests: list[RequestRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reported: int = 0  # problems already attached to a report
    flights: list[_Flight] = field(default_factory=list)

    def add_problems(self, problems: list[str]) -> None:
        """Record problems not recorded before (checks run at the call and at teardown)."""
        for problem in problems:
            if problem not in self.problems:
                self.problems.append(problem)

    def unreported(self) -> list[str]:
        """Problems not yet attached to a report (and mark them attached)."""
        fresh = self.problems[self.reported :]
        self.reported = len(self.problems)
        return fresh


class BudgetSession:
    """The interception handler of one pytest run (one per process)."""

    def __init__(
        self,
        *,
        prices: PriceTable,
        default_max_output: int,
        session_budget: SessionBudget,
        session_source: str,
        enforce: bool,
        worker: str = "",
        count_replays: bool = False,
        model_map: Mapping[str, str] | None = None,
    ) -> None:
        self.prices = prices
        self.model_map = dict(model_map or {})
        # the table without its fallback: which names it really prices (built once; its own
        # cache keeps the lookups)
        self.strict_prices = prices.with_fallback(None)
        self._check_model_map()
        self.estimator: Estimator = get_estimator(
            "upper-bound", default_max_output=default_max_output
        )
        self.default_max_output = default_max_output
        self.session_budget = session_budget
        self.session_source = session_source
        self.enforce = enforce  # some budget is configured: refuse unknown models
        self.worker = worker
        self.count_replays = count_replays
        self.current: TestBudget | None = None
        self.outside: list[RequestRecord] = []
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def _check_model_map(self) -> None:
        """Every mapped model must have a price (a typo would refuse or drop every call).

        Raises:
            ConfigError: a mapped model the price table does not know (fallback aside).
        """
        for deployment, model in self.model_map.items():
            try:
                self.strict_prices.price(model)
            except (UnknownModelError, InvalidValueError):
                raise ConfigError(
                    "llm_model_map",
                    f"{deployment}={model}",
                    f"maps to {model!r}, which has no price in the {self.prices.name!r} "
                    "catalogue (add it with --llm-prices FILE)",
                ) from None

    # -- tests ------------------------------------------------------------------------------

    def begin_test(self, nodeid: str, budget: Budget) -> TestBudget:
        """Start a test: its tracker takes the test's limit (unlimited without one)."""
        tracker: BudgetTracker
        if budget.micros is None:
            tracker = UnlimitedTracker(name=f"LLM budget of {nodeid}")
        else:
            tracker = BudgetTracker.from_micros(budget.micros, name=f"LLM budget of {nodeid}")
        test = TestBudget(nodeid, budget, tracker)
        self.current = test
        return test

    def end_test(self, test: TestBudget) -> None:
        """Close the test's open flights (charged at their estimates), then check I1-I5."""
        for flight in list(test.flights):
            flight.close_at_teardown()
        if self.current is test:
            self.current = None
        test.add_problems(check_test(test, final=True))

    # -- the handler --------------------------------------------------------------------------

    def start(self, info: RequestInfo) -> _Flight | None:
        """Estimate and reserve, or refuse by raising; see the module docstring."""
        __tracebackhide__ = True
        test = self.current
        nodeid = test.nodeid if test is not None else OUTSIDE_TESTS
        parsed = parse_request(
            info.endpoint,
            info.body,
            info.content_encoding,
            model_map=self.model_map,
            fallback_model=self.prices.fallback,
            body_names_deployment=_azure_without_deployment(info),
            omnillm_bytes=self.estimator.name == "omnillm",
        )
        record = RequestRecord(
            seq=next(self._seq),
            test=nodeid,
            endpoint=info.endpoint.name,
            url=redact_url(info.url),
            model=parsed.model or info.endpoint.model,
            stream=parsed.stream,
            worker=self.worker,
            deployment=parsed.deployment,
            model_source=parsed.model_source,
        )
        self._add(test, record)
        if info.endpoint.free:  # countTokens: the provider does not bill it
            record.status = "free"
            record.detail = "free endpoint: not reserved, not charged"
            return None
        # Any budget in force refuses what it cannot price: the run's (options, environment,
        # ini, session) or only this test's marker.
        enforce = self.enforce or self._limited(test)
        if parsed.estimate_request is None:
            if enforce:  # fail closed: what cannot be priced cannot be budgeted
                raise self._refuse_unpriceable(record, test, parsed.problem, 0) from None
            record.status = "unpriced"
            record.detail = f"{parsed.problem}: not counted"
            return None
        try:
            estimate = self.estimator.estimate(parsed.estimate_request, self.prices)
        except UnknownModelError as exc:
            if enforce:
                record.status = "unknown-model"
                record.detail = str(exc)
                error = _for_sdk(LLMUnknownModel)(
                    parsed.estimate_request.model, self.prices.name, nodeid
                )
                if test is not None:
                    test.problems.append(str(error))
                raise error from None
            record.status = "unpriced"
            record.detail = f"model {parsed.model!r} has no price: not counted"
            return None
        if estimate.cost > MAX_TRACKED and self._limited(test):
            # With no budget in force the unlimited trackers count any amount; a limit (or the
            # shared ledger, a 64-bit store) cannot hold it, so the request is refused.
            why = (
                f"its estimate {format_usd(estimate.cost)} ({estimate.output_tokens} output "
                f"tokens) is beyond the {format_usd(MAX_TRACKED)} a budget can track"
            )
            raise self._refuse_unpriceable(record, test, why, estimate.cost) from None
        record.estimate = estimate.cost
        record.bounded = estimate.bounded
        label = f"#{record.seq} {parsed.model} @ {nodeid}"
        test_handle: _Handle | None = None
        if test is not None:
            try:
                test_handle = test.tracker.reserve(estimate.cost, label=label)
            except BudgetExceeded as exc:
                raise self._refuse(
                    record, test, "test", exc, test.budget.source, test.tracker.used
                ) from None
        try:
            session_handle = self.session_budget.reserve(estimate.cost, label=label)
        except BudgetExceeded as exc:
            if test_handle is not None:
                test_handle.release()
            used = self.session_budget.stats().used
            raise self._refuse(record, test, "session", exc, self.session_source, used) from None
        if getattr(self.session_budget, "path", None) is not None:  # the shared ledger
            record.ledger_id = getattr(session_handle, "id", None)
        flight = _Flight(self, test, record, info, estimate, test_handle, session_handle)
        if test is not None:
            test.flights.append(flight)
        return flight

    def _add(self, test: TestBudget | None, record: RequestRecord) -> None:
        with self._lock:
            (test.requests if test is not None else self.outside).append(record)

    def _limited(self, test: TestBudget | None) -> bool:
        """Whether a finite budget (the test's, or the session's) applies to a request."""
        if test is not None and test.budget.micros is not None:
            return True
        return not isinstance(self.session_budget, UnlimitedTracker)

    def _refuse_unpriceable(
        self, record: RequestRecord, test: TestBudget | None, reason: str, requested: MicroDollar
    ) -> BaseException:
        """Refuse a request whose cost cannot be reserved (unreadable body, absurd estimate)."""
        if test is not None and test.budget.micros is not None:
            scope, source = "test", test.budget.source
            limit, used = test.tracker.limit, test.tracker.used
        else:
            scope, source = "session", self.session_source
            stats = self.session_budget.stats()
            limit, used = stats.limit, stats.used
        record.status = "refused"
        record.detail = f"{scope} budget: {reason}"
        record.available = max(limit - used, 0)
        model = record.model or "?"
        if record.deployment is not None and record.model is None:
            model = f"Azure OpenAI deployment {record.deployment!r}"
        error = _for_sdk(LLMBudgetExceeded)(
            test=record.test,
            scope=scope,
            model=model,
            requested=requested,
            available=record.available,
            limit=limit,
            used=used,
            source=source,
            reason=reason,
        )
        if test is not None:
            test.problems.append(str(error))
        return error

    def _refuse(
        self,
        record: RequestRecord,
        test: TestBudget | None,
        scope: str,
        exc: BudgetExceeded,
        source: str,
        used: MicroDollar,
    ) -> BaseException:
        record.status = "refused"
        record.detail = f"{scope} budget"
        record.available = exc.available
        assert record.estimate is not None
        error = _for_sdk(LLMBudgetExceeded)(
            test=record.test,
            scope=scope,
            model=record.model or "?",
            requested=record.estimate,
            available=exc.available,
            limit=exc.limit,
            used=used,
            source=source,
        )
        if test is not None:
            test.problems.append(str(error))
        return error


class _Flight:
    """One admitted request: its reservations, its record and its response reader."""

    def __init__(
        self,
        session: BudgetSession,
        test: TestBudget | None,
        record: RequestRecord,
        info: RequestInfo,
        estimate: Estimate,
        test_handle: _Handle | None,
        session_handle: _Handle,
    ) -> None:
        self._session = session
        self._test = test
        self.record = record
        self._endpoint = info.endpoint
        self._estimate = estimate
        self._handles = [h for h in (test_handle, session_handle) if h is not None]
        self._reader: UsageReader | None = None
        self._replayed = False
        self._ended = False
        self._lock = threading.Lock()

    def _end(self, status: str, actual: MicroDollar | None, detail: str = "") -> None:
        """Settle (``actual``) or release (``None`` with status http-error/failed) once."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        record = self.record
        record.status = status
        detail = detail or record.detail
        if detail:
            record.detail = redact_text(detail)
        if self._replayed and not self._session.count_replays:
            record.if_live = actual or 0
            actual = None  # it cost nothing: no network connection answered it
        for handle in self._handles:
            if actual is None:
                handle.release()
            else:
                handle.settle(actual)
        record.charged = actual or 0
        if self._test is not None and self in self._test.flights:
            self._test.flights.remove(self)

    def _keep(self, status: str, detail: str) -> None:
        self._end(status, self._estimate.cost, detail)

    # -- Flight protocol (never raises) -------------------------------------------------------

    def replayed(self) -> None:
        self._replayed = True
        self.record.replayed = True

    def redirected(self, status: int) -> None:
        self.record.http_status = status
        self._end("redirect", None, f"HTTP {status}: released (the next hop is its own request)")

    def failed(self, exc: BaseException, *, sent: bool) -> None:
        detail = f"{type(exc).__name__}: {exc}"[:300]
        if sent:
            self._keep("failed", f"{detail} (may have been billed: charged at the estimate)")
        else:
            self._end("failed", None, f"{detail} (never sent: released)")

    def response(self, status: int, content_type: str, content_encoding: str) -> bool:
        self.record.http_status = status
        if status >= 400:
            self._end("http-error", None, f"HTTP {status}: released (errors are not billed)")
            return False
        self._reader = UsageReader(
            self._endpoint, content_type, content_encoding, stream=self.record.stream
        )
        return True

    def chunk(self, data: bytes) -> None:
        if self._reader is not None and not self._ended:
            self._reader.feed(data)

    def done(self) -> None:
        if self._ended:
            return
        try:
            self._settle_from_body()
        except Exception as exc:  # never break the application's call
            self._keep("unparsed", f"plugin error {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):  # a warning never breaks the application's call
            self._note_response_model()

    def _note_response_model(self) -> None:
        answered = self._reader.model if self._reader is not None else None
        record = self.record
        record.response_model = answered
        if answered is None or record.model is None:
            return
        if record.model_source not in ("model map", "fallback"):
            return
        if _models_agree(record.model, answered, self._session.strict_prices):
            return
        what = (
            f"Azure OpenAI deployment {record.deployment!r}"
            if record.deployment is not None
            else "the request"
        )
        record.warning = (
            f"{what} was priced as {record.model} ({record.model_source}), but the response "
            f"says model {answered!r}: check --llm-model-map"
        )

    def _settle_from_body(self) -> None:
        reader = self._reader
        if reader is None:
            self._keep("no-usage", "no response body")
            return
        try:
            usage = reader.finish()
        except (UsageParseError, InvalidValueError) as exc:
            self._keep("unparsed", f"{exc} (reservation kept: charged at the estimate)")
            return
        if usage is None:
            why = "stream ended without usage" if reader.sse else "response has no usage"
            if reader.stream_error:
                why += f" (stream error: {reader.stream_error})"
            hint = ""
            if reader.sse and self.record.endpoint == "openai/chat":
                hint = "; pass stream_options={'include_usage': True} to get it"
            self._keep("no-usage", f"{why}{hint} (reservation kept: charged at the estimate)")
            return
        model = self.record.model
        assert model is not None
        self.record.tokens = _tokens(usage)
        actual = self._session.prices.cost(model, usage)
        self.record.actual = actual
        if actual > MAX_TRACKED:
            self._absurd(actual)
            return
        self._end("ok", actual)

    def _absurd(self, actual: MicroDollar) -> None:
        """A reported cost no budget can hold: keep the estimate and fail the test."""
        r = self.record
        self._keep(
            "unparsed",
            f"usage reports a cost of {format_usd(actual)}, beyond the {format_usd(MAX_TRACKED)} "
            "a budget can track: not trusted (charged at the estimate)",
        )
        if self._test is not None:
            self._test.add_problems(
                [
                    f"{self._test.nodeid}: LLM spend overshoot: request #{r.seq} to {r.model} "
                    f"({r.endpoint}) reported usage costing {format_usd(actual)}, above its "
                    f"estimate {format_usd(self._estimate.cost)} and beyond the "
                    f"{format_usd(MAX_TRACKED)} a budget can track (charged at the estimate)"
                ]
            )

    def close_at_teardown(self) -> None:
        if self._reader is not None and not self._ended:
            self._keep("no-usage", "response still unread at teardown (charged at the estimate)")
        else:
            self._keep("no-usage", "no response by teardown (charged at the estimate)")


def _azure_without_deployment(info: RequestInfo) -> bool:
    """An Azure OpenAI route that names its deployment in the body's ``model``: under
    ``/openai/`` with an ``api-version`` query, but neither ``/deployments/`` nor the v1 API
    (``/openai/v1/``, where ``model`` is a model name as on OpenAI)."""
    if info.endpoint.provider != "openai" or info.endpoint.deployment is not None:
        return False
    if "/openai/" not in info.url:  # every plain OpenAI call: no URL parsing on its way out
        return False
    parts = urlsplit(info.url)
    return (
        "/openai/" in parts.path
        and "/openai/v1/" not in parts.path
        and "api-version" in parse_qs(parts.query)
    )


_SNAPSHOT = re.compile(r"[0-9][0-9-]*")


def _models_agree(priced: str, answered: str, strict: PriceTable) -> bool:
    """Whether the response's model is the priced one: the same name, a dated or numbered
    snapshot of it (``gpt-4o-2024-08-06``, ``gemini-2.0-flash-001``), or a name with the same
    prices in ``strict`` (a table without a fallback)."""
    a, p = answered.removeprefix("models/"), priced.removeprefix("models/")
    if a == p or (a.startswith(p + "-") and _SNAPSHOT.fullmatch(a[len(p) + 1 :])):
        return True
    try:
        x, y = strict.price(a), strict.price(p)
    except (UnknownModelError, InvalidValueError):
        return False
    return (x.rates, x.tiers) == (y.rates, y.tiers)


def _tokens(usage: Usage) -> dict[str, int]:
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
    }


def check_test(test: TestBudget, *, final: bool) -> list[str]:
    """Check the test's tracker against I1-I5; a list of failure messages.

    ``final`` (at teardown) adds I4: no reservation may still be open. An overshoot (``used``
    went above the limit because a request cost more than its estimate) names every request
    whose actual cost exceeded its estimate, and by how much.
    """
    tracker = test.tracker
    if not final and not test.requests and tracker.used == 0 and tracker.spent == 0:
        # Nothing was ever reserved (used can only pass the limit through a settle, which
        # makes spent > 0), so I1-I3 and I5 hold and there is no overshoot: skip the
        # snapshot. Most tests make no LLM call, and this runs twice per test.
        return []
    problems: list[str] = []
    s = test.tracker.stats()
    try:
        check_budget_invariants(
            used=s.used,
            limit=s.limit,
            spent=s.spent,
            open_reserved=s.open_reserved,
            underestimated=s.underestimated,
            all_within_estimate=s.underestimated == 0,
        )
    except InvariantViolation as exc:
        problems.append(f"{test.nodeid}: {exc}")
    if final and s.open_count:
        problems.append(
            f"{test.nodeid}: invariant I4 violated: {s.open_count} reservation(s) of "
            f"{format_usd(s.open_reserved)} still open at teardown (settle or release every "
            "reservation made on llm_budget)"
        )
    for r in test.requests:
        if r.status == "refused" and r.detail == "test budget":
            assert r.estimate is not None and r.available is not None
            if r.estimate <= r.available:
                problems.append(
                    f"{test.nodeid}: invariant I5 violated: request #{r.seq} refused although "
                    f"its estimate {r.estimate} µ$ fitted the {r.available} µ$ available"
                )
    if s.overshoot > 0:
        culprits = [
            r
            for r in test.requests
            if r.actual is not None and r.estimate is not None and r.actual > r.estimate
        ]
        lines = [
            f"{test.nodeid}: LLM spend went {format_usd(s.overshoot)} over the test limit "
            f"{format_usd(s.limit)} (peak {format_usd(s.peak_used)}): a provider reported more "
            "usage than the request's upper bound"
        ]
        for r in culprits:
            assert r.actual is not None and r.estimate is not None
            why = (
                ""
                if r.bounded
                else " (the request had no output bound: estimated with the default bound; "
                "set max_tokens)"
            )
            lines.append(
                f"  request #{r.seq} to {r.model} ({r.endpoint}): actual {format_usd(r.actual)} "
                f"exceeded its estimate {format_usd(r.estimate)} by "
                f"{format_usd(r.actual - r.estimate)}{why}"
            )
        problems.append("\n".join(lines))
    return problems
