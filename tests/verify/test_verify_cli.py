"""``omnillm-sim verify``: exit statuses, printed schedules that replay, history files."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from omnillm_sim.cli import SUBCOMMANDS, main
from omnillm_sim.verify.linearizability import History, Operation, write_history


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_verify_is_a_subcommand_with_examples() -> None:
    help_text = SUBCOMMANDS["verify"][0]
    assert "omnillm-sim verify explore --model cas" in help_text
    assert "omnillm-sim verify history" in help_text


def test_cas_explores_clean(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["verify", "explore", "--model", "cas", "--clients", "3"], capsys)
    assert status == 0
    assert "search: exhaustive DFS, <= 2 preemptions" in out
    assert "result: no violation in" in out
    assert "last run: omnillm-sim verify explore --model cas --clients 3 --schedule" in out


def test_check_then_act_prints_a_minimised_schedule_that_replays(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(
        ["verify", "explore", "--model", "check-then-act", "--clients", "3"], capsys
    )
    assert status == 1
    assert "VIOLATION over-admitted" in out
    assert "minimised to 4 steps" in out
    replays = re.findall(r"^replay: (.*)$", out, flags=re.MULTILINE)
    assert replays
    command = shlex.split(replays[0])
    assert command[:3] == ["omnillm-sim", "verify", "explore"]
    status, again, _ = run(command[1:], capsys)
    assert status == 1
    assert "result: VIOLATION over-admitted" in again
    # The replayed trace is the minimised trace printed by the search.
    trace = [line for line in again.splitlines() if re.match(r"^\s+\d+\s+c\d", line)]
    assert len(trace) == 4
    for line in trace:
        assert line in out


def test_random_runs_print_one_replayable_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        [
            "verify",
            "explore",
            "--model",
            "locked",
            "--clients",
            "4",
            "--random",
            "25",
            "--seed",
            "3",
        ],
        capsys,
    )
    assert status == 0
    lines = re.findall(r"^run (\d+): (\S+) -> ok$", out, flags=re.MULTILINE)
    assert [int(n) for n, _ in lines] == list(range(1, 26))
    schedule = lines[-1][1]
    status, again, _ = run(
        ["verify", "explore", "--model", "locked", "--clients", "4", "--schedule", schedule],
        capsys,
    )
    assert status == 0 and "result: ok" in again


def test_pct_finds_the_double_settle_wrap(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        [
            "verify",
            "explore",
            "--model",
            "double-settle",
            "--clients",
            "2",
            "--pct",
            "200",
            "--depth",
            "3",
            "--first",
        ],
        capsys,
    )
    assert status == 1
    assert "VIOLATION wrap" in out and "(2**64 - " in out


def test_model_parameters_reach_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    # With room for every client (limit 300 >= 3 x 60), check-then-act can no longer over-admit,
    # but its settles still lose updates.
    status, out, _ = run(
        ["verify", "explore", "--model", "check-then-act", "--clients", "3", "--limit", "300"],
        capsys,
    )
    assert status == 1
    assert "limit 300" in out
    assert "VIOLATION drift" in out and "over-admitted" not in out
    assert "--limit 300 --schedule" in out


def test_bad_input_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        ["verify", "explore", "--model", "cas", "--clients", "2", "--schedule", "0*9"], capsys
    )
    assert status == 2
    assert "step 4 runs client 0, which cannot run" in err
    status, _, err = run(["verify", "explore", "--model", "nope", "--clients", "2"], capsys)
    assert status == 2 and "model(='nope') must be one of cas" in err
    status, _, err = run(["verify", "explore", "--model", "cas", "--clients", "0"], capsys)
    assert status == 2 and "--clients: clients(=0) must be > 0" in err


def test_history_file_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    ops = (
        Operation("reserve", "b", 1, 60, 0, 10, "admitted", "c0"),
        Operation("reserve", "b", 2, 60, 20, 30, "admitted", "c1"),
    )
    write_history(History({"b": 100}, ops[:1]), good)
    write_history(History({"b": 100}, ops), bad)
    status, out, _ = run(["verify", "history", str(good), "-v"], capsys)
    assert status == 0
    assert "result: linearizable" in out and "1. reserve rid=1" in out
    status, out, _ = run(["verify", "history", str(bad)], capsys)
    assert status == 1
    assert "b (limit 100): 2 operations, NOT linearizable" in out
    assert "used 60 + 60 > limit 100" in out


def test_a_malformed_history_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"budget": "b", "limit": 1}\n{"op": "reserve"}\n')
    status, _, err = run(["verify", "history", str(path)], capsys)
    assert status == 2
    assert f"{path}:2: column 'estimate'" in err
