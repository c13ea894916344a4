"""Hostile scenario and trace files through ``validate`` and ``run``, in-process.

Random bytes, mutated valid files and extreme numbers: every outcome is a success or the
project's own error (exit status 2 and one ``error:`` line); any other exception escapes
``main`` and fails the test. Runs are kept small with ``--set limits.*``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from omnillm_sim.cli import main

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
TEMPLATE = """\
name = "hostile"
seed = {seed}
duration = {duration}
max_requests = {count}
[budget]
limit = {money}
[[keys]]
label = "k"
count = {count}
rpm = {count}
[requests]
prompt_tokens = {number}
output_tokens = {{ dist = "lognormal", mean = {number}, cv = {number} }}
[provider]
tokens_per_second = {number}
ttft = {duration}
[workload]
kind = "{kind}"
rate = {rate}
clients = {count}
think_time = {duration}
"""
TRACE_TABLE = '[workload.trace]\npath = "t.csv"\nspeed = {number}\n'
VALID = [
    'name = "a"\nduration = "20s"\n[workload]\nrate = "2/s"\n',
    'name = "b"\nduration = "30s"\n[budget]\nlimit = "0.05"\n[[keys]]\nlabel = "k"\ncount = 2\n'
    '[workload]\nkind = "bursty"\nrate = "1/s"\nburst_rate = "5/s"\n',
    'name = "c"\nduration = "1m"\n[workload]\nkind = "closed"\nclients = 3\nthink_time = "2s"\n',
    'name = "d"\nduration = "5m"\n[workload]\nkind = "trace"\n[workload.trace]\npath = "t.csv"\n',
]
VALID_TRACE = AZURE + "".join(f"2023-11-16 18:15:{s:02d}.0000000,{10 * s + 1},{s + 1}\n"
                              for s in range(20))
EXTREMES = ["0", "-1", "1", "1e308", "1e-300", "-0.0", "nan", "inf", "1" + "0" * 400,
            "9" * 5000, '"１０"', '"1_000"', '"²"', '"٣/s"', '"1e400/s"', '"5/s"', '"10s"',
            '"0.01"', '"$5"', '"unlimited"', "true", '""', "[]", "{}", '"x"', "3.5"]

numbers = st.sampled_from(EXTREMES)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from([0, 10, 13, 34, 44, 46, 48, 57, 61, 91, 93, 0xC3, 0xFF,
                                     draw(st.integers(0, 255))]))
        if op == "insert":
            data.insert(position, byte)
        elif data and position < len(data):
            if op == "delete":
                del data[position]
            else:
                data[position] = byte
    return bytes(data)


extreme_scenarios = st.builds(
    lambda seed, duration, count, money, number, kind, rate, trace: (
        TEMPLATE.format(seed=seed, duration=duration, count=count, money=money, number=number,
                        kind=kind, rate=rate) + (TRACE_TABLE.format(number=number) if trace else "")
    ).encode(),
    numbers, numbers, numbers, numbers, numbers,
    st.sampled_from(["poisson", "bursty", "diurnal", "closed", "trace"]), numbers, st.booleans(),
)
valid = st.sampled_from(VALID).map(str.encode)  # the trace is what is hostile then
scenario_files = st.one_of(
    valid,
    valid,
    st.binary(max_size=200),
    st.sampled_from(VALID).map(str.encode).flatmap(mutated),
    extreme_scenarios,
)
trace_rows = st.lists(st.tuples(
    st.sampled_from(["2023-11-16 18:15:46.6805900", "2023-11-16 18:15:40", "x", "", "２０２３",
                     "2023-11-16T18:15:50+05:00"]),
    numbers, numbers,
), max_size=5).map(lambda rows: AZURE + "".join(f"{t},{p},{o}\n" for t, p, o in rows))
trace_files = st.one_of(
    st.binary(max_size=200),
    mutated(VALID_TRACE.encode()),
    trace_rows.map(str.encode),
)


def _check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status = main(argv)
    err = capsys.readouterr().err
    event(f"{argv[0]} -> {status}")
    assert status in (0, 2), (status, err)
    if status == 2 and argv[0] == "run":
        assert "error:" in err and len(err.strip().splitlines()) == 1, err


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow], deadline=None)
@given(scenario=scenario_files, trace=trace_files)
def test_hostile_files_give_success_or_our_own_error(
    scenario: bytes, trace: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "s.toml").write_bytes(scenario)
        (folder / "t.csv").write_bytes(trace)
        path = str(folder / "s.toml")
        _check(["validate", path], capsys)
        _check(["run", path, "--out", str(folder / "out"), "--no-charts",
                "--set", "limits.arrivals=300", "--set", "limits.samples=500",
                "--set", "limits.keys=20"], capsys)
