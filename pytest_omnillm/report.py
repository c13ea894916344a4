"""Spend aggregates: computed from per-test records (plain data), rendered as text or JSON.

Records reach the process that reports (the only process, or the pytest-xdist controller)
as plain dicts attached to each test's teardown report, so the same code aggregates one
process's tests or every worker's.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omnillm_sim.money import format_usd

__all__ = [
    "SpendSummary",
    "TestRecords",
    "ledger_kept_lines",
    "redact_text",
    "redact_url",
    "render",
    "summarise",
    "write_json",
]

TOKEN_KEYS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
REDACTED = "REDACTED"
# A query parameter whose name contains one of these (case-insensitive) holds a credential.
_SECRET_PARAMS = ("key", "token", "sig", "secret", "password", "passwd", "auth", "credential")
_SECRET_EXACT = {"code", "session", "signature", "x-amz-security-token"}
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_TOKEN_LIKE = re.compile(r"(?i)\b(bearer\s+|sk-|sk-ant-)[A-Za-z0-9._~+/=-]{6,}")


def _secret_param(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_EXACT or any(part in lowered for part in _SECRET_PARAMS)


def redact_url(url: str) -> str:
    """``url`` without credentials: userinfo and key-like query parameters become REDACTED.

    >>> redact_url("https://u:pw@api.example.com/v1/chat?api-key=s3cr3t&x=1")
    'https://REDACTED@api.example.com/v1/chat?api-key=REDACTED&x=1'
    """
    # A test suite calls a few URLs many times: redact each once. Only URLs without userinfo,
    # query or fragment are kept, so the cache never holds a credential.
    try:
        return _redacted[url]
    except KeyError:
        pass
    redacted = _redact_url(url)
    if "@" not in url and "?" not in url and "#" not in url:
        if len(_redacted) >= _REDACTED_MAX:
            _redacted.clear()
        _redacted[url] = redacted
    return redacted


_redacted: dict[str, str] = {}
_REDACTED_MAX = 1024


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_param(k) for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if _secret_param(k) else v) for k, v in pairs], safe="/:"
            )
    fragment = REDACTED if parts.fragment and "=" in parts.fragment else parts.fragment
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (`redact_url`) and bearer/``sk-`` keys hidden."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    if "sk-" in text or "earer" in text:
        text = _TOKEN_LIKE.sub(lambda m: m.group(1) + REDACTED, text)
    return text


NO_MODEL = "(no model)"
_NOT_CHARGED = ("refused", "unknown-model", "unpriced", "free")


@dataclass
class ModelTotal:
    """Spend and tokens of one model across the session."""

    spent: int = 0
    requests: int = 0
    at_estimate: int = 0  # requests charged at their estimate (tokens unknown)
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))


@dataclass
class SpendSummary:
    """Everything the terminal summary and the JSON report show (amounts in µ$).

    ``lost`` holds requests known only from the shared ledger: their worker died (SIGKILL,
    crash) before it could report them; open ones are charged at their estimate.
    """

    tests: Sequence[dict[str, Any]]
    outside: list[dict[str, Any]]
    session_limit: int | None
    session_source: str
    ledger: dict[str, int] | None = None
    ledger_entries: list[dict[str, Any]] | None = None
    test_limit: int | None = None
    test_source: str = "no budget configured"
    lost: list[dict[str, Any]] = field(default_factory=list)
    ledger_path: str | None = None  # set when the ledger file is kept (open reservations)
    notes: list[str] = field(default_factory=list)

    @functools.cached_property
    def requests(self) -> list[dict[str, Any]]:
        """Every request record: tests', then outside tests, then lost with a worker.

        Computed once: a summary is read many times (one pass over every test's record each
        time would cost a large suite more than its few LLM requests), never changed.
        """
        return [r for t in self.tests if t["requests"] for r in t["requests"]] + (
            self.outside + self.lost
        )

    @property
    def spent(self) -> int:
        """What the session was charged: tests' settled costs and kept estimates (direct
        ``llm_budget`` reservations included), requests made outside tests, and requests lost
        with a killed worker."""
        total = sum(int(t["spent"]) for t in self.tests)
        return total + sum(int(r["charged"]) for r in self.outside + self.lost)

    def by_model(self) -> dict[str, ModelTotal]:
        """Per-model totals over requests that were charged (replays included)."""
        totals: dict[str, ModelTotal] = defaultdict(ModelTotal)
        for r in self.requests:
            if r["status"] in _NOT_CHARGED:
                continue
            total = totals[r["model"] or NO_MODEL]
            total.spent += r["charged"]
            total.requests += 1
            if r["tokens"] is None and (r["charged"] or r.get("if_live")):
                total.at_estimate += 1  # kept its reservation: no usable usage
            for key, value in (r["tokens"] or {}).items():
                total.tokens[key] = total.tokens.get(key, 0) + value
        return dict(sorted(totals.items(), key=lambda kv: (-kv[1].spent, kv[0])))

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Request records whose status is one of ``statuses``."""
        return [r for r in self.requests if r["status"] in statuses]

    @property
    def warned(self) -> list[dict[str, Any]]:
        """Requests whose response named another model than the mapped one they were priced
        as (Azure OpenAI deployments, ``--llm-model-map``)."""
        return [r for r in self.requests if r.get("warning")]

    @property
    def replayed(self) -> list[dict[str, Any]]:
        """Requests answered by a mock or a cassette (no network connection)."""
        return [r for r in self.requests if r.get("replayed")]

    def as_json(self) -> dict[str, Any]:
        """The JSON report's content."""
        replayed = self.replayed
        return {
            "version": 1,
            "session": {
                "limit": self.session_limit,
                "limit_source": self.session_source,
                "limits": {
                    "test": {"limit": self.test_limit, "source": self.test_source},
                    "session": {"limit": self.session_limit, "source": self.session_source},
                },
                "spent": self.spent,
                "spent_usd": format_usd(self.spent),
                "requests": len(self.requests),
                "refused": len(self.with_status("refused", "unknown-model")),
                "unpriced": len(self.with_status("unpriced")),
                "free": len(self.with_status("free")),
                "model_warnings": [r["warning"] for r in self.warned],
                "replayed": {
                    "requests": len(replayed),
                    "if_live": sum(int(r.get("if_live") or 0) for r in replayed),
                    "charged": sum(int(r["charged"]) for r in replayed),
                },
                "by_model": {
                    m: {
                        "spent": t.spent,
                        "requests": t.requests,
                        "charged_at_estimate": t.at_estimate,
                        "tokens": t.tokens,
                    }
                    for m, t in self.by_model().items()
                },
                "ledger": self.ledger,
                "ledger_entries": self.ledger_entries,
                "ledger_kept": self.ledger_path,
                "interception": self.notes,
            },
            "tests": list(self.tests),
            "outside_tests": self.outside,
            "lost_with_workers": self.lost,
        }


