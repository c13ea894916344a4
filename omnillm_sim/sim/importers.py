"""Importers of real request/settle logs, for observed-timing replays.

A *log* differs from a trace (`omnillm_sim.sim.traces`): each row has both ends of a call —
when it started, when it ended, how it ended and what it used or cost. The engine admits each
row at its start and finishes it at its observed end with its observed outcome, instead of
drawing from the provider model (``omnillm_sim.sim.engine``). Formats:

* ``pytest-omnillm`` — this project's ``--llm-report`` JSON (``version: 1``; request records
  under ``tests[].requests[]`` and ``outside_tests[]``). The report has no timestamps, so
  requests are replayed one after another in report order, `NOMINAL_SECONDS` each: the order
  (and so which request a budget refuses) is exact, the times are nominal. Records that never
  reached a provider (``refused``, ``unknown-model``, ``unpriced``, ``open``, and ``failed``
  ones released before sending) are skipped.
* ``otel-genai`` — OpenTelemetry spans following the GenAI semantic conventions, one JSON
  object a line: either OTLP/JSON (``{"resourceSpans": [...]}``) or one flattened span
  (``name``, ``startTimeUnixNano`` / ``start_time_unix_nano``, ``endTimeUnixNano``,
  ``attributes`` as an OTLP key/value list or a plain object). Spans without a
  ``gen_ai.request.model`` / ``gen_ai.response.model`` attribute are skipped (HTTP children,
  tool spans). Tokens: ``gen_ai.usage.input_tokens`` / ``output_tokens``; the outcome comes
  from ``http.response.status_code``, ``error.type`` and the span status.
* ``litellm-spend`` — LiteLLM proxy ``LiteLLM_SpendLogs`` rows, exported as CSV (a header row
  of column names), a JSON array, or JSON lines: ``startTime``, ``endTime``, ``model``,
  ``prompt_tokens``, ``completion_tokens``, ``spend`` (USD), ``status`` (``success`` /
  ``failure``; the HTTP code of a failure from ``metadata.error_information.error_code``),
  ``api_key`` (the hashed key).
* ``csv`` / ``jsonl`` — the generic formats with an ``end`` or ``duration`` column mapped
  (besides ``time``, ``prompt_tokens``, ``output_tokens``; optionally ``model``, ``status``,
  ``cost`` in USD and ``key``). ``status``: ``ok``/``success``/2xx, an HTTP code 400-599 (or
  ``http_429``), ``timeout``, ``cancelled``, ``error``/``failure`` (= 500).

Every reader streams (a JSON array or report is parsed from one string, but rows are made one
at a time) and reports a bad row as ``file:line: column 'x': expected ..., got ...``. Rows may
come in any order within `REORDER_WINDOW` seconds of start time (span exporters write spans
when they *end*); `in_start_order` sorts them with a bounded buffer.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from omnillm_sim.errors import InvalidValueError, TraceError
from omnillm_sim.money import MicroDollar, usd_to_micro
from omnillm_sim.pricing import PriceTable, Usage
from omnillm_sim.sim.traces import DEFAULT_MAX_LINE, _Blocks

__all__ = [
    "NOMINAL_SECONDS",
    "OBSERVED_COLUMNS",
    "OBSERVED_FORMATS",
    "REORDER_WINDOW",
    "ObservedRow",
    "ObservedTotals",
    "in_start_order",
    "is_observed",
    "observed_totals",
    "read_observed",
]

OBSERVED_FORMATS = ("pytest-omnillm", "otel-genai", "litellm-spend")
"""Log formats that always carry observed timing."""

OBSERVED_COLUMNS = ("end", "duration", "status", "cost", "key")
"""Optional columns of the generic csv/jsonl formats; ``end`` or ``duration`` makes a log."""

NOMINAL_SECONDS = 1.0
"""Duration given to each request of a ``pytest-omnillm`` report (it records no times)."""

REORDER_WINDOW = 3600.0
"""How far (seconds of start time) a row may come after a later-starting one."""


class ObservedRow(NamedTuple):
    """One call of a log. ``start`` / ``end`` are absolute seconds (only differences matter).

    ``outcome`` is ``ok``, ``http_error`` (with ``status``), ``timeout`` or ``cancelled``;
    ``cost`` the observed bill in µ$ (``None``: the log has none); ``line`` where it was read.
    """

    start: float
    end: float
    model: str | None
    prompt_tokens: int
    output_tokens: int
    outcome: str
    status: int | None
    cost: MicroDollar | None
    key: str | None
    line: int

    @property
    def label(self) -> str:
        """The status as run reports name it: ``ok``, ``http_500``, ``timeout``, ..."""
        return f"http_{self.status}" if self.outcome == "http_error" else self.outcome


def is_observed(fmt: str, columns: Mapping[str, str] | None = None) -> bool:
    """Whether format ``fmt`` with these generic ``columns`` is a log with observed timing."""
    if fmt in OBSERVED_FORMATS:
        return True
    return fmt in ("csv", "jsonl") and bool(columns) and (
        "end" in columns or "duration" in columns  # type: ignore[operator]
    )


# -- field parsers (each raises TraceError naming file, line, column and value) ---------------


class _Where(NamedTuple):
    path: str
    line: int

    def error(self, column: str, expected: str, got: object) -> TraceError:
        return TraceError(self.path, self.line, column, expected, got)


def _tokens(at: _Where, column: str, raw: object, *, default: int | None = None) -> int:
    if raw is None or raw == "":
        if default is not None:
            return default
        raise at.error(column, "a token count (an integer >= 0)", raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, float) and raw.is_integer() and raw >= 0:
        return int(raw)
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    raise at.error(column, "a token count (an integer >= 0)", raw)


def _usd(at: _Where, column: str, raw: object) -> MicroDollar | None:
    if raw is None or raw == "":
        return None
    try:
        return usd_to_micro(raw.strip() if isinstance(raw, str) else raw,  # type: ignore[arg-type]
                            name=column)
    except (InvalidValueError, TypeError):
        raise at.error(column, "an amount of USD >= 0 (finite)", raw) from None


def _iso(at: _Where, column: str, raw: object) -> float:
    try:
        if not isinstance(raw, str):
            raise ValueError(raw)
        stamp = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise at.error(column, "an ISO 8601 timestamp", raw) from None
    if stamp.tzinfo is None:  # no zone: UTC, never the machine's local time
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _number(at: _Where, column: str, raw: object, expected: str) -> float:
    try:
        if isinstance(raw, bool) or raw is None:
            raise ValueError(raw)
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise at.error(column, expected, raw) from None
    if not math.isfinite(value) or value < 0:
        raise at.error(column, expected, raw)
    return value


def _time(at: _Where, column: str, raw: object, unit: str) -> float:
    if unit == "iso":
        return _iso(at, column, raw)
    if unit == "ns":
        return _number(at, column, raw, "Unix nanoseconds (an integer >= 0)") / 1e9
    expected = "milliseconds" if unit == "ms" else "seconds"
    value = _number(at, column, raw, f"a time in {expected} (a number >= 0)")
    return value / 1000.0 if unit == "ms" else value


_HTTP = re.compile(r"^(?:http_)?([1-5]\d\d)$")
_OK_WORDS = ("ok", "success", "succeeded", "completed", "stop")
_TIMEOUT_WORDS = ("timeout", "timed_out", "timedout", "deadline_exceeded")
_CANCEL_WORDS = ("cancelled", "canceled", "cancel")
_ERROR_WORDS = ("error", "failure", "failed")
STATUS_EXPECTED = ("a status: ok/success, an HTTP code (e.g. 429 or http_429), timeout, "
                   "cancelled, or error/failure")


def _status(at: _Where, column: str, raw: object) -> tuple[str, int | None]:
    """(outcome, http status) of a generic status value."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise at.error(column, STATUS_EXPECTED, raw)
    word = raw.strip().lower()
    match = _HTTP.match(word)
    if match:
        code = int(match.group(1))
        if code < 400:
            return "ok", None
        return "http_error", code
    if word in _OK_WORDS:
        return "ok", None
    if word in _TIMEOUT_WORDS:
        return "timeout", None
    if word in _CANCEL_WORDS:
        return "cancelled", None
    if word in _ERROR_WORDS:
        return "http_error", 500
    raise at.error(column, STATUS_EXPECTED, raw)


