"""Observed-timing replays: a log's rows are admitted at their start and end as they did.

The expected totals are computed here from the rows alone (counts, sums of exact costs,
nearest-rank percentiles of ``end - start``), never from a run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnillm_sim.errors import TraceError
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import Scenario

# The log's own configuration: nothing in the gateway binds (one key with huge limits, no
# budget, a breaker that never trips, a timeout longer than any call).
OWN_CONFIG: dict[str, Any] = {
    "keys": [{"label": "k", "rpm": 10**9, "tpm": 10**12}],
    "gateway": {"request_timeout": "1000h", "breaker_threshold": 10**9},
}
COLUMNS = {"time": "start", "end": "end", "prompt_tokens": "in", "output_tokens": "out",
           "status": "status", "cost": "cost", "model": "model"}

STATUSES = st.sampled_from(["ok", "ok", "ok", "500", "400", "timeout", "cancelled"])
ROWS = st.lists(
    st.tuples(
        st.integers(0, 50_000),  # start, in ms
        st.integers(0, 30_000),  # duration, in ms
        st.integers(0, 5000),  # prompt tokens
        st.integers(0, 2000),  # output tokens
        STATUSES,
        st.integers(0, 200_000),  # cost in micro-dollars
    ),
    min_size=1,
    max_size=40,
)


def write_log(path: Path, rows: list[tuple[int, int, int, int, str, int]]) -> Path:
    """JSON lines, unsorted by start (as span exporters write), costs as USD strings."""
    with path.open("w", encoding="utf-8") as handle:
        for start, duration, p, o, status, cost in rows:
            handle.write(json.dumps({
                "start": start / 1000, "end": (start + duration) / 1000, "in": p, "out": o,
                "status": status, "cost": str(Decimal(cost) / 1_000_000), "model": "gpt-4o",
            }) + "\n")
    return path


def log_scenario(make_scenario: Callable[..., Scenario], path: Path, **extra: Any) -> Scenario:
    return make_scenario(OWN_CONFIG, workload={"kind": "trace", "trace": {
        "path": str(path), "format": "jsonl", "columns": COLUMNS}}, duration="10h", **extra)


def nearest_rank(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[max(1, math.ceil(q / 100 * len(values))) - 1] if values else None


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_replaying_a_log_with_its_own_configuration_reproduces_its_totals(
    rows: list[tuple[int, int, int, int, str, int]], make_scenario: Callable[..., Scenario],
    tmp_path: Path,
) -> None:
    path = write_log(tmp_path / "log.jsonl", rows)
    result = run(log_scenario(make_scenario, path))
    m = result.metrics
    label = {"ok": "ok", "500": "http_500", "400": "http_400", "timeout": "timeout",
             "cancelled": "cancelled"}
    assert m.arrivals == len(rows)
    assert m.rejected == 0
    assert dict(m.statuses) == dict(Counter(label[r[4]] for r in rows))
    assert m.spent == sum(r[5] for r in rows)  # exact micro-dollars
    ok_durations = [r[1] / 1000 for r in rows if r[4] == "ok"]
    for q, got in ((50, m.p50), (95, m.p95), (99, m.p99)):
        expected = nearest_rank(ok_durations, q)
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(expected, abs=1e-9)
    # The run lasts from the first start to the last end, as the log does.
    first = min(r[0] for r in rows)
    assert m.length == pytest.approx(max(r[0] + r[1] for r in rows) / 1000 - first / 1000,
                                     abs=1e-9)
    # Each admitted call was served from its start to its observed end.
    by_id = sorted(result.records, key=lambda r: (r.arrival, r.id))
    starts = sorted((r[0] - first) / 1000 for r in rows)
    assert [r.arrival for r in by_id] == pytest.approx(starts, abs=1e-9)


def test_rows_the_what_if_gateway_refuses_are_counted_refused(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    # Ten overlapping 10 s calls on one key allowed 3 requests a minute: 3 admitted.
    rows = [(i * 100, 10_000, 100, 10, "ok", 1000) for i in range(10)]
    path = write_log(tmp_path / "log.jsonl", rows)
    scenario = log_scenario(make_scenario, path, keys=[{"label": "k", "rpm": 3, "tpm": 10**9}])
    m = run(scenario).metrics
    assert (m.arrivals, m.admitted, m.rejected) == (10, 3, 7)
    assert m.spent == 3 * 1000


def test_a_budget_what_if_refuses_once_the_observed_bills_use_it_up(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    # Sequential calls billed $0.40 each under a $1 budget. The omnillm estimate of a call
    # (100 prompt tokens -> 25 by bytes/4, + 1024 max output, all at gpt-4o's input rate) is
    # a few milli-dollars, far below $0.40.
    rows = [(i * 2000, 1000, 100, 10, "ok", 400_000) for i in range(5)]
    path = write_log(tmp_path / "log.jsonl", rows)
    scenario = log_scenario(make_scenario, path, budget={"limit": "1.00"})
    m = run(scenario).metrics
    # After two settled calls used = $0.80; the third is admitted (0.80 + 0.0054 <= 1) and
    # settles at $1.20 (the faithful gateway does not guard a settle); then every later
    # estimate exceeds the remaining budget.
    assert (m.admitted, m.rejected) == (3, 2)
    assert dict(m.rejections_by_reason) == {"BUDGET": 2}
    assert m.spent == 1_200_000


def test_a_shorter_timeout_cuts_long_observed_calls(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    rows = [(0, 5_000, 10, 10, "ok", 10), (100, 50_000, 10, 10, "ok", 20)]
    path = write_log(tmp_path / "log.jsonl", rows)
    scenario = log_scenario(make_scenario, path, gateway={"request_timeout": "30s"})
    result = run(scenario)
    assert dict(result.metrics.statuses) == {"ok": 1, "timeout": 1}
    timed_out = next(r for r in result.records if r.status == "timeout")
    assert timed_out.end - timed_out.start == pytest.approx(30.0)


def test_a_row_too_far_out_of_start_order_names_its_line(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    # Rows are sorted within an hour of start time: the row at 0.5 s comes after one at
    # 5000 s, when the rows at 0 s and 1 s have already been replayed.
    rows = [(0, 10, 1, 1, "ok", 1), (1000, 10, 1, 1, "ok", 1), (5_000_000, 10, 1, 1, "ok", 1),
            (500, 10, 1, 1, "ok", 1)]
    path = write_log(tmp_path / "log.jsonl", rows)
    with pytest.raises(TraceError) as info:
        run(log_scenario(make_scenario, path))
    assert info.value.line == 4
    assert f"{path}:4:" in str(info.value)


def test_rows_out_of_order_within_the_window_replay_in_start_order(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    rows = [(3000, 10, 1, 1, "ok", 1), (1000, 10, 1, 1, "ok", 1), (2000, 10, 1, 1, "ok", 1)]
    path = write_log(tmp_path / "log.jsonl", rows)
    arrivals = sorted(r.arrival for r in run(log_scenario(make_scenario, path)).records)
    assert arrivals == pytest.approx([0.0, 1.0, 2.0])
