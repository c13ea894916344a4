"""Trace readers: the Azure file's quirks, BurstGPT, generic CSV/JSONL, and error messages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from simhelpers import AZURE_TRACE

from omnillm_sim.errors import TraceError
from omnillm_sim.sim.traces import read_trace

AZURE_ROWS = [
    "TIMESTAMP,ContextTokens,GeneratedTokens",
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:47.1805900,396,109",
    "2023-11-16 18:15:48.9305900,879,1",
    "2023-11-16 18:16:46.6805900,2,1000",
]


def write_azure(path: Path, rows: list[str]) -> Path:
    # The real file's quirks: CRLF line endings and no newline after the last row.
    path.write_bytes("\r\n".join(rows).encode())
    return path


def test_azure_quirks_crlf_no_final_newline_seven_digit_fractions(tmp_path: Path) -> None:
    path = write_azure(tmp_path / "azure.csv", AZURE_ROWS)
    assert path.read_bytes().endswith(b"1000") and b"\r\n" in path.read_bytes()
    rows = list(read_trace(path, "azure"))
    assert [r.time for r in rows] == pytest.approx([0.0, 0.5, 2.25, 60.0], abs=1e-6)
    assert [(r.prompt_tokens, r.output_tokens) for r in rows] == [
        (374, 44), (396, 109), (879, 1), (2, 1000)]
    assert all(r.model is None and not r.failed for r in rows)


def test_azure_reader_also_takes_lf_and_a_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "lf.csv"
    path.write_text("\n".join(AZURE_ROWS) + "\n", encoding="utf-8")
    assert len(list(read_trace(path, "azure"))) == 4


@pytest.mark.parametrize(
    ("row", "line", "column", "got"),
    [
        ("2023-11-16 18:15:49.1,abc,5", 3, "ContextTokens", "abc"),
        ("2023-11-16 18:15:49.1,5,-3", 3, "GeneratedTokens", "-3"),
        ("yesterday,5,3", 3, "TIMESTAMP", "yesterday"),
        ("2023-11-16 18:15:40.0,5,3", 3, "TIMESTAMP", "2023-11-16 18:15:40.0"),
        ("2023-11-16 18:15:49.1,5", 3, "<row>", "2023-11-16 18:15:49.1,5"),
    ],
)
def test_azure_malformed_row_names_file_line_column_and_value(
    tmp_path: Path, row: str, line: int, column: str, got: str
) -> None:
    path = write_azure(tmp_path / "bad.csv", [*AZURE_ROWS[:2], row, *AZURE_ROWS[3:]])
    with pytest.raises(TraceError) as info:
        list(read_trace(path, "azure"))
    err = info.value
    assert (err.path, err.line, err.column, err.got) == (str(path), line, column, got)
    assert str(err).startswith(f"{path}:{line}: column {column!r}: expected ")


def test_azure_wrong_header_and_empty_file(tmp_path: Path) -> None:
    path = write_azure(tmp_path / "h.csv", ["time,in,out", "1,2,3"])
    with pytest.raises(TraceError, match=r"h\.csv:1: column '<header>': expected "
                       r"TIMESTAMP,ContextTokens,GeneratedTokens, got 'time,in,out'"):
        list(read_trace(path, "azure"))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(TraceError, match="an empty file"):
        list(read_trace(empty, "azure"))
    with pytest.raises(TraceError, match="readable trace file"):
        list(read_trace(tmp_path / "absent.csv", "azure"))


def test_reader_streams_rows_before_reaching_a_bad_one(tmp_path: Path) -> None:
    rows = [*AZURE_ROWS[:3], "garbage,1,1"]
    it = read_trace(write_azure(tmp_path / "s.csv", rows), "azure")
    assert next(it).prompt_tokens == 374  # the bad line 4 has not been read yet
    assert next(it).prompt_tokens == 396
    with pytest.raises(TraceError) as info:
        next(it)
    assert info.value.line == 4


def test_burstgpt_rows_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "burst.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "5.5,GPT-4,1000,0,1000,API log\n"
        "9,ChatGPT,30,70,100,Conversation log\n", encoding="utf-8")
    rows = list(read_trace(path, "burstgpt"))
    assert [r.time for r in rows] == [0.0, 0.5, 4.0]
    assert [r.model for r in rows] == ["ChatGPT", "GPT-4", "ChatGPT"]
    assert [r.failed for r in rows] == [False, True, False]
    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text().replace("9,ChatGPT,30", "9,ChatGPT,lots"), encoding="utf-8")
    with pytest.raises(TraceError) as info:
        list(read_trace(bad, "burstgpt"))
    assert (info.value.line, info.value.column, info.value.got) == (4, "Request tokens", "lots")


def test_generic_csv_and_jsonl_with_named_columns(tmp_path: Path) -> None:
    columns = {"time": "ts", "prompt_tokens": "in", "output_tokens": "out", "model": "m"}
    csv_path = tmp_path / "g.csv"
    csv_path.write_text("m,ts,in,out\ngpt-4o,1000,10,20\ngpt-4o-mini,1250,11,21\n",
                        encoding="utf-8")
    rows = list(read_trace(csv_path, "csv", columns=columns, time_unit="ms"))
    assert [(r.time, r.model) for r in rows] == [(0.0, "gpt-4o"), (0.25, "gpt-4o-mini")]
    jl = tmp_path / "g.jsonl"
    jl.write_text("\n".join(json.dumps(d) for d in [
        {"ts": "2024-01-01T00:00:00", "in": 5, "out": 6, "m": "a"},
        {"ts": "2024-01-01T00:00:01.5", "in": 7, "out": 8, "m": "b"},
    ]) + "\n\n", encoding="utf-8")
    rows = list(read_trace(jl, "jsonl", columns=columns, time_unit="iso"))
    assert [(r.time, r.prompt_tokens, r.output_tokens) for r in rows] == [(0.0, 5, 6),
                                                                         (1.5, 7, 8)]
    jl.write_text('{"ts": "2024-01-01T00:00:00", "in": 5, "out": 6, "m": "a"}\n{"ts": oops}\n',
                  encoding="utf-8")
    with pytest.raises(TraceError) as info:
        list(read_trace(jl, "jsonl", columns=columns, time_unit="iso"))
    assert (info.value.line, info.value.column) == (2, "<row>")
    jl.write_text('{"ts": "2024-01-01T00:00:00", "in": 5, "m": "a"}\n', encoding="utf-8")
    with pytest.raises(TraceError, match="column 'out'"):
        list(read_trace(jl, "jsonl", columns=columns, time_unit="iso"))
    with pytest.raises(TraceError, match="a column 'nope'"):
        list(read_trace(csv_path, "csv", columns={**columns, "time": "nope"}))
    with pytest.raises(ValueError, match="needs columns"):
        read_trace(csv_path, "csv", columns={"time": "ts"})


@pytest.mark.skipif(not AZURE_TRACE.exists(), reason="shared Azure trace not present")
def test_the_real_azure_trace_parses_completely() -> None:
    assert hashlib.sha256(AZURE_TRACE.read_bytes()).hexdigest() == (
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8")
    count, lo, hi, last = 0, 10**9, 0, 0.0
    out_lo, out_hi = 10**9, 0
    for row in read_trace(AZURE_TRACE, "azure"):
        count += 1
        lo, hi = min(lo, row.prompt_tokens), max(hi, row.prompt_tokens)
        out_lo, out_hi = min(out_lo, row.output_tokens), max(out_hi, row.output_tokens)
        last = row.time
    # Figures from ../shared/data/README.md: 19,366 rows over about 58 minutes.
    assert count == 19_366
    assert (lo, hi, out_lo, out_hi) == (2, 14_050, 7, 1_000)
    assert 55 * 60 < last < 60 * 60