def _model(at: _Where, column: str, raw: object, *, required: bool) -> str | None:
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    if raw is None and not required:
        return None
    raise at.error(column, "a model name", raw)


def _row(at: _Where, start: float, end: float, end_column: str, raw_end: object,
         **fields: Any) -> ObservedRow:
    if end < start:
        raise at.error(end_column, "an end time >= the start time", raw_end)
    return ObservedRow(start=start, end=end, line=at.line, **fields)


# -- file readers -----------------------------------------------------------------------------


def _open(path: Path) -> Any:
    try:
        return path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise TraceError(str(path), 0, "<file>", "a readable log file", exc.strerror) from None


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSON-lines file; blank lines skipped."""
    name = str(path)
    with _open(path) as handle:
        try:
            # The trace readers' line source: a line over the length limit is refused.
            lines = _Blocks(name, handle, DEFAULT_MAX_LINE).lines()
            for line, text in enumerate(lines, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise TraceError(name, line, "<row>", f"a JSON object ({exc.msg})",
                                     text.rstrip("\r\n")[:200]) from None
                except RecursionError:
                    raise TraceError(name, line, "<row>", "a JSON object nested less deeply",
                                     text[:40] + "...") from None
                if not isinstance(record, dict):
                    raise TraceError(name, line, "<row>", "a JSON object", record)
                yield line, record
        except UnicodeDecodeError as exc:
            raise TraceError(name, 0, "<file>", "UTF-8 text", str(exc)) from None


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: value}) of a CSV file with a header row."""
    name = str(path)
    with _open(path) as handle:
        reader = csv.reader(handle)
        try:
            header: list[str] | None = None
            for fields in reader:
                if not fields:
                    continue
                if header is None:
                    header = [h.strip().lstrip("\ufeff") for h in fields]
                    continue
                if len(fields) != len(header):
                    raise TraceError(name, reader.line_num, "<row>", f"{len(header)} fields",
                                     ",".join(fields)[:200])
                yield reader.line_num, dict(zip(header, fields, strict=True))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(name, reader.line_num + 1, "<row>", "valid CSV", str(exc)) from None


