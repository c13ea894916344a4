"""Streaming readers of real request traces: ``azure``, ``burstgpt`` and generic CSV/JSONL.

Each reader is a generator of `TraceRow` (seconds since the trace's first row, prompt and
output tokens, model, failed flag) that reads one line at a time, so memory does not grow with
the trace. A malformed row stops the read with a `TraceError` naming the file, the line
number, the column and the bad value.

Formats:

* ``azure`` — ``TIMESTAMP,ContextTokens,GeneratedTokens`` (Azure LLM inference trace 2023):
  CRLF line endings, no final newline, timestamps like ``2023-11-16 18:15:46.6805900``
  (7 fractional digits; `datetime.fromisoformat` reads them, ``strptime("%f")`` does not).
* ``burstgpt`` — ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``;
  ``Timestamp`` in seconds; a row with 0 response tokens is a failed request.
* ``csv`` / ``jsonl`` — named columns chosen by the scenario (``time``, ``prompt_tokens``,
  ``output_tokens`` and optionally ``model``); ``time_unit`` is ``s``, ``ms`` or ``iso``.

Rows must be in time order (a replay cannot go back in time).

Speed: the ``azure`` reader converts blocks of about 64 KiB at a time with C-level ``map``
calls (timestamps, token counts, order check, rows), which keeps it within about twice the
time of `csv.reader` alone (``python -m benchmarks --only ingest``). A block that does not
convert cleanly (a quote, a blank line, a bad value) is re-read row by row, so errors name the
same line and rows before a bad one are still yielded first.
"""

from __future__ import annotations

import csv
import itertools
import json
import operator
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, NamedTuple

from omnillm_sim.errors import TraceError

__all__ = ["AZURE_HEADER", "BURSTGPT_HEADER", "TraceRow", "read_trace"]

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_HEADER = (
    "Timestamp",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
)


class TraceRow(NamedTuple):
    """One request of a trace; ``time`` is seconds since the first row (an immutable tuple)."""

    time: float
    prompt_tokens: int
    output_tokens: int
    model: str | None = None
    failed: bool = False


def _tokens(path: str, line: int, column: str, raw: str) -> int:
    text = raw.strip()
    if not text.isdigit():
        raise TraceError(path, line, column, "a token count (an integer >= 0)", raw)
    return int(text)


def _seconds(path: str, line: int, column: str, raw: object, unit: str) -> float:
    try:
        if unit == "iso":
            if not isinstance(raw, str):
                raise ValueError(raw)
            stamp = datetime.fromisoformat(raw.strip())
            if stamp.tzinfo is None:  # no zone: read as UTC, never the machine's local time
                stamp = stamp.replace(tzinfo=UTC)
            return stamp.timestamp()
        if isinstance(raw, bool):
            raise ValueError(raw)
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)  # type: ignore[arg-type]
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(raw)
        return value / 1000.0 if unit == "ms" else value
    except (ValueError, TypeError):
        expected = {"iso": "an ISO 8601 timestamp", "ms": "milliseconds", "s": "seconds"}[unit]
        raise TraceError(path, line, column, expected, raw) from None


class _Clock:
    """Turns absolute row times into seconds since the first row; rejects going backwards."""

    def __init__(self, path: str, column: str) -> None:
        self.path = path
        self.column = column
        self.first: float | None = None
        self.last = float("-inf")

    def __call__(self, line: int, absolute: float, raw: object) -> float:
        if absolute < self.last:
            raise TraceError(
                self.path, line, self.column, "a time >= the previous row's (sorted rows)", raw
            )
        self.last = absolute
        if self.first is None:
            self.first = absolute
        return absolute - self.first


def _open(path: Path) -> IO[str]:
    try:
        return path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise TraceError(str(path), 0, "<file>", "a readable trace file", exc.strerror) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a CSV file, CRLF or LF, with or without a final newline."""
    handle = _open(path)
    with handle:
        reader = csv.reader(handle)
        try:
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(
                str(path), reader.line_num + 1, "<row>", "valid CSV", str(exc)
            ) from None


def _check_header(path: str, header: list[str], expected: tuple[str, ...]) -> None:
    if tuple(h.strip().lstrip("\ufeff") for h in header) != expected:
        raise TraceError(path, 1, "<header>", ",".join(expected), ",".join(header))


def _fields(path: str, line: int, fields: list[str], names: tuple[str, ...]) -> dict[str, str]:
    if len(fields) != len(names):
        raise TraceError(path, line, "<row>", f"{len(names)} fields", ",".join(fields))
    return dict(zip(names, fields, strict=True))


class _StampClock:
    """Azure times: seconds since the first row, exact to the microsecond (datetime arithmetic).

    A timestamp without a zone is read as UTC. ``first`` and ``last`` are kept naive in UTC.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.first: datetime | None = None
        self.last: datetime | None = None

    def __call__(self, line: int, raw: str) -> float:
        try:
            stamp = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise TraceError(self.path, line, "TIMESTAMP", "an ISO 8601 timestamp", raw) from None
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(UTC).replace(tzinfo=None)
        if self.last is not None and stamp < self.last:
            raise TraceError(
                self.path, line, "TIMESTAMP", "a time >= the previous row's (sorted rows)", raw
            )
        self.last = stamp
        if self.first is None:
            self.first = stamp
        return (stamp - self.first).total_seconds()


