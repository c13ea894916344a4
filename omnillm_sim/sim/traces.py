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

Rows must be in time order (a replay cannot go back in time). Files are UTF-8 (a UTF-8
byte-order mark is accepted); token counts are ASCII digits (no ``1_000``, no ``１``) up to
`MAX_TOKENS`; a line longer than ``max_line_length`` characters (default 1 Mi) stops the read
with an error before it fills the memory (a trace that is one endless line, like /dev/zero).

Speed: the ``azure`` reader converts blocks of about 64 KiB at a time with C-level ``map``
calls (timestamps, token counts, order check, rows), which keeps it within about twice the
time of `csv.reader` alone (``python -m benchmarks --only ingest``). A block that does not
convert cleanly (a quote, a blank line, a bad value) is re-read row by row, so errors name the
same line and rows before a bad one are still yielded first.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import operator
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, NamedTuple

from omnillm_sim.errors import ConfigError, TraceError

__all__ = ["AZURE_HEADER", "BURSTGPT_HEADER", "MAX_TOKENS", "TraceRow", "read_trace"]

MAX_TOKENS = 1_000_000_000
"""Largest token count a trace row may carry (beyond any model's context window)."""
DEFAULT_MAX_LINE = 1 << 20
_TOKENS_EXPECTED = f"a token count (an integer from 0 to {MAX_TOKENS:,})"
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)

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
    # isdigit alone accepts "²" and "１"; the length check comes before int() (4,300 digits)
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or int(text) > MAX_TOKENS:
        raise TraceError(path, line, column, _TOKENS_EXPECTED, raw)
    return int(text)


def _seconds(path: str, line: int, column: str, raw: object, unit: str) -> float:
    try:
        if unit == "iso":
            if not isinstance(raw, str) or not raw.isascii():
                raise ValueError(raw)
            stamp = datetime.fromisoformat(raw.strip())
            if stamp.tzinfo is None:  # no zone: read as UTC, never the machine's local time
                stamp = stamp.replace(tzinfo=UTC)
            return stamp.timestamp()
        if isinstance(raw, bool):
            raise ValueError(raw)
        if isinstance(raw, str) and not _NUMBER_RE.fullmatch(raw.strip()):
            raise ValueError(raw)  # float() also takes "1_000", "１２" and "nan"
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)  # type: ignore[arg-type]
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(raw)
        return value / 1000.0 if unit == "ms" else value
    except (ValueError, TypeError, OverflowError):
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
        return path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise TraceError(str(path), 0, "<file>", "a readable trace file",
                         exc.strerror or str(exc)) from None


def _not_utf8(name: str, line: int, exc: UnicodeDecodeError) -> TraceError:
    if exc.object[:2] in (b"\xff\xfe", b"\xfe\xff") and line <= 1:
        got = "UTF-16 text (save the file as UTF-8)"
    else:
        got = (f"byte 0x{exc.object[exc.start]:02x}, which is not UTF-8 (Latin-1 or binary? "
               "save the file as UTF-8)")
    return TraceError(name, line, "<row>", "UTF-8 text", got)


class _Blocks:
    """Reads a text file in blocks of whole lines, refusing a line over ``max_line`` chars."""

    def __init__(self, name: str, handle: IO[str], max_line: int) -> None:
        self.name = name
        self.handle = handle
        self.max_line = max_line
        self.lines_read = 0
        self._rest = ""
        self._done = False

    def block(self, size: int = 1 << 16) -> list[str]:
        """The next lines (each with its line end), about ``size`` characters; [] at the end."""
        text = ""
        while not text and not self._done:
            try:
                chunk = self.handle.read(size)
            except UnicodeDecodeError as exc:
                raise _not_utf8(self.name, self.lines_read + 1, exc) from None
            if not chunk:
                self._done = True
                text, self._rest = self._rest, ""
                break
            text = self._rest + chunk
            cut = text.rfind("\n") + 1
            text, self._rest = text[:cut], text[cut:]
            if len(self._rest) > self.max_line:
                raise TraceError(self.name, self.lines_read + text.count("\n") + 1, "<row>",
                                 f"a line of at most {self.max_line:,} characters (raise "
                                 "limits.line_length for longer ones)",
                                 f"a longer line starting {self._rest[:40]!r}")
        if not text:
            return []
        lines = io.StringIO(text, newline="").readlines()
        if max(map(len, lines)) > self.max_line + 2:  # + the line end
            at = next(i for i, line in enumerate(lines) if len(line) > self.max_line + 2)
            raise TraceError(self.name, self.lines_read + at + 1, "<row>",
                             f"a line of at most {self.max_line:,} characters (raise "
                             "limits.line_length for longer ones)",
                             f"a longer line starting {lines[at][:40]!r}")
        self.lines_read += len(lines)
        return lines

    def lines(self) -> Iterator[str]:
        """Every remaining line, one at a time."""
        while block := self.block():
            yield from block


