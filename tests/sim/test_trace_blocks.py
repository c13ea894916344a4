"""The Azure reader's block fast path agrees with a plain row-by-row reading, errors included."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnillm_sim.errors import TraceError
from omnillm_sim.sim import traces
from omnillm_sim.sim.traces import TraceRow, read_trace

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
START = datetime(2023, 11, 16, 18, 15, 46, 680590)


def reference(path: Path) -> list[TraceRow]:
    """Independent reading: csv.reader, fromisoformat (no zone = UTC), microsecond deltas."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r][1:]
    stamps = []
    for r in rows:
        s = datetime.fromisoformat(r[0].strip())
        stamps.append(s.astimezone(UTC).replace(tzinfo=None) if s.tzinfo else s)
    return [TraceRow((s - stamps[0]) / timedelta(microseconds=1) / 1e6, int(p), int(o))
            for s, (_, p, o) in zip(stamps, rows, strict=True)]


def write(path: Path, lines: list[str], newline: str = "\r\n") -> Path:
    path.write_bytes(newline.join([HEADER, *lines]).encode())
    return path


def stamp_lines(gaps_us: list[int], tokens: list[tuple[int, int]]) -> list[str]:
    out, t = [], START
    for gap, (p, o) in zip(gaps_us, tokens, strict=True):
        t += timedelta(microseconds=gap)
        out.append(f"{t.isoformat(sep=' ')}0,{p},{o}")  # seven fractional digits, as Azure's
    return out


@settings(max_examples=30)
@given(
    rows=st.lists(st.tuples(st.integers(0, 5_000_000), st.integers(0, 20_000),
                            st.integers(0, 2_000)), min_size=1, max_size=300),
    newline=st.sampled_from(["\r\n", "\n"]),
    block=st.sampled_from([64, 300, 1 << 16]),
)
def test_blocks_equal_the_reference_reading(tmp_path_factory: pytest.TempPathFactory,
                                            rows: list[tuple[int, int, int]], newline: str,
                                            block: int) -> None:
    path = write(tmp_path_factory.mktemp("t") / "a.csv",
                 stamp_lines([g for g, _, _ in rows], [(p, o) for _, p, o in rows]), newline)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(traces, "_BLOCK_BYTES", block)  # many small blocks, or one
        mp.setattr(traces, "_azure_rows", None)  # well-formed rows never need the row reader
        got = list(read_trace(path, "azure"))
    assert got == reference(path)


def test_bad_row_in_a_later_block_names_its_line(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    lines = stamp_lines([1000] * 500, [(10, 20)] * 500)
    lines[437] = lines[437].rsplit(",", 1)[0] + ",x7"  # file line 439 (header is line 1)
    path = write(tmp_path / "bad.csv", lines)
    monkeypatch.setattr(traces, "_BLOCK_BYTES", 1024)
    it = read_trace(path, "azure")
    good = [next(it) for _ in range(437)]  # every row before the bad one comes first
    assert good == reference(write(tmp_path / "good.csv", lines[:437]))
    with pytest.raises(TraceError) as info:
        next(it)
    assert (info.value.line, info.value.column, info.value.got) == (439, "GeneratedTokens", "x7")


@pytest.mark.parametrize(
    ("change", "line", "column"),
    [
        (lambda s: s + ",5", 4, "<row>"),  # four fields
        (lambda s: "", None, None),  # a blank line is skipped
        (lambda s: s.replace(",", ", ", 1), None, None),  # a space before a count is allowed
        (lambda s: s.split(",")[0] + "+01:00," + ",".join(s.split(",")[1:]), 4, "TIMESTAMP"),
    ],
)
def test_lines_the_fast_path_leaves_to_the_row_reader(tmp_path: Path, change, line, column):  # type: ignore[no-untyped-def]
    lines = stamp_lines([1000] * 5, [(1, 2)] * 5)
    lines[2] = change(lines[2])
    path = write(tmp_path / "x.csv", lines)
    if line is None:
        assert list(read_trace(path, "azure")) == reference(path)
        return
    with pytest.raises(TraceError) as info:
        list(read_trace(path, "azure"))
    # A zoned time 1 h earlier in UTC goes backwards; four fields is a malformed row.
    assert (info.value.line, info.value.column) == (line, column)


def test_quoted_fields_are_read_by_the_csv_module(tmp_path: Path) -> None:
    lines = stamp_lines([1000] * 4, [(1, 2)] * 4)
    lines[1] = '"' + lines[1].replace(",", '","') + '"'
    path = write(tmp_path / "q.csv", lines)
    assert list(read_trace(path, "azure")) == reference(path)