_BLOCK_BYTES = 1 << 16
_fromiso = datetime.fromisoformat
_total_seconds = timedelta.total_seconds
_new_row = tuple.__new__


def _azure_block(lines: list[str], clock: _StampClock) -> list[TraceRow] | None:
    """The rows of ``lines`` (no quotes), converted with C-level maps; ``None`` if any line
    needs the row-by-row reader (which then words the error)."""
    commas = list(map(str.count, lines, itertools.repeat(",")))
    if min(commas) != 2 or max(commas) != 2:  # also catches blank lines
        return None
    # Every line has three fields: turn line ends into commas and split once.
    text = "".join(lines).rstrip("\r\n")
    flat = text.replace("\r\n", ",").replace("\n", ",").replace("\r", ",").split(",")
    prompts, outputs = flat[1::3], flat[2::3]
    if not all(map(str.isdecimal, prompts)) or not all(map(str.isdecimal, outputs)):
        return None
    try:
        stamps = list(map(_fromiso, flat[0::3]))
    except ValueError:
        return None
    if set(map(operator.attrgetter("tzinfo"), stamps)) != {None}:
        return None
    first = clock.first if clock.first is not None else stamps[0]
    previous = [clock.last if clock.last is not None else first, *stamps[:-1]]
    if not all(map(operator.le, previous, stamps)):
        return None
    clock.first, clock.last = first, stamps[-1]
    times = map(_total_seconds, map(operator.sub, stamps, itertools.repeat(first)))
    return list(map(_new_row, itertools.repeat(TraceRow), zip(
        times, map(int, prompts), map(int, outputs),
        itertools.repeat(None), itertools.repeat(False),
    )))


def _azure_rows(
    name: str, lines: Iterable[str], clock: _StampClock, offset: int
) -> Iterator[TraceRow]:
    """Row by row, with exact errors; ``offset`` is the number of lines before ``lines``."""
    reader = csv.reader(lines)
    try:
        for fields in reader:
            if not fields:
                continue
            line = offset + reader.line_num
            row = _fields(name, line, fields, AZURE_HEADER)
            yield TraceRow(
                time=clock(line, row["TIMESTAMP"]),
                prompt_tokens=_tokens(name, line, "ContextTokens", row["ContextTokens"]),
                output_tokens=_tokens(name, line, "GeneratedTokens", row["GeneratedTokens"]),
            )
    except (csv.Error, UnicodeDecodeError) as exc:
        raise TraceError(name, offset + reader.line_num + 1, "<row>", "valid CSV",
                         str(exc)) from None


def _azure(path: Path) -> Iterator[TraceRow]:
    name = str(path)
    handle = _open(path)
    with handle:
        try:
            head = handle.readline()
        except UnicodeDecodeError as exc:
            raise TraceError(name, 1, "<row>", "valid CSV", str(exc)) from None
        header = next(csv.reader([head]), None) if head else None
        if header is None:
            raise TraceError(name, 1, "<header>", ",".join(AZURE_HEADER), "an empty file")
        _check_header(name, header, AZURE_HEADER)
        clock = _StampClock(name)
        offset = 1
        while True:
            try:
                lines = handle.readlines(_BLOCK_BYTES)
            except UnicodeDecodeError as exc:
                raise TraceError(name, offset + 1, "<row>", "valid CSV", str(exc)) from None
            if not lines:
                return
            if any(map(operator.contains, lines, itertools.repeat('"'))):
                # Quoted fields may span lines: read the rest with the csv module, row by row.
                yield from _azure_rows(name, itertools.chain(lines, handle), clock, offset)
                return
            rows = _azure_block(lines, clock)
            if rows is None:
                yield from _azure_rows(name, lines, clock, offset)
            else:
                yield from rows
            offset += len(lines)


