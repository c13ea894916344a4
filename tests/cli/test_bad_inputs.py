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
