"""The simulator's CLI commands: run (make demo), compare, replay, sweep, plan, validate."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from simhelpers import PROJECT, SCENARIOS

from omnillm_sim.cli import SUBCOMMANDS, build_parser, main
from omnillm_sim.report.writer import MARKER
from omnillm_sim.sim.progress import ProgressBar

CLI = [sys.executable, "-m", "omnillm_sim.cli"]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_command_help_has_an_example(command: str) -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    text = sub.format_help()
    assert "example" in text
    assert f"omnillm-sim {command}" in text


def test_required_commands_exist() -> None:
    assert {"run", "compare", "replay", "sweep", "plan", "validate", "prices"} <= set(SUBCOMMANDS)
    assert "demo" not in SUBCOMMANDS


def test_make_demo_runs_the_steady_scenario() -> None:
    makefile = (PROJECT / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "omnillm-sim run scenarios/steady.toml" in demo


def test_demo_from_a_fresh_checkout_writes_summary_and_charts(tmp_path: Path) -> None:
    shutil.copytree(SCENARIOS, tmp_path / "scenarios")
    proc = subprocess.run([*CLI, "run", "scenarios/steady.toml"], cwd=tmp_path,
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "MPLBACKEND": ""})
    out = tmp_path / "reports" / "steady"
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER) == [
        "keys.png", "latency_cdf.png", "rejections.png", "spend.png", "summary.json",
        "summary.md"]
    assert "report: reports/steady/summary.md (+ 4 charts)" in proc.stdout
    assert "no violation" in proc.stdout
    # Not a terminal: no progress bar. Other stderr (a first run's matplotlib font-cache
    # notice) is allowed; errors are not.
    assert "\r" not in proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr


def test_summary_json_is_identical_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run([*CLI, "run", str(SCENARIOS / "burst.toml"), "--no-charts", "--out",
                        str(out), "--seed", "3", "--set", "duration=3m"], check=True,
                       capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
        outputs.append((out / "summary.json").read_bytes())
    assert outputs[0] == outputs[1]


def test_validate_reports_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[workload]\nkind = 'poisson'\nrate = 'fast'\n")
    status = main(["validate", str(SCENARIOS / "steady.toml"), str(bad)])
    out = capsys.readouterr().out
    assert status == 2
    assert "ok   " in out and "steady.toml" in out
    expected = 'workload.rate: expected a rate like "20/s" or "500/min", got \'fast\''
    assert f"FAIL {bad}: {expected}" in out


def test_run_with_a_bad_scenario_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[workload]\nrate = '1/s'\n[[keys]]\nlabel = 'a'\nrmp = 5\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("omnillm-sim run: error: ") and "keys[0].rmp" in err
    assert not (tmp_path / "o").exists()


def test_compare_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(SCENARIOS / "underestimate.toml"), "--no-charts", "--out",
                 str(tmp_path / "c"), "--seed", "1"]) == 0
    data = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert data["policies"] == ["omnillm-0.1.5", "safe"]
    trace = tmp_path / "mini_azure.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + [
        f"2023-11-16 18:15:{10 + i // 10:02d}.{i % 10}000000,{100 + i},{20 + i}" for i in range(50)]
    trace.write_bytes("\r\n".join(rows).encode())
    assert main(["replay", str(trace), "--format", "azure", "--scenario",
                 str(SCENARIOS / "steady.toml"), "--speed", "2", "--out", str(tmp_path / "r"),
                 "--no-charts"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["requests"]["arrivals"] == 50
    assert summary["scenario"]["name"] == "mini_azure"
    assert summary["scenario"]["keys"] == 4  # from the base scenario
    assert "mini_azure" in capsys.readouterr().out


def test_sweep_and_plan_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = str(SCENARIOS / "steady.toml")
    assert main(["sweep", scenario, "--grid", "workload.rate=2/s,4/s", "--grid",
                 "duration=30s", "--seeds", "2", "--workers", "1", "--out",
                 str(tmp_path / "s")]) == 0
    sweep = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert len(sweep["rows"]) == 4 and sweep["seeds"] == [42, 43]
    assert (tmp_path / "s" / "sweep.png").read_bytes().startswith(b"\x89PNG")
    csv_lines = (tmp_path / "s" / "sweep.csv").read_text().splitlines()
    assert csv_lines[0].startswith("workload.rate,duration,seed,arrivals,ok,rejection,")
    assert csv_lines[1].startswith("2/s,30s,42,")
    status = main(["plan", scenario, "--target", "rejection<=0.01", "--target", "p99<=30s",
                   "--tolerance", "0.2", "--max-factor", "4", "--out", str(tmp_path / "p"),
                   "--no-check"])
    out = capsys.readouterr().out
    assert status == 0
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert plan["answer"] is not None and 0 < plan["answer"] < 4
    assert "largest traffic multiplier meeting rejection<=0.01, p99<=30s" in out
    assert (tmp_path / "p" / "capacity.png").read_bytes().startswith(b"\x89PNG")
    ok = [p for p in plan["points"] if p["meets"]]
    assert max(p["x"] for p in ok) == plan["answer"]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_after_a_second() -> None:
    now = [0.0]
    tty = FakeTTY()
    bar = ProgressBar("run", stream=tty, clock=lambda: now[0])
    bar(0.1)
    assert tty.getvalue() == ""  # under a second: quiet
    now[0] = 1.5
    bar(0.5)
    assert "[" in tty.getvalue() and "50%" in tty.getvalue()
    bar.close()
    assert tty.getvalue().endswith("\r")
    pipe = io.StringIO()
    quiet = ProgressBar("run", stream=pipe, clock=lambda: now[0] + 10)
    quiet(0.5)
    quiet.close()
    assert pipe.getvalue() == ""