class TestRecords(Sequence[dict[str, Any]]):
    """The per-test records of a run, in order, some of them made only when read.

    ``records`` holds dicts (`summarise` takes them as they are: a test's record does not
    change after the test) and node ids, whose record ``make(nodeid)`` gives: most tests
    make no LLM call, and a suite of thousands then holds no dict per test while it runs
    or while it is summarised (fewer objects for the garbage collector to walk).
    """

    def __init__(
        self, records: list[dict[str, Any] | str], make: Callable[[str], dict[str, Any]]
    ) -> None:
        self._records = records
        self._make = make

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._record(r) for r in self._records[index]]
        return self._record(self._records[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for record in self._records:
            yield self._record(record)

    def _record(self, record: dict[str, Any] | str) -> dict[str, Any]:
        return record if isinstance(record, dict) else self._make(record)


def summarise(
    tests: Iterable[Mapping[str, Any]],
    outside: Iterable[Mapping[str, Any]],
    *,
    session_limit: int | None,
    session_source: str,
    ledger: dict[str, int] | None = None,
    ledger_entries: list[dict[str, Any]] | None = None,
    test_limit: int | None = None,
    test_source: str = "no budget configured",
    ledger_path: str | None = None,
    notes: Iterable[str] = (),
) -> SpendSummary:
    """Aggregate per-test records (dicts from teardown reports) into a `SpendSummary`.

    With a shared ledger, every ledger entry no record accounts for (its worker died before
    reporting it) becomes a ``"lost"`` record, so the totals equal the ledger's.
    """
    # TestRecords are made on reading: no dict per test is held while summarising.
    test_list = tests if isinstance(tests, TestRecords) else [dict(t) for t in tests]
    outside_list = [dict(r) for r in outside]
    every = [r for t in test_list for r in t["requests"]] + outside_list
    known = {r.get("ledger_id") for r in every if r.get("ledger_id") is not None}
    lost = [_lost_record(e) for e in ledger_entries or () if _is_lost(e, known)]
    return SpendSummary(
        tests=test_list,
        outside=outside_list,
        session_limit=session_limit,
        session_source=session_source,
        ledger=ledger,
        ledger_entries=ledger_entries,
        test_limit=test_limit,
        test_source=test_source,
        lost=lost,
        ledger_path=ledger_path,
        notes=list(notes),
    )


def _is_lost(entry: Mapping[str, Any], known: set[Any]) -> bool:
    return entry["state"] in ("open", "settled") and entry["id"] not in known


def _lost_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    # Labels are "#<seq> <model> @ <test node id>" (see session.BudgetSession.start).
    head, _, test = str(entry["label"]).partition(" @ ")
    _, _, model = head.partition(" ")
    worker = str(entry["owner"]).split(":")[0]
    is_open = entry["state"] == "open"
    charged = int(entry["estimate"]) if is_open else int(entry["actual"] or 0)
    how = "open at the kill: charged at its estimate" if is_open else "settled before the kill"
    return {
        "seq": entry["id"],
        "test": test or "?",
        "endpoint": "?",
        "url": "",
        "model": model or None,
        "stream": False,
        "status": "lost",
        "estimate": int(entry["estimate"]),
        "bounded": None,
        "actual": None if is_open else charged,
        "charged": charged,
        "tokens": None,
        "http_status": None,
        "available": None,
        "detail": f"lost with worker {worker} ({how})",
        "replayed": False,
        "if_live": None,
        "worker": worker,
        "ledger_id": entry["id"],
        "open": is_open,
        "owner": entry["owner"],
    }


def write_json(summary: SpendSummary, path: str | Path) -> None:
    """Write the JSON report (UTF-8, indented, keys in a stable order)."""
    Path(path).write_text(json.dumps(summary.as_json(), indent=2) + "\n", encoding="utf-8")


def _money(micros: int | None) -> str:
    return "unlimited" if micros is None else format_usd(micros)


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters at a word boundary, marked with "..."."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 3]
    space = cut.rfind(" ")
    if space > width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "..."


def _capped(lines: list[str], top: int, what: str) -> list[str]:
    if len(lines) <= top:
        return lines
    return [*lines[:top], f"  ... and {len(lines) - top} more {what} (--llm-summary N shows more)"]


def _grouped(items: Iterable[tuple[str, str]]) -> list[str]:
    """``(key, test)`` pairs as ``"N x key"`` lines, most frequent first; one test is named."""
    counts: dict[str, list[str]] = defaultdict(list)
    for key, test in items:
        counts[key].append(test)
    lines = []
    for key, tests in sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        where = f" in {tests[0]}" if len(set(tests)) == 1 else f" in {len(set(tests))} tests"
        lines.append(f"  {len(tests)} x {key}{where}")
    return lines


def _model(r: Mapping[str, Any]) -> str:
    return str(r["model"]) if r.get("model") else NO_MODEL


def _status_words(status: str) -> str:
    return {"no-usage": "no usage", "unparsed": "unparsed usage"}.get(status, status)


def render(summary: SpendSummary, top: int) -> list[str]:
    """The terminal summary's lines (without the section header); each list shows at most
    ``top`` lines, identical lines aggregated as ``N x ...``."""
    lines: list[str] = []
    requests = summary.requests
    refused = summary.with_status("refused", "unknown-model")
    limit = (
        f"; session limit {_money(summary.session_limit)} ({summary.session_source})"
        if summary.session_limit is not None
        else ""
    )
    lines.append(
        f"session: {format_usd(summary.spent)} spent in {len(requests)} LLM request(s) "
        f"from {len(summary.tests)} test(s), {len(refused)} refused{limit}"
    )
    replayed = summary.replayed
    if replayed:
        if_live = sum(int(r.get("if_live") or 0) for r in replayed)
        charged = sum(int(r["charged"]) for r in replayed)
        how = (
            f"charged {format_usd(charged)} (--llm-budget-replays)"
            if charged
            else "not charged to any budget"
        )
        lines.append(
            f"replayed from mocks/cassettes: {format_usd(if_live + charged)} if live, "
            f"{len(replayed)} request(s), {how}"
        )
    ranked: Sequence[dict[str, Any]] = sorted(
        (t for t in summary.tests if t["spent"] > 0), key=lambda t: (-t["spent"], t["nodeid"])
    )[:top]
    if ranked:
        lines.append(f"top {len(ranked)} test(s) by spend:")
        for t in ranked:
            n_refused = sum(r["status"] in ("refused", "unknown-model") for r in t["requests"])
            lines.append(
                f"  {format_usd(t['spent']):>12}  {t['nodeid']}  (limit {_money(t['limit'])}, "
                f"{len(t['requests'])} request(s), {n_refused} refused)"
            )
    models = summary.by_model()
    if models:
        lines.append("per model:")
        model_lines = []
        for model, total in models.items():
            tok = total.tokens
            counted = total.requests - total.at_estimate
            text = f"  {format_usd(total.spent):>12}  {model}  {total.requests} request(s)"
            if counted:
                inputs = tok["input"] + tok["cache_read"] + tok["cache_write"]
                inputs += tok["cache_write_1h"]
                text += f", {inputs} input / {tok['output']} output tokens"
            if total.at_estimate:
                text += (
                    f", {total.at_estimate} charged at estimate (tokens unknown)"
                    if counted
                    else " charged at estimate (tokens unknown)"
                )
            model_lines.append(text)
        lines += _capped(model_lines, top, "model(s)")
    if refused:
        lines.append("refused requests (never sent):")
        keys = []
        for r in refused:
            estimate = "" if r["estimate"] is None else f" estimated {format_usd(r['estimate'])}"
            detail = shorten(str(r["detail"]), 120)
            keys.append((f"{_model(r)}{estimate} ({detail})", str(r["test"])))
        lines += _capped(_grouped(keys), top, "kind(s) of refusal")
    unpriced = summary.with_status("unpriced")
    if unpriced:
        names = sorted({_model(r) for r in unpriced})
        shown = ", ".join(names[:top])
        if len(names) > top:
            shown += f" and {len(names) - top} more"
        lines.append(
            f"UNPRICED: {len(unpriced)} request(s) not counted in the spend above, to "
            f"{shown}: add prices with --llm-prices FILE or choose --llm-fallback-model MODEL"
        )
    free = summary.with_status("free")
    if free:
        names = sorted({f"{_model(r)} ({r['endpoint']})" for r in free})
        lines.append(f"free (not charged): {len(free)} request(s) to {', '.join(names[:top])}")
    warned = summary.warned
    if warned:
        lines.append("model warnings (the response names another model than the one priced):")
        lines += _capped(
            _grouped((shorten(str(r["warning"]), 200), str(r["test"])) for r in warned),
            top,
            "warning(s)",
        )
    kept = [r for r in summary.with_status("no-usage", "unparsed", "failed") if r["charged"]]
    if kept:
        lines.append("charged at their estimate (no usable usage in the response):")
        keys = [
            (
                f"{_model(r)} {_status_words(str(r['status']))}: {shorten(str(r['detail']), 160)}",
                str(r["test"]),
            )
            for r in kept
        ]
        lines += _capped(_grouped(keys), top, "kind(s)")
    over = [
        r
        for r in requests
        if r["actual"] is not None and r["estimate"] is not None and r["actual"] > r["estimate"]
    ]
    if over:
        lines.append("cost more than their estimate:")
        over_lines = [
            f"  {r['test']}: {_model(r)} actual {format_usd(r['actual'])} > estimate "
            f"{format_usd(r['estimate'])}"
            for r in over
        ]
        lines += _capped(over_lines, top, "request(s)")
    if summary.lost:
        lost_total = sum(int(r["charged"]) for r in summary.lost)
        lines.append(
            f"lost with killed workers: {len(summary.lost)} request(s), {format_usd(lost_total)} "
            "charged (from the session ledger):"
        )
        keys = [
            (
                f"{_model(r)} {format_usd(r['charged'])}, lost with worker {r['worker']}"
                + (" (open at the kill: charged at its estimate)" if r["open"] else ""),
                str(r["test"]),
            )
            for r in summary.lost
        ]
        lines += _capped(_grouped(keys), top, "kind(s)")
    if summary.ledger is not None:
        s = summary.ledger
        lines.append(
            f"session ledger: used {format_usd(s['used'])}, {s['admitted']} admitted, "
            f"{s['rejected']} rejected, {s['open_count']} open, overshoot "
            f"{format_usd(s['overshoot'])}"
        )
    lines += ledger_kept_lines(summary)
    for note in summary.notes:
        lines.append(f"interception: {note}")
    return lines


def ledger_kept_lines(summary: SpendSummary) -> list[str]:
    """Where the kept session ledger is and how to reclaim its open reservations."""
    if summary.ledger_path is None:
        return []
    owners = sorted({str(r["owner"]) for r in summary.lost if r["open"]})
    lines = [
        f"session ledger kept (it has open reservations): {summary.ledger_path}; "
        "once their processes are gone, end them with:"
    ]
    for owner in owners or ["all"]:
        lines.append(f"  omnillm-sim ledger {summary.ledger_path} --reclaim {owner}")
    return lines
