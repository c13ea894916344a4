"""``omnillm-sim replay`` / ``compare`` / ``run`` over real logs, from the user's side.

The "as it happened" numbers are read off the sample logs by hand (tests/sim/logs/).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from omnillm_sim.cli import main

LOGS = Path(__file__).parent / "logs"
CLI = [sys.executable, "-m", "omnillm_sim.cli"]

BASE = """\
# A gateway of two keys, as in production.
[[keys]]
label = "k"
count = 2
rpm = 1000
tpm = 1000000
"""


def test_replay_of_a_litellm_log_puts_it_as_it_happened_beside_each_what_if(
    tmp_path: Path,
) -> None:
    base = tmp_path / "gw.toml"
    base.write_text(BASE, encoding="utf-8")
    out = tmp_path / "r"
    proc = subprocess.run(
        [*CLI, "replay", str(LOGS / "litellm-spend.csv"), "--format", "litellm-spend",
         "--scenario", str(base), "--policy", "omnillm-0.1.5", "--policy", "safe",
         "--what-if", "keys.0.count=1,keys.0.rpm=1", "--out", str(out)],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "summary.json").read_text())
    happened = data["as_it_happened"]
    # Three calls: two successes billed $0.0045 and $0.00015, one 429 billed nothing.
    assert happened["requests"] == 3 and happened["ok"] == 2
    assert happened["statuses"] == {"ok": 2, "http_429": 1}
    assert happened["spent"]["micros"] == 4500 + 150
    assert happened["latency_s"]["p50"] == 2.0 and happened["latency_s"]["p99"] == 3.25
    assert data["policies"] == ["omnillm-0.1.5", "safe", "keys.0.count=1,keys.0.rpm=1"]
    for policy in ("omnillm-0.1.5", "safe"):  # two keys: the 429 cools one, nothing refused
        run = data["runs"][policy]
        assert run["requests"]["rejected"] == 0
        assert run["budget"]["spent"]["micros"] == 4650
    # One key allowed one request a minute: the 2nd and 3rd calls are refused, never sent.
    what_if = data["runs"]["keys.0.count=1,keys.0.rpm=1"]
    assert what_if["requests"]["rejected"] == 2
    assert what_if["budget"]["spent"]["micros"] == 4500
    md = (out / "summary.md").read_text()
    assert "| metric | as it happened | `omnillm-0.1.5` | `safe` |" in md
    assert (out / "latency_cdf.png").stat().st_size > 0
    assert "as it happened: 3 requests, 2 ok, spent $0.004650" in proc.stdout


def test_replay_of_a_test_session_report_under_a_session_budget(tmp_path: Path) -> None:
    # "What would our suite have spent under a $0.01 session budget?" By hand: omnillm
    # estimates (prompt + 1024 max output) tokens at the input rate ($5/M for gpt-4o, and
    # for the embedding model priced as the fallback gpt-4o; $0.15/M for gpt-4o-mini):
    #   call 1 gpt-4o, 1000 prompt: est 10,120 µ$ > 10,000 -> refused (BUDGET);
    #   call 2 gpt-4o 429: est 5,120 -> admitted, billed 0 (it cools one of the two keys);
    #   call 3 gpt-4o-mini: est 153 -> admitted, billed 1,650;
    #   call 4 embedding: 1,650 + 5,120 <= 10,000 -> admitted, billed 20.
    base = tmp_path / "gw.toml"
    base.write_text(BASE, encoding="utf-8")
    assert main(["replay", str(LOGS / "llm-report.json"), "--format", "pytest-omnillm",
                 "--scenario", str(base), "--set", 'budget.limit="0.01"',
                 "--out", str(tmp_path / "r"), "--no-charts"]) == 0
    data = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert data["as_it_happened"]["spent"]["micros"] == 3750 + 1650 + 20
    assert data["requests"]["arrivals"] == 4
    assert data["requests"]["rejections_by_reason"] == {"BUDGET": 1}
    assert data["budget"]["spent"]["micros"] == 1650 + 20


def test_a_scenario_file_replays_an_otel_log_and_compare_shows_it(tmp_path: Path) -> None:
    scenario = tmp_path / "otel.toml"
    scenario.write_text('duration = "1h"\n' + BASE + f"""
[gateway]
breaker_threshold = 100
[workload]
kind = "trace"
[workload.trace]
path = "{LOGS / 'otel-otlp.jsonl'}"
format = "otel-genai"
""", encoding="utf-8")
    assert main(["validate", str(scenario)]) == 0
    out = tmp_path / "c"
    assert main(["compare", str(scenario), "--no-charts", "--out", str(out)]) == 0
    data = json.loads((out / "summary.json").read_text())
    assert data["as_it_happened"]["statuses"] == {"http_429": 1, "ok": 1, "timeout": 1}
    # Observed timing: the ok call took 2.5 s in the log and in every replay.
    for policy in ("omnillm-0.1.5", "safe"):
        assert data["runs"][policy]["latency_s"]["p50"] == 2.5


def test_a_bad_log_row_is_one_line_naming_file_line_and_column(tmp_path: Path) -> None:
    log = tmp_path / "spend.csv"
    log.write_text("startTime,endTime,model,spend\n"
                   "2025-01-10T09:00:00Z,2025-01-10T09:00:01Z,gpt-4o,-1\n", encoding="utf-8")
    proc = subprocess.run([*CLI, "replay", str(log), "--format", "litellm-spend",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"omnillm-sim replay: error: {log}:2: column 'spend': expected an amount of USD >= 0 "
        "(finite), got '-1'"]