def _json_array(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSON array of objects, decoded one element at a time."""
    name = str(path)
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line = 1 + text.count("\n", 0, pos)
    size = len(text)
    while True:
        while pos < size and text[pos] in " \t\r\n,":
            if text[pos] == "\n":
                line += 1
            pos += 1
        if pos >= size:
            raise TraceError(name, line, "<row>", "a closing ']'", "the end of the file")
        if text[pos] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise TraceError(name, exc.lineno, "<row>", f"a JSON object ({exc.msg})",
                             text[pos:pos + 80]) from None
        if not isinstance(record, dict):
            raise TraceError(name, line, "<row>", "a JSON object", record)
        yield line, record
        line += text.count("\n", pos, end)
        pos = end


def _first_char(path: Path) -> str:
    with _open(path) as handle:
        try:
            while True:
                chunk = handle.read(4096)
                if not chunk:
                    return ""
                stripped = chunk.lstrip().lstrip("\ufeff").lstrip()
                if stripped:
                    return str(stripped[0])
        except UnicodeDecodeError as exc:
            raise TraceError(str(path), 0, "<file>", "UTF-8 text", str(exc)) from None


# -- generic csv / jsonl ----------------------------------------------------------------------


def _generic(path: Path, fmt: str, columns: Mapping[str, str], unit: str
             ) -> Iterator[ObservedRow]:
    name = str(path)
    for needed in ("time", "prompt_tokens", "output_tokens"):
        if needed not in columns:
            raise ValueError(f"format {fmt!r} needs a column for {needed}")
    records: Iterable[tuple[int, Mapping[str, Any]]] = (
        _csv_records(path) if fmt == "csv" else _json_lines(path)
    )
    for line, record in records:
        at = _Where(name, line)

        def value(field: str, record: Mapping[str, Any] = record, at: _Where = at) -> Any:
            column = columns[field]
            if column not in record:
                raise at.error(column, f"a value for column {column!r}", "nothing")
            return record[column]

        raw_start = value("time")
        start = _time(at, columns["time"], raw_start, unit)
        if "end" in columns:
            raw_end = value("end")
            end, end_column = _time(at, columns["end"], raw_end, unit), columns["end"]
        else:
            raw_end = value("duration")
            seconds = _number(at, columns["duration"], raw_end,
                              "a duration in " + ("milliseconds" if unit == "ms" else "seconds"))
            end, end_column = start + (seconds / 1000.0 if unit == "ms" else seconds), \
                columns["duration"]
        outcome, status = ("ok", None)
        if "status" in columns:
            outcome, status = _status(at, columns["status"], value("status"))
        yield _row(
            at, start, end, end_column, raw_end,
            model=_model(at, columns["model"], value("model"), required=True)
            if "model" in columns else None,
            prompt_tokens=_tokens(at, columns["prompt_tokens"], value("prompt_tokens")),
            output_tokens=_tokens(at, columns["output_tokens"], value("output_tokens")),
            outcome=outcome,
            status=status,
            cost=_usd(at, columns["cost"], value("cost")) if "cost" in columns else None,
            key=str(value("key")) if "key" in columns else None,
        )


# -- pytest-omnillm ---------------------------------------------------------------------------

_NEVER_SENT = ("refused", "unknown-model", "unpriced", "open")


def _pytest_omnillm(path: Path) -> Iterator[ObservedRow]:
    name = str(path)
    with _open(path) as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError as exc:
            raise TraceError(name, 0, "<file>", "UTF-8 text", str(exc)) from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(name, exc.lineno, "<file>", f"a JSON report ({exc.msg})",
                         text[exc.pos:exc.pos + 40]) from None
    if not isinstance(report, dict) or report.get("version") != 1:
        got = report.get("version") if isinstance(report, dict) else report
        raise TraceError(name, 1, "version", "a pytest-omnillm --llm-report (version 1)", got)
    # Request records are written in document order, one "seq" key each: the i-th "seq"
    # line is the i-th record's, which lets errors name a line.
    seq_lines = [i for i, text_line in enumerate(text.splitlines(), start=1)
                 if text_line.lstrip().startswith('"seq":')]
    tests = report.get("tests")
    outside = report.get("outside_tests", [])
    if not isinstance(tests, list) or not isinstance(outside, list):
        raise TraceError(name, 1, "tests", "lists 'tests' and 'outside_tests'", type(tests))
    records: list[tuple[str, Any]] = []
    for i, test in enumerate(tests):
        requests = test.get("requests") if isinstance(test, dict) else None
        if not isinstance(requests, list):
            raise TraceError(name, 1, f"tests[{i}].requests", "a list of request records",
                             requests)
        records += [(f"tests[{i}].requests[{j}]", r) for j, r in enumerate(requests)]
    records += [(f"outside_tests[{j}]", r) for j, r in enumerate(outside)]
    clock = 0.0
    for index, (where, record) in enumerate(records):
        line = seq_lines[index] if index < len(seq_lines) else 1
        at = _Where(name, line)
        if not isinstance(record, dict):
            raise at.error(where, "a request record (a JSON object)", record)
        status = record.get("status")
        if not isinstance(status, str):
            raise at.error(f"{where}.status", "a record status", status)
        if status in _NEVER_SENT:
            continue
        detail = str(record.get("detail", ""))
        if status == "failed" and "never sent" in detail:
            continue
        tokens = record.get("tokens") or {}
        if not isinstance(tokens, dict):
            raise at.error(f"{where}.tokens", "an object of token counts", tokens)
        prompt = sum(_tokens(at, f"{where}.tokens.{k}", tokens.get(k), default=0)
                     for k in ("input", "cache_read", "cache_write", "cache_write_1h"))
        output = _tokens(at, f"{where}.tokens.output", tokens.get("output"), default=0)
        charged = record.get("charged", 0)
        if type(charged) is not int or charged < 0:
            raise at.error(f"{where}.charged", "micro-dollars (an integer >= 0)", charged)
        http = record.get("http_status")
        if status == "http-error":
            if type(http) is not int or not 400 <= http <= 599:
                raise at.error(f"{where}.http_status", "an HTTP error status 400-599", http)
            outcome, code = "http_error", http
        elif status == "failed":
            outcome, code = "timeout", None  # sent, then the connection failed: no reply
        elif status in ("ok", "no-usage", "unparsed"):
            outcome, code = "ok", None
        else:
            raise at.error(f"{where}.status", "a pytest-omnillm record status", status)
        model = _model(at, f"{where}.model", record.get("model"), required=True)
        yield ObservedRow(clock, clock + NOMINAL_SECONDS, model, prompt, output, outcome, code,
                          charged, None, line)
        clock += NOMINAL_SECONDS


# -- otel-genai -------------------------------------------------------------------------------


def _otlp_value(value: Any) -> Any:
    """The Python value of an OTLP/JSON ``AnyValue`` (ints arrive as strings)."""
    if not isinstance(value, dict):
        return value
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        raw = value["intValue"]
        return int(raw) if isinstance(raw, str) and raw.lstrip("-").isdigit() else raw
    if "arrayValue" in value:
        return [_otlp_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(at: _Where, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        out = {}
        for item in raw:
            if not isinstance(item, dict) or "key" not in item:
                raise at.error("attributes", "OTLP key/value pairs", item)
            out[str(item["key"])] = _otlp_value(item.get("value"))
        return out
    raise at.error("attributes", "an attribute list or object", raw)


def _spans(at: _Where, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "resourceSpans" not in record:
        yield record
        return
    for resource in record["resourceSpans"] or []:
        scopes = resource.get("scopeSpans") or resource.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            yield from scope.get("spans") or []


def _span_time(at: _Where, span: dict[str, Any], *names: str) -> tuple[float, str, Any]:
    for name in names:
        if name in span:
            return _time(at, name, span[name], "ns"), name, span[name]
    raise at.error(names[0], "Unix nanoseconds (an integer >= 0)", "nothing")


def _otel_outcome(at: _Where, span: dict[str, Any], attrs: dict[str, Any]
                  ) -> tuple[str, int | None]:
    http = attrs.get("http.response.status_code", attrs.get("http.status_code"))
    if http is not None:
        code = _tokens(at, "http.response.status_code", http)
        if code >= 400:
            if code > 599:
                raise at.error("http.response.status_code", "an HTTP status code", http)
            return "http_error", code
    error = attrs.get("error.type")
    if error is not None and str(error).strip():
        word = str(error).strip().lower()
        if "timeout" in word or "timedout" in word or "deadline" in word:
            return "timeout", None
        if "cancel" in word:
            return "cancelled", None
        match = _HTTP.match(word)
        if match and int(match.group(1)) >= 400:
            return "http_error", int(match.group(1))
        return "http_error", 500
    status = span.get("status")
    if isinstance(status, dict) and status.get("code") in (2, "STATUS_CODE_ERROR", "ERROR"):
        return "http_error", 500
    return "ok", None


def _otel_genai(path: Path) -> Iterator[ObservedRow]:
    name = str(path)
    for line, record in _json_lines(path):
        at = _Where(name, line)
        for span in _spans(at, record):
            if not isinstance(span, dict):
                raise at.error("<span>", "a span object", span)
            attrs = _attributes(at, span.get("attributes"))
            model_key = next((k for k in ("gen_ai.request.model", "gen_ai.response.model")
                              if attrs.get(k)), None)
            if model_key is None:
                continue  # not a GenAI client span
            start, _, _ = _span_time(at, span, "startTimeUnixNano", "start_time_unix_nano")
            end, end_name, raw_end = _span_time(at, span, "endTimeUnixNano",
                                                "end_time_unix_nano")
            inputs = attrs.get("gen_ai.usage.input_tokens",
                               attrs.get("gen_ai.usage.prompt_tokens"))
            outputs = attrs.get("gen_ai.usage.output_tokens",
                                attrs.get("gen_ai.usage.completion_tokens"))
            outcome, status = _otel_outcome(at, span, attrs)
            yield _row(
                at, start, end, end_name, raw_end,
                model=_model(at, model_key, attrs[model_key], required=True),
                prompt_tokens=_tokens(at, "gen_ai.usage.input_tokens", inputs, default=0),
                output_tokens=_tokens(at, "gen_ai.usage.output_tokens", outputs, default=0),
                outcome=outcome,
                status=status,
                cost=None,
                key=None,
            )


# -- litellm-spend ----------------------------------------------------------------------------


def _litellm_error_code(metadata: Any) -> int:
    if isinstance(metadata, str) and metadata.strip().startswith("{"):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            return 500
    if isinstance(metadata, dict):
        info = metadata.get("error_information")
        if isinstance(info, dict):
            code = str(info.get("error_code", "")).strip()
            if code.isdigit() and 400 <= int(code) <= 599:
                return int(code)
    return 500


def _litellm_spend(path: Path) -> Iterator[ObservedRow]:
    name = str(path)
    first = _first_char(path)
    records: Iterable[tuple[int, Mapping[str, Any]]]
    if first == "[":
        with _open(path) as handle:
            records = _json_array(path, handle.read())
    elif first == "{":
        records = _json_lines(path)
    else:
        records = _csv_records(path)
    for line, record in records:
        at = _Where(name, line)

        def value(column: str, record: Mapping[str, Any] = record, at: _Where = at) -> Any:
            if column not in record:
                raise at.error(column, f"a value for column {column!r}", "nothing")
            return record[column]

        start = _iso(at, "startTime", value("startTime"))
        raw_end = value("endTime")
        end = _iso(at, "endTime", raw_end)
        raw_status = record.get("status") or "success"
        word = str(raw_status).strip().lower()
        if word == "success":
            outcome, status = "ok", None
        elif word == "failure":
            outcome, status = "http_error", _litellm_error_code(record.get("metadata"))
        else:
            raise at.error("status", "'success' or 'failure'", raw_status)
        key = record.get("api_key")
        yield _row(
            at, start, end, "endTime", raw_end,
            model=_model(at, "model", value("model"), required=True),
            prompt_tokens=_tokens(at, "prompt_tokens", record.get("prompt_tokens"), default=0),
            output_tokens=_tokens(at, "completion_tokens", record.get("completion_tokens"),
                                  default=0),
            outcome=outcome,
            status=status,
            cost=_usd(at, "spend", value("spend")),
            key=str(key) if key else None,
        )


_READERS: dict[str, Callable[[Path], Iterator[ObservedRow]]] = {
    "pytest-omnillm": _pytest_omnillm,
    "otel-genai": _otel_genai,
    "litellm-spend": _litellm_spend,
}


def read_observed(
    path: str | Path,
    fmt: str,
    *,
    columns: Mapping[str, str] | None = None,
    time_unit: str = "s",
) -> Iterator[ObservedRow]:
    """Stream the rows of log ``path`` in format ``fmt``, in file order.

    Raises:
        TraceError: unreadable file or a malformed row (raised while iterating).
        ValueError: an unknown format, or a generic format without the needed columns.
    """
    path = Path(path)
    if fmt in _READERS:
        return _READERS[fmt](path)
    if fmt in ("csv", "jsonl") and is_observed(fmt, columns):
        assert columns is not None
        return _generic(path, fmt, dict(columns), time_unit)
    raise ValueError(f"format {fmt!r} is not a log with observed timing "
                     "(csv/jsonl need an 'end' or 'duration' column)")


def in_start_order(
    rows: Iterable[ObservedRow], path: str, window: float = REORDER_WINDOW
) -> Iterator[ObservedRow]:
    """``rows`` sorted by start time (ties: file order), with a buffer of ``window`` seconds.

    Raises:
        TraceError: a row starts more than ``window`` seconds before one already read.
    """
    heap: list[tuple[float, int, ObservedRow]] = []
    latest = -math.inf
    emitted = -math.inf
    for n, row in enumerate(rows):
        if row.start < emitted:
            raise TraceError(path, row.line, "start",
                             f"a start at most {window:g}s before a later-starting row read "
                             "earlier (rows are sorted within that window)", row.start)
        heapq.heappush(heap, (row.start, n, row))
        latest = max(latest, row.start)
        while heap and heap[0][0] <= latest - window:
            emitted = heap[0][0]
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


@dataclass(frozen=True, slots=True)
class ObservedTotals:
    """What a log says happened ("as it happened"), computed from its rows alone.

    ``spent`` sums the rows' costs, pricing ``ok`` rows without one with the run's price
    table; failed rows without a cost count 0. Latencies are ``end - start`` of ``ok`` rows,
    percentiles nearest-rank (as in run metrics).
    """

    requests: int
    ok: int
    statuses: tuple[tuple[str, int], ...]
    spent: MicroDollar
    latencies: tuple[float, ...]
    length: float
    peak_in_flight: int
    keys: int

    def percentile(self, q: float) -> float | None:
        """Nearest-rank ``q``-th percentile of the ok latencies."""
        values = self.latencies
        if not values:
            return None
        return values[max(1, math.ceil(q / 100.0 * len(values))) - 1]

    @property
    def mean_latency(self) -> float | None:
        """Mean ok latency."""
        return math.fsum(self.latencies) / len(self.latencies) if self.latencies else None


def observed_totals(
    rows: Iterable[ObservedRow], prices: PriceTable, models: Mapping[str, str] | None = None,
    default_model: str = "gpt-4o",
) -> ObservedTotals:
    """The totals of a log (see `ObservedTotals`); ``models`` renames models as a replay does.

    Raises:
        UnknownModelError: an ``ok`` row without cost whose model the table cannot price.
    """
    renames = dict(models or {})
    statuses: Counter[str] = Counter()
    spent = 0
    latencies: list[float] = []
    events: list[tuple[float, int]] = []
    keys: set[str] = set()
    first, last = math.inf, -math.inf
    for row in rows:
        statuses[row.label] += 1
        if row.cost is not None:
            spent += row.cost
        elif row.outcome == "ok":
            model = renames.get(row.model, row.model) if row.model else default_model
            spent += prices.cost(model, Usage(row.prompt_tokens, row.output_tokens))
        if row.outcome == "ok":
            latencies.append(row.end - row.start)
        events += [(row.start, 1), (row.end, -1)]
        if row.key:
            keys.add(row.key)
        first, last = min(first, row.start), max(last, row.end)
    peak = level = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts on ties
        level += delta
        peak = max(peak, level)
    return ObservedTotals(
        requests=sum(statuses.values()),
        ok=statuses["ok"],
        statuses=tuple(sorted(statuses.items())),
        spent=spent,
        latencies=tuple(sorted(latencies)),
        length=last - first if statuses else 0.0,
        peak_in_flight=peak,
        keys=len(keys),
    )
