"""Every bad input through the real console script: one clear error, no traceback, no stray file.

Each case builds files in a fresh folder, runs ``omnillm-sim`` in a subprocess under an
address-space limit (``RLIMIT_AS``) and a generous wall-clock bound (only there so a hang fails
instead of blocking the suite), and checks: the exit status, that the message names the file,
key or option and the offending value, that no Python traceback was printed, and that nothing
was written outside the chosen output folder.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = str(Path(sys.executable).with_name("omnillm-sim"))
MEMORY_LIMIT = 1 << 30  # bytes of address space for the child (its normal peak is ~400 MB)
HANG_BOUND = 120  # seconds; a generous bound so a hang fails, not a speed assertion

GOOD = 'name = "good"\nduration = "20s"\n[workload]\nrate = "1/s"\n'
AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _azure(*rows: str) -> str:
    return AZURE_HEAD + "".join(f"{r}\n" for r in rows)


def _trace_scenario(trace: str = "t.csv", extra: str = "", fmt: str = "azure") -> str:
    return (f'name = "tr"\nduration = "10m"\n{extra}\n[workload]\nkind = "trace"\n'
            f'[workload.trace]\npath = "{trace}"\nformat = "{fmt}"\n')


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    status: int = 2
    setup: Callable[[Path], None] | None = None


def _ts(second: int) -> str:
    return f"2023-11-16 18:15:{second:02d}.0000000"


CASES = [
    # -- 1: errors raised inside the running simulation keep their message
    Case("trace-bad-row-after-first", ("run", "s.toml", "--out", "out"),
         ("t.csv:3", "GeneratedTokens", "'x'"),
         {"s.toml": _trace_scenario(), "t.csv": _azure(f"{_ts(1)},10,2", f"{_ts(2)},10,x")}),
    Case("trace-unsorted-mid-file", ("run", "s.toml", "--out", "out"),
         ("t.csv:4", "TIMESTAMP", "sorted", _ts(1)),
         {"s.toml": _trace_scenario(),
          "t.csv": _azure(f"{_ts(1)},10,2", f"{_ts(5)},10,2", f"{_ts(1)},10,2")}),
    Case("unknown-model-mid-run", ("run", "s.toml", "--out", "out"),
         ("no-such-model", "price table"),
         {"s.toml": 'name = "um"\nduration = "20s"\n[prices]\nfallback = "none"\n'
                    '[requests]\nmodel = "no-such-model"\n[workload]\nrate = "1/s"\n'}),
    # -- 3: a scenario name is a label, never a path
    *(Case(f"name-{label}", ("run", "s.toml", "--no-charts"), ("s.toml", "name", shown),
           {"s.toml": f'name = "{name}"\n' + GOOD.split("\n", 1)[1]})
      for label, name, shown in [
          ("parent", "../../x", "'../../x'"), ("absolute", "/abs/dir", "'/abs/dir'"),
          ("dotdot", "..", "'..'"), ("control", "a\\u0007b", "'a\\x07b'"),
          ("backslash", "a\\\\b", "a\\\\b"), ("hidden", ".x", "'.x'")]),
]


def _jsonl_scenario(trace: str = "t.jsonl") -> str:
    return (_trace_scenario(trace, fmt="jsonl")
            + '[workload.trace.columns]\ntime = "t"\nprompt_tokens = "p"\noutput_tokens = "o"\n')


def _ledger(limit: int = 1_000_000) -> Callable[[Path], None]:
    def make(work: Path) -> None:
        from omnillm_sim.ledger import Ledger

        with Ledger(work / "l.sqlite", limit=limit) as ledger:
            for i in range(40):  # about 10 pages of entries
                ledger.reserve(10, label=f"call {i} " + "x" * 1000).settle(5)
    return make


def _corrupt_page(work: Path) -> None:
    _ledger()(work)
    path = work / "l.sqlite"
    data = bytearray(path.read_bytes())
    page = 4096 * 3  # a page of the entries table, not the header
    data[page:page + 512] = b"\xa5" * 512
    path.write_bytes(bytes(data))


def _tamper_limit(work: Path) -> None:
    _ledger()(work)
    db = sqlite3.connect(work / "l.sqlite")
    db.execute("UPDATE meta SET value = -5 WHERE key = 'limit'")
    db.commit()
    db.close()


def _foreign_db(work: Path) -> None:
    db = sqlite3.connect(work / "l.sqlite")
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO customers (name) VALUES ('ada')")
    db.commit()
    db.close()


def _symlink_nowhere(work: Path) -> None:
    (work / "out").symlink_to(work / "nowhere")


def _deep(n: int) -> str:
    return "[" * n + "]" * n


CASES += [
    # -- 2: validate finds what run would find
    Case("validate-bad-row-after-first", ("validate", "s.toml"), ("FAIL", "t.csv:3", "'x'"),
         {"s.toml": _trace_scenario(), "t.csv": _azure(f"{_ts(1)},10,2", f"{_ts(2)},10,x")}),
    Case("validate-unsorted-mid-file", ("validate", "s.toml"), ("t.csv:4", "sorted"),
         {"s.toml": _trace_scenario(),
          "t.csv": _azure(f"{_ts(1)},10,2", f"{_ts(5)},10,2", f"{_ts(1)},10,2")}),
    Case("validate-unknown-model", ("validate", "s.toml"), ("no-such-model", "price table"),
         {"s.toml": 'name = "um"\n[prices]\nfallback = "none"\n[requests]\n'
                    'model = "no-such-model"\n[workload]\nrate = "1/s"\n'}),
    Case("validate-trace-model-unknown", ("validate", "s.toml"), ("mystery-model",),
         {"s.toml": 'name = "bg"\nduration = "10m"\n[prices]\nfallback = "none"\n[workload]\n'
          'kind = "trace"\n[workload.trace]\npath = "t.csv"\nformat = "burstgpt"\n',
          "t.csv": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                   "1,gpt-4o,10,2,12,Conversation log\n"
                   "2,mystery-model,10,2,12,Conversation log\n"}),
    # -- 4: encodings and syntax
    Case("scenario-utf16", ("validate", "s.toml"), ("s.toml", "UTF-16"),
         {"s.toml": GOOD.encode("utf-16")}),
    Case("scenario-latin1", ("run", "s.toml"), ("s.toml", "0xe9", "UTF-8"),
         {"s.toml": 'description = "café"\n'.encode("latin-1") + GOOD.encode()}),
    Case("scenario-binary", ("run", "s.toml"), ("s.toml", "0x89"),
         {"s.toml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"}),
    Case("scenario-bom-accepted", ("run", "s.toml", "--out", "out", "--no-charts"),
         ("good [", "report: out/summary.md"), {"s.toml": b"\xef\xbb\xbf" + GOOD.encode()},
         status=0),
    Case("scenario-deep-nesting", ("validate", "s.toml"), ("s.toml", "nested"),
         {"s.toml": "x = " + _deep(2000) + "\n"}),
    Case("scenario-huge-integer", ("run", "s.toml"), ("s.toml", "4300"),
         {"s.toml": "seed = " + "7" * 5000 + "\n" + GOOD}),
    Case("scenario-float-out-of-range", ("run", "s.toml"), ("s.toml", "duration", "inf"),
         {"s.toml": GOOD.replace('duration = "20s"', "duration = 1e400")}),
    Case("scenario-int-beyond-float", ("run", "s.toml"), ("provider.tokens_per_second", "1000"),
         {"s.toml": GOOD + "[provider]\ntokens_per_second = 1" + "0" * 400 + "\n"}),
    *(Case(f"rate-{label}", ("run", "s.toml"), ("workload.rate", value),
           {"s.toml": GOOD.replace('"1/s"', f'"{value}"')})
      for label, value in [("fullwidth", "２/s"), ("arabic-indic", "٢/s"),
                           ("superscript", "²/s"), ("underscore", "1_0/s")]),
    *(Case(f"money-{label}", ("run", "s.toml"), ("budget.limit", value),
           {"s.toml": GOOD + f'[budget]\nlimit = "{value}"\n'})
      for label, value in [("underscore", "1_000"), ("fullwidth", "１０"),
                           ("superscript", "5²"), ("arabic-indic", "٥")]),
    *(Case(f"trace-tokens-{label}", ("run", "s.toml", "--out", "out"),
           ("t.csv:3", "ContextTokens", value),
           {"s.toml": _trace_scenario(), "t.csv": _azure(f"{_ts(1)},10,2", f"{_ts(2)},{value},2")})
      for label, value in [("superscript", "10²"), ("fullwidth", "１０"),
                           ("underscore", "1_000"), ("huge", "9" * 400)]),
    Case("trace-utf16", ("run", "s.toml"), ("t.csv", "UTF-16"),
         {"s.toml": _trace_scenario(), "t.csv": _azure(f"{_ts(1)},10,2").encode("utf-16")}),
    Case("trace-latin1", ("validate", "s.toml"), ("t.csv", "0xe9"),
         {"s.toml": _trace_scenario(),
          "t.csv": (_azure(f"{_ts(1)},10,2") + "café,1,1\n").encode("latin-1")}),
    Case("trace-binary", ("run", "s.toml"), ("t.csv", "UTF-8"),
         {"s.toml": _trace_scenario(), "t.csv": bytes(range(256)) * 4}),
    Case("trace-bom-accepted", ("run", "s.toml", "--out", "out", "--no-charts"), ("tr [",),
         {"s.toml": _trace_scenario(),
          "t.csv": b"\xef\xbb\xbf" + _azure(f"{_ts(1)},10,2", f"{_ts(2)},10,2").encode()},
         status=0),
    Case("trace-csv-time-underscore", ("validate", "s.toml"), ("t.csv:2", "'t'", "1_000"),
         {"s.toml": _trace_scenario(fmt="csv")
          + '[workload.trace.columns]\ntime = "t"\nprompt_tokens = "p"\noutput_tokens = "o"\n',
          "t.csv": "t,p,o\n1_000,10,2\n"}),
    Case("trace-jsonl-deep", ("validate", "s.toml"), ("t.jsonl:1", "nested"),
         {"s.toml": _jsonl_scenario(), "t.jsonl": _deep(100_000) + "\n"}),
    Case("trace-jsonl-huge-int", ("validate", "s.toml"), ("t.jsonl:2", "4300"),
         {"s.toml": _jsonl_scenario(),
          "t.jsonl": '{"t": 1, "p": 1, "o": 1}\n{"t": 2, "p": ' + "1" * 5000 + ', "o": 1}\n'}),
    Case("trace-jsonl-tokens-too-big", ("validate", "s.toml"), ("t.jsonl:1", "'p'", "1" * 30),
         {"s.toml": _jsonl_scenario(), "t.jsonl": '{"t": 1, "p": ' + "1" * 30 + ', "o": 1}\n'}),
    # -- 5: absurd sizes, refused before the run starts
    Case("lognormal-cv", ("run", "s.toml"), ("requests.output_tokens.cv", "1e+200"),
         {"s.toml": GOOD + '[requests]\noutput_tokens = { dist = "lognormal", mean = 100, '
                           'cv = 1e200 }\n'}),
    Case("replay-speed-tiny", ("replay", "t.csv", "--format", "azure", "--speed", "1e-300"),
         ("--speed", "1e-300"), {"t.csv": _azure(f"{_ts(1)},10,2", f"{_ts(9)},10,2")}),
    Case("trace-speed-tiny", ("run", "s.toml"), ("workload.trace.speed", "1e-300"),
         {"s.toml": _trace_scenario() + "speed = 1e-300\n", "t.csv": _azure(f"{_ts(1)},10,2")}),
    Case("sample-interval-tiny", ("run", "s.toml"), ("sample_interval", "1e-09", "samples"),
         {"s.toml": "sample_interval = 1e-9\n" + GOOD}),
    Case("keys-count-1e9", ("validate", "s.toml"), ("keys[0].count", "1000000000", "limits.keys"),
         {"s.toml": GOOD + '[[keys]]\nlabel = "k"\ncount = 1000000000\n'}),
    Case("keys-count-1e5+1", ("validate", "s.toml"), ("keys[0].count", "100001"),
         {"s.toml": GOOD + '[[keys]]\nlabel = "k"\ncount = 100001\n'}),
    Case("keys-limit-raised", ("validate", "s.toml"), ("ok", "2500 keys"),
         {"s.toml": GOOD + '[[keys]]\nlabel = "k"\ncount = 2500\n[limits]\nkeys = 3000\n'},
         status=0),
    Case("arrivals-too-many", ("run", "s.toml"), ("workload", "limits.arrivals", "about"),
         {"s.toml": GOOD.replace('"1/s"', '"1000/s"').replace('"20s"', '"10d"')}),
    Case("closed-think-zero", ("run", "s.toml"), ("workload", "unbounded"),
         {"s.toml": 'duration = "1m"\n[workload]\nkind = "closed"\nclients = 2\n'
                    "think_time = 0\n"}),
    Case("trace-dev-zero", ("run", "s.toml"), ("/dev/zero", "a line of at most"),
         {"s.toml": _trace_scenario("/dev/zero")}),
    Case("trace-long-line", ("validate", "s.toml"), ("t.csv:3", "1,048,576"),
         {"s.toml": _trace_scenario(),
          "t.csv": _azure(f"{_ts(1)},10,2", "9" * (2 << 20), f"{_ts(2)},10,2")}),
    Case("trace-line-limit-lowered", ("validate", "s.toml"), ("t.csv:3", "at most 100 "),
         {"s.toml": _trace_scenario(extra="[limits]\nline_length = 100"),
          "t.csv": _azure(f"{_ts(1)},10,2", "9" * 500)}),
    # -- 6: the output folder is checked before simulating
    Case("out-is-a-file", ("run", "s.toml", "--out", "f"), ("--out", "'f'", "is a file"),
         {"s.toml": GOOD, "f": "not a folder"}),
    Case("out-under-a-file", ("run", "s.toml", "--out", "f/sub"),
         ("--out", "f/sub", "under a file"),
         {"s.toml": GOOD, "f": "not a folder"}),
    Case("out-dangling-symlink", ("run", "s.toml", "--out", "out"), ("--out", "dangling"),
         {"s.toml": GOOD}, setup=_symlink_nowhere),
    Case("sweep-out-is-a-file", ("sweep", "s.toml", "--grid", "seed=1,2", "--out", "f"),
         ("--out", "is a file"), {"s.toml": GOOD, "f": "x"}),
    Case("plan-out-is-a-file", ("plan", "s.toml", "--target", "rejection<=0.1", "--out", "f"),
         ("--out", "is a file"), {"s.toml": GOOD, "f": "x"}),
    Case("compare-out-is-a-file", ("compare", "s.toml", "--out", "f"), ("--out", "is a file"),
         {"s.toml": GOOD, "f": "x"}),
    # -- 8: ledgers
    Case("ledger-corrupted-page", ("ledger", "l.sqlite"), ("l.sqlite", "malformed"),
         setup=_corrupt_page),
    Case("ledger-foreign-database", ("ledger", "l.sqlite"),
         ("l.sqlite", "not an omnillm-sim ledger", "customers"), setup=_foreign_db),
    Case("ledger-text-file", ("ledger", "l.sqlite"), ("l.sqlite", "not a SQLite database"),
         {"l.sqlite": "hello\n" * 40}),
    Case("ledger-tampered-limit", ("ledger", "l.sqlite"), ("l.sqlite", "limit", "-5"),
         setup=_tamper_limit),
    Case("ledger-missing", ("ledger", "nope.sqlite"), ("nope.sqlite", "does not exist")),
    # -- 9: verification inputs
    Case("history-binary", ("verify", "history", "h.jsonl"), ("h.jsonl", "0xff"),
         {"h.jsonl": b"\x00\xff\xfe" * 100}),
    Case("history-deep", ("verify", "history", "h.jsonl"), ("h.jsonl", "nested"),
         {"h.jsonl": _deep(100_000) + "\n"}),
    Case("history-missing", ("verify", "history", "nope.jsonl"),
         ("nope.jsonl", "No such file")),
    Case("explore-huge-schedule",
         ("verify", "explore", "--model", "cas", "--schedule", "0*99999999999"),
         ("--schedule", "0*99999999999", "99,999,999,999")),
    Case("dask-nothing-listening",
         ("sweep", "s.toml", "--grid", "seed=1,2", "--dask", "tcp://127.0.0.1:1", "--out", "out"),
         ("--dask", "tcp://127.0.0.1:1", "not a reachable"), {"s.toml": GOOD}),
    Case("sweep-error-in-a-worker-process",
         ("sweep", "s.toml", "--grid", "requests.model=gpt-4o,no-such-model", "--workers", "2",
          "--out", "out"), ("no-such-model", "price table"),
         {"s.toml": GOOD + '[prices]\nfallback = "none"\n'}),
    # -- CLI option checks
    Case("set-without-equals", ("run", "s.toml", "--set", "duration"), ("--set", "'duration'"),
         {"s.toml": GOOD}),
    Case("seeds-zero", ("sweep", "s.toml", "--grid", "seed=1,2", "--seeds", "0"),
         ("--seeds", "0"), {"s.toml": GOOD}),
    Case("workers-zero", ("sweep", "s.toml", "--grid", "seed=1,2", "--workers", "0"),
         ("workers", "0"), {"s.toml": GOOD}),
    Case("grid-without-values", ("sweep", "s.toml", "--grid", "seed="), ("--grid", "seed="),
         {"s.toml": GOOD}),
    Case("replay-column-without-name",
         ("replay", "t.csv", "--format", "csv", "--column", "time"), ("--column", "'time'"),
         {"t.csv": "t,p,o\n1,1,1\n"}),
    Case("replay-missing-columns", ("replay", "t.csv", "--format", "csv"),
         ("--column", "time, prompt_tokens, output_tokens"), {"t.csv": "t,p,o\n1,1,1\n"}),
    Case("plan-seeds-zero", ("plan", "s.toml", "--target", "rejection<=0.1", "--seeds", "0"),
         ("--seeds", "0"), {"s.toml": GOOD}),
    Case("plan-max-keys-over-limit",
         ("plan", "s.toml", "--vary", "keys", "--target", "rejection<=0.1", "--max-keys",
          "1000000000"), ("--max-keys", "1000000000", "limits.keys"), {"s.toml": GOOD}),
    Case("plan-max-factor-huge",
         ("plan", "s.toml", "--target", "rejection<=0.1", "--max-factor", "1e300"),
         ("--max-factor", "1e+300", "limits.arrivals"), {"s.toml": GOOD}),
    Case("plan-tolerance-nan", ("plan", "s.toml", "--target", "rejection<=0.1", "--tolerance",
                                "nan"), ("--tolerance", "nan"), {"s.toml": GOOD}),
    Case("prices-unknown-model", ("prices", "no-such-model", "--catalogue", "omnillm-0.1.5"),
         ("no-such-model",)),
]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_error(case: Case, tmp_path: Path) -> None:
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    for name, content in case.files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if case.setup is not None:
        case.setup(work)
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [SCRIPT, *case.argv], cwd=work, capture_output=True, text=True, errors="replace",
        timeout=HANG_BOUND, preexec_fn=_limit_memory,
        env={**os.environ, "MPLBACKEND": "Agg", "PYTHONFAULTHANDLER": ""},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == case.status, output
    assert "Traceback" not in output
    for needle in case.needles:
        assert needle in output, f"{needle!r} not in {output!r}"
    written = {p for p in _snapshot(tmp_path) - before
               if not p.startswith(("a/b/work/out", "a/b/work/reports"))}
    assert written == set(), f"files written outside the output folder: {written}"
