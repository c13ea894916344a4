"""Spend aggregates: computed from per-test records (plain data), rendered as text or JSON.

Records reach the process that reports (the only process, or the pytest-xdist controller)
as plain dicts attached to each test's teardown report, so the same code aggregates one
process's tests or every worker's.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omnillm_sim.money import format_usd

__all__ = ["SpendSummary", "redact_text", "redact_url", "render", "summarise", "write_json"]

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


@dataclass
class ModelTotal:
    """Spend and tokens of one model across the session."""

    spent: int = 0
    requests: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))


@dataclass
class SpendSummary:
    """Everything the terminal summary and the JSON report show (amounts in µ$)."""

    tests: list[dict[str, Any]]
    outside: list[dict[str, Any]]
    session_limit: int | None
    session_source: str
    ledger: dict[str, int] | None = None
    ledger_entries: list[dict[str, Any]] | None = None

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request record, tests' first."""
        return [r for t in self.tests for r in t["requests"]] + list(self.outside)

    @property
    def spent(self) -> int:
        """What the session was charged: tests' settled costs and kept estimates (direct
        ``llm_budget`` reservations included) plus requests made outside tests."""
        total = sum(int(t["spent"]) for t in self.tests)
        return total + sum(int(r["charged"]) for r in self.outside)

    def by_model(self) -> dict[str, ModelTotal]:
        """Per-model totals over requests that were charged."""
        totals: dict[str, ModelTotal] = defaultdict(ModelTotal)
        for r in self.requests:
            if r["status"] in ("refused", "unknown-model", "unpriced"):
                continue
            total = totals[r["model"] or "?"]
            total.spent += r["charged"]
            total.requests += 1
            for key, value in (r["tokens"] or {}).items():
                total.tokens[key] = total.tokens.get(key, 0) + value
        return dict(sorted(totals.items(), key=lambda kv: (-kv[1].spent, kv[0])))

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Request records whose status is one of ``statuses``."""
        return [r for r in self.requests if r["status"] in statuses]

    def as_json(self) -> dict[str, Any]:
        """The JSON report's content."""
        return {
            "version": 1,
            "session": {
                "limit": self.session_limit,
                "limit_source": self.session_source,
                "spent": self.spent,
                "spent_usd": format_usd(self.spent),
                "requests": len(self.requests),
                "refused": len(self.with_status("refused", "unknown-model")),
                "unpriced": len(self.with_status("unpriced")),
                "by_model": {
                    m: {"spent": t.spent, "requests": t.requests, "tokens": t.tokens}
                    for m, t in self.by_model().items()
                },
                "ledger": self.ledger,
                "ledger_entries": self.ledger_entries,
            },
            "tests": self.tests,
            "outside_tests": self.outside,
        }


def summarise(
    tests: Iterable[Mapping[str, Any]],
    outside: Iterable[Mapping[str, Any]],
    *,
    session_limit: int | None,
    session_source: str,
    ledger: dict[str, int] | None = None,
    ledger_entries: list[dict[str, Any]] | None = None,
) -> SpendSummary:
    """Aggregate per-test records (dicts from teardown reports) into a `SpendSummary`."""
    return SpendSummary(
        tests=[dict(t) for t in tests],
        outside=[dict(r) for r in outside],
        session_limit=session_limit,
        session_source=session_source,
        ledger=ledger,
        ledger_entries=ledger_entries,
    )


def write_json(summary: SpendSummary, path: str | Path) -> None:
    """Write the JSON report (UTF-8, indented, keys in a stable order)."""
    Path(path).write_text(json.dumps(summary.as_json(), indent=2) + "\n", encoding="utf-8")


def _money(micros: int | None) -> str:
    return "unlimited" if micros is None else format_usd(micros)


def render(summary: SpendSummary, top: int) -> list[str]:
    """The terminal summary's lines (without the section header)."""
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
        for model, total in models.items():
            tok = total.tokens
            lines.append(
                f"  {format_usd(total.spent):>12}  {model}  {total.requests} request(s), "
                f"{tok['input'] + tok['cache_read'] + tok['cache_write'] + tok['cache_write_1h']}"
                f" input / {tok['output']} output tokens"
            )
    if refused:
        lines.append("refused requests (never sent):")
        for r in refused:
            estimate = "" if r["estimate"] is None else f" estimated {format_usd(r['estimate'])}"
            lines.append(f"  {r['test']}: {r['model']}{estimate} ({r['detail'][:120]})")
    unpriced = summary.with_status("unpriced")
    if unpriced:
        names = sorted({str(r["model"]) for r in unpriced})
        lines.append(
            f"UNPRICED: {len(unpriced)} request(s) not counted in the spend above, to "
            f"{', '.join(names)}: add prices with --llm-prices FILE or choose "
            "--llm-fallback-model MODEL"
        )
    kept = summary.with_status("no-usage", "unparsed", "failed")
    kept = [r for r in kept if r["charged"]]
    if kept:
        lines.append("charged at their estimate (no usable usage in the response):")
        for r in kept:
            lines.append(f"  {r['test']}: {r['model']} {r['status']}: {r['detail'][:160]}")
    over = [
        r
        for r in requests
        if r["actual"] is not None and r["estimate"] is not None and r["actual"] > r["estimate"]
    ]
    if over:
        lines.append("cost more than their estimate:")
        for r in over:
            lines.append(
                f"  {r['test']}: {r['model']} actual {format_usd(r['actual'])} > estimate "
                f"{format_usd(r['estimate'])}"
            )
    if summary.ledger is not None:
        s = summary.ledger
        lines.append(
            f"session ledger: used {format_usd(s['used'])}, {s['admitted']} admitted, "
            f"{s['rejected']} rejected, {s['open_count']} open, overshoot "
            f"{format_usd(s['overshoot'])}"
        )
    return lines