def _csv_rows(path: Path, max_line: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a CSV file, CRLF or LF, with or without a final newline."""
    handle = _open(path)
    with handle:
        reader = csv.reader(_Blocks(str(path), handle, max_line).lines())
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
    if not text.isascii():  # "１０" is decimal to Python; the row reader words the error
        return None
    flat = text.replace("\r\n", ",").replace("\n", ",").replace("\r", ",").split(",")
    prompts, outputs = flat[1::3], flat[2::3]
    if not all(map(str.isdecimal, prompts)) or not all(map(str.isdecimal, outputs)):
        return None
    if max(map(len, prompts)) > 9 or max(map(len, outputs)) > 9:  # may exceed MAX_TOKENS
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


def _azure(path: Path, max_line: int) -> Iterator[TraceRow]:
    name = str(path)
    handle = _open(path)
    with handle:
        blocks = _Blocks(name, handle, max_line)
        first = blocks.block(_BLOCK_BYTES)
        header = next(csv.reader(first[:1]), None) if first else None
        if header is None:
            raise TraceError(name, 1, "<header>", ",".join(AZURE_HEADER), "an empty file")
        _check_header(name, header, AZURE_HEADER)
        clock = _StampClock(name)
        offset = 1
        lines = first[1:]
        while True:
            if lines:
                if any(map(operator.contains, lines, itertools.repeat('"'))):
                    # Quoted fields may span lines: read the rest with the csv module.
                    yield from _azure_rows(name, itertools.chain(lines, blocks.lines()), clock,
                                           offset)
                    return
                rows = _azure_block(lines, clock)
                if rows is None:
                    yield from _azure_rows(name, lines, clock, offset)
                else:
                    yield from rows
                offset += len(lines)
            lines = blocks.block(_BLOCK_BYTES)
            if not lines:
                return


def _burstgpt(path: Path, max_line: int) -> Iterator[TraceRow]:
    name = str(path)
    rows = _csv_rows(path, max_line)
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
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= MAX_TOKENS:
            return raw
        if isinstance(raw, str):
            return _tokens(name, line, columns[field], raw)
        raise TraceError(name, line, columns[field], _TOKENS_EXPECTED, raw)

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


def _generic_csv(
    path: Path, columns: Mapping[str, str], unit: str, max_line: int
) -> Iterator[TraceRow]:
    name = str(path)
    rows = _csv_rows(path, max_line)
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


def _jsonl(
    path: Path, columns: Mapping[str, str], unit: str, max_line: int
) -> Iterator[TraceRow]:
    name = str(path)
    clock = _Clock(name, columns["time"])
    handle = _open(path)
    with handle:
        for line, text in enumerate(_Blocks(name, handle, max_line).lines(), start=1):
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
            except ValueError as exc:  # an integer of more than 4,300 digits
                raise TraceError(name, line, "<row>", "numbers of a sensible size",
                                 str(exc)) from None
            if not isinstance(record, dict):
                raise TraceError(name, line, "<row>", "a JSON object", record)
            yield _generic(name, line, record, columns, unit, clock)


def read_trace(
    path: str | Path,
    fmt: str,
    *,
    columns: Mapping[str, str] | None = None,
    time_unit: str = "s",
    max_line_length: int = DEFAULT_MAX_LINE,
) -> Iterator[TraceRow]:
    """Stream the rows of a trace file in format ``fmt`` (see the module docstring).

    Raises:
        TraceError: unreadable or non-UTF-8 file, wrong header, a line longer than
            ``max_line_length`` characters, or a malformed row (raised while iterating).
        ConfigError: an unknown format, or a generic format without the needed columns.
    """
    path = Path(path)
    if fmt == "azure":
        return _azure(path, max_line_length)
    if fmt == "burstgpt":
        return _burstgpt(path, max_line_length)
    if fmt in ("csv", "jsonl"):
        columns = dict(columns or {})
        missing = [c for c in ("time", "prompt_tokens", "output_tokens") if c not in columns]
        if missing:
            raise ConfigError("--column", ", ".join(missing),
                              f"must be given: format {fmt!r} needs columns for them")
        if fmt == "csv":
            return _generic_csv(path, columns, time_unit, max_line_length)
        return _jsonl(path, columns, time_unit, max_line_length)
    raise ConfigError("format", fmt, "must be azure, burstgpt, csv or jsonl")