def _burstgpt(path: Path) -> Iterator[TraceRow]:
    name = str(path)
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise TraceError(name, 1, "<header>", ",".join(BURSTGPT_HEADER), "an empty file")
    _check_header(name, first[1], BURSTGPT_HEADER)
    clock = _Clock(name, "Timestamp")
    for line, fields in rows:
        row = _fields(name, line, fields, BURSTGPT_HEADER)
        absolute = _seconds(name, line, "Timestamp", row["Timestamp"], "s")
        model = row["Model"].strip()
        if not model:
            raise TraceError(name, line, "Model", "a model name", row["Model"])
        output = _tokens(name, line, "Response tokens", row["Response tokens"])
        yield TraceRow(
            time=clock(line, absolute, row["Timestamp"]),
            prompt_tokens=_tokens(name, line, "Request tokens", row["Request tokens"]),
            output_tokens=output,
            model=model,
            failed=output == 0,
        )


def _generic(
    name: str, line: int, record: Mapping[str, Any], columns: Mapping[str, str], unit: str,
    clock: _Clock,
) -> TraceRow:
    def value(field: str) -> Any:
        column = columns[field]
        if column not in record:
            raise TraceError(name, line, column, f"a value for column {column!r}", "nothing")
        return record[column]

    def tokens(field: str) -> int:
        raw = value(field)
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        if isinstance(raw, str):
            return _tokens(name, line, columns[field], raw)
        raise TraceError(name, line, columns[field], "a token count (an integer >= 0)", raw)

    raw_time = value("time")
    absolute = _seconds(name, line, columns["time"], raw_time, unit)
    model = None
    if "model" in columns:
        raw_model = value("model")
        if not isinstance(raw_model, str) or not raw_model.strip():
            raise TraceError(name, line, columns["model"], "a model name", raw_model)
        model = raw_model.strip()
    output = tokens("output_tokens")
    return TraceRow(
        time=clock(line, absolute, raw_time),
        prompt_tokens=tokens("prompt_tokens"),
        output_tokens=output,
        model=model,
    )


def _generic_csv(path: Path, columns: Mapping[str, str], unit: str) -> Iterator[TraceRow]:
    name = str(path)
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise TraceError(name, 1, "<header>", "a header row naming the columns", "an empty file")
    header = [h.strip().lstrip("\ufeff") for h in first[1]]
    for field, column in columns.items():
        if column not in header:
            raise TraceError(name, 1, "<header>", f"a column {column!r} (for {field})",
                             ",".join(header))
    clock = _Clock(name, columns["time"])
    for line, fields in rows:
        if len(fields) != len(header):
            raise TraceError(name, line, "<row>", f"{len(header)} fields", ",".join(fields))
        yield _generic(name, line, dict(zip(header, fields, strict=True)), columns, unit, clock)


def _jsonl(path: Path, columns: Mapping[str, str], unit: str) -> Iterator[TraceRow]:
    name = str(path)
    clock = _Clock(name, columns["time"])
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise TraceError(name, 0, "<file>", "a readable trace file", exc.strerror) from None
    with handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceError(name, line, "<row>", f"a JSON object ({exc.msg})",
                                 text.rstrip("\r\n")) from None
            if not isinstance(record, dict):
                raise TraceError(name, line, "<row>", "a JSON object", record)
            yield _generic(name, line, record, columns, unit, clock)


def read_trace(
    path: str | Path,
    fmt: str,
    *,
    columns: Mapping[str, str] | None = None,
    time_unit: str = "s",
) -> Iterator[TraceRow]:
    """Stream the rows of a trace file in format ``fmt`` (see the module docstring).

    Raises:
        TraceError: unreadable file, wrong header, or a malformed row (raised while iterating).
        ValueError: an unknown format, or a generic format without the needed columns.
    """
    path = Path(path)
    if fmt == "azure":
        return _azure(path)
    if fmt == "burstgpt":
        return _burstgpt(path)
    if fmt in ("csv", "jsonl"):
        columns = dict(columns or {})
        missing = [c for c in ("time", "prompt_tokens", "output_tokens") if c not in columns]
        if missing:
            raise ValueError(f"format {fmt!r} needs columns for {', '.join(missing)}")
        if fmt == "csv":
            return _generic_csv(path, columns, time_unit)
        return _jsonl(path, columns, time_unit)
    raise ValueError(f"unknown trace format {fmt!r}")
