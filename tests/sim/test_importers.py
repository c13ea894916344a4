"""Importers of real logs, each read from a hand-written sample of its published format.

Expected values are read off the sample files by hand (times, tokens, USD -> micro-dollars).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from omnillm_sim.errors import TraceError
from omnillm_sim.sim.importers import ObservedRow, read_observed

LOGS = Path(__file__).parent / "logs"


def rows(name: str, fmt: str, **kw: object) -> list[ObservedRow]:
    return list(read_observed(LOGS / name, fmt, **kw))  # type: ignore[arg-type]


def shape(row: ObservedRow) -> tuple[object, ...]:
    """Everything but the absolute times: (duration, model, in, out, label, cost, key)."""
    return (round(row.end - row.start, 6), row.model, row.prompt_tokens, row.output_tokens,
            row.label, row.cost, row.key)


def test_pytest_omnillm_report_replays_sent_requests_in_report_order() -> None:
    got = rows("llm-report.json", "pytest-omnillm")
    # seq 3 was refused by the plugin (never sent): skipped. No times in the report: one
    # nominal second each, one after another.
    assert [shape(r) for r in got] == [
        (1.0, "gpt-4o", 1000, 125, "ok", 3750, None),
        (1.0, "gpt-4o", 0, 0, "http_429", 0, None),
        (1.0, "gpt-4o-mini", 0, 0, "ok", 1650, None),
        (1.0, "text-embedding-3-small", 0, 0, "timeout", 20, None),
    ]
    assert [r.start for r in got] == [0.0, 1.0, 2.0, 3.0]
    assert [r.line for r in got] == [23, 40, 82, 103]  # each record's "seq" line (grep -n)


def test_otel_genai_otlp_json_lines() -> None:
    got = rows("otel-otlp.jsonl", "otel-genai")
    # The HTTP child span (no gen_ai.* model) is skipped.
    assert [shape(r) for r in got] == [
        (2.5, "gpt-4o", 1200, 300, "ok", None, None),
        (0.2, "gpt-4o", 0, 0, "http_429", None, None),
        (30.0, "gpt-4o-mini", 50, 0, "timeout", None, None),
    ]
    assert got[0].start == pytest.approx(1_700_000_000.0)
    assert [r.line for r in got] == [1, 2, 2]


def test_otel_genai_flattened_spans() -> None:
    got = rows("otel-flat.jsonl", "otel-genai")
    assert [shape(r) for r in got] == [
        (0.8, "gpt-4o", 400, 20, "ok", None, None),
        (0.4, "gpt-4o", 0, 0, "cancelled", None, None),
    ]


@pytest.mark.parametrize("name", ["litellm-spend.csv", "litellm-spend.json"])
def test_litellm_spend_logs(name: str) -> None:
    got = rows(name, "litellm-spend")
    key = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    code = 429 if name.endswith(".csv") else 503
    assert [shape(r) for r in got][:2] == [
        (3.25, "gpt-4o", 1000, 200, "ok", 4500, key),
        (0.5, "gpt-4o", 0, 0, f"http_{code}", 0, key),
    ]
    assert got[1].start - got[0].start == pytest.approx(1.0)
    if name.endswith(".csv"):
        assert shape(got[2])[1:] == ("gpt-4o-mini", 600, 100, "ok", 150, got[2].key)
        assert [r.line for r in got] == [2, 3, 4]
    else:
        assert [r.line for r in got] == [2, 16]


def test_generic_csv_with_duration_status_cost_and_key() -> None:
    columns = {"time": "ts", "duration": "dur", "prompt_tokens": "in", "output_tokens": "out",
               "status": "status", "cost": "usd", "key": "key"}
    got = rows("calls.csv", "csv", columns=columns, time_unit="ms")
    assert [shape(r) for r in got] == [
        (2.5, None, 800, 120, "ok", 3200, "key-a"),
        (0.4, None, 800, 0, "http_503", 0, "key-b"),
        (120.0, None, 50, 0, "timeout", 0, "key-a"),
    ]


BAD = [
    # (format, file name, content, kwargs, line, column, value)
    ("litellm-spend", "bad.csv",
     "startTime,endTime,model,prompt_tokens,completion_tokens,spend,status\n"
     "2025-01-10T09:00:00Z,2025-01-10T09:00:01Z,gpt-4o,10,5,0.001,success\n"
     "2025-01-10T09:00:02Z,2025-01-10T09:00:03Z,gpt-4o,10,5,NaN,success\n",
     {}, 3, "spend", "NaN"),
    ("litellm-spend", "bad.jsonl",
     '{"startTime": "2025-01-10T09:00:00Z", "endTime": "yesterday", "model": "gpt-4o",'
     ' "spend": 0.1}\n', {}, 1, "endTime", "yesterday"),
    ("litellm-spend", "neg.json",
     '[\n  {"startTime": "2025-01-10T09:00:00Z", "endTime": "2025-01-10T09:00:01Z",'
     ' "model": "gpt-4o", "spend": 0.1},\n'
     '  {"startTime": "2025-01-10T09:00:00Z", "endTime": "2025-01-10T09:00:01Z",'
     ' "model": "gpt-4o", "spend": -0.1}\n]\n', {}, 3, "spend", -0.1),
    ("otel-genai", "bad.jsonl",
     '{"name": "chat", "start_time_unix_nano": 5, "end_time_unix_nano": 4,'
     ' "attributes": {"gen_ai.request.model": "gpt-4o"}}\n', {}, 1, "end_time_unix_nano", 4),
    ("otel-genai", "tok.jsonl",
     '\n{"name": "chat", "start_time_unix_nano": 5, "end_time_unix_nano": 6,'
     ' "attributes": {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": -3}}\n',
     {}, 2, "gen_ai.usage.input_tokens", -3),
    ("jsonl", "bad.jsonl",
     '{"t": 1, "e": 2, "p": 1, "o": 1, "s": "ok"}\n{"t": 1, "e": 2, "p": 1, "o": 1, "s": "meh"}\n',
     {"columns": {"time": "t", "end": "e", "prompt_tokens": "p", "output_tokens": "o",
                  "status": "s"}}, 2, "s", "meh"),
    ("csv", "inf.csv", "t,d,p,o,c\n1,1,1,1,inf\n",
     {"columns": {"time": "t", "duration": "d", "prompt_tokens": "p", "output_tokens": "o",
                  "cost": "c"}}, 2, "c", "inf"),
]


@pytest.mark.parametrize(("fmt", "name", "content", "kw", "line", "column", "value"), BAD,
                         ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_a_bad_row_names_file_line_column_and_value(
    tmp_path: Path, fmt: str, name: str, content: str, kw: dict[str, object], line: int,
    column: str, value: object,
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TraceError) as info:
        list(read_observed(path, fmt, **kw))  # type: ignore[arg-type]
    err = info.value
    assert (err.path, err.line, err.column, err.got) == (str(path), line, column, value)
    assert str(err).startswith(f"{path}:{line}: column {column!r}")


def test_importers_stream_rows_before_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    good = ('{"name": "c", "start_time_unix_nano": 1, "end_time_unix_nano": 2,'
            ' "attributes": {"gen_ai.request.model": "m"}}\n')
    path.write_text(good * 3 + "not json\n", encoding="utf-8")
    reader = read_observed(path, "otel-genai")
    assert [next(reader).line for _ in range(3)] == [1, 2, 3]
    with pytest.raises(TraceError, match=":4:"):
        next(reader)


def test_a_report_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"version": 7, "tests": []}', encoding="utf-8")
    with pytest.raises(TraceError, match="version"):
        list(read_observed(path, "pytest-omnillm"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 5_000 + "\n", "nested less deeply"),  # RecursionError in json.loads otherwise
        ('{"a": "' + "x" * (1 << 21) + '"}\n', "a line of at most"),  # over limits.line_length
    ],
    ids=["deep-nesting", "long-line"],
)
def test_json_logs_get_the_trace_readers_guards(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "spans.jsonl"
    path.write_text(text)
    with pytest.raises(TraceError, match=expected) as info:
        list(read_observed(path, "otel-genai"))
    assert info.value.line == 1
