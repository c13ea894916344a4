"""The measuring tools of the benchmarks: child-process peak RSS, the spread, the test trace."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from benchmarks.bench_io import azure_like_trace
from benchmarks.harness import Figure, run_child, side_by_side
from omnillm_sim.sim.traces import read_trace

MB = 1024 * 1024


def test_peak_rss_is_the_whole_commands_own_and_not_ours() -> None:
    # This process holds 150 MB; the command allocates 40 MB only as its very last step.
    ours = bytearray(150 * MB)
    ours[::4096] = b"\x01" * len(ours[::4096])
    script = "x = bytearray(40 * 2**20); x[::4096] = b'1' * len(x[::4096]); print('done')"
    child = run_child([sys.executable, "-c", script])
    assert child.stdout.strip() == "done"
    assert 40 <= child.peak_rss_mb < 120  # its last allocation counted; our 150 MB not
    assert child.seconds > 0 and child.cpu_seconds >= 0
    del ours


def test_a_failing_command_raises_with_its_output() -> None:
    import subprocess

    try:
        run_child([sys.executable, "-c", "import sys; sys.exit(3)"])
    except subprocess.CalledProcessError as exc:
        assert exc.returncode != 0
    else:  # pragma: no cover
        raise AssertionError("a failing command was reported as a measurement")


def test_the_spread_is_the_range_of_per_repetition_ratios() -> None:
    ours = iter([2.0, 3.0, 4.0])
    base = iter([1.0, 2.0, 1.0])
    pair = side_by_side(lambda: next(ours), lambda: next(base), 3)
    assert (pair.ours, pair.baseline) == (3.0, 1.0)  # medians
    assert pair.spread == (1.5, 4.0)  # 3/2 and 4/1
    a, b = pair  # still unpacks as (ours, baseline)
    assert (a, b) == (3.0, 1.0)
    figure = Figure("x", pair.ours, pair.baseline, "s", "ratio<=", 5.0, 3, spread=pair.spread)
    assert figure.as_dict()["spread"] == (1.5, 4.0)


def test_the_generated_azure_trace_is_deterministic_and_reads_as_azure(tmp_path: Path) -> None:
    a = azure_like_trace(tmp_path / "a.csv", rows=500, seed=5)
    b = azure_like_trace(tmp_path / "b.csv", rows=500, seed=5)
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_text().splitlines()
    assert lines[0] == "TIMESTAMP,ContextTokens,GeneratedTokens"
    # The Azure trace's own timestamp shape: 7 fractional digits.
    stamp = lines[1].split(",")[0]
    assert datetime.strptime(stamp[:-1], "%Y-%m-%d %H:%M:%S.%f") and len(stamp.split(".")[1]) == 7
    rows = list(read_trace(a, "azure"))
    assert len(rows) == 500
    times = [row.time for row in rows]
    assert times == sorted(times) and times[0] == 0.0
    # Poisson arrivals at about 5.6/s: 500 rows span roughly 90 s.
    assert 60 < times[-1] < 120
    assert all(2 <= row.prompt_tokens <= 14_050 and row.output_tokens >= 1 for row in rows)
