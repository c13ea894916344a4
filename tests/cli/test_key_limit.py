"""The scenario key-count bound (``[limits] keys``, default 100,000) through the console script.

The bound was 2,000 while building a gateway checked its labels for duplicates in quadratic
time; the checks are linear now, so 100,000 keys load, build and validate in seconds. One key
more is refused before anything is built, naming the ``[[keys]]`` entry that crosses the line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = str(Path(sys.executable).with_name("omnillm-sim"))
DEFAULT_LIMIT = 100_000


def _scenario(path: Path, counts: list[int], limit: int | None = None) -> Path:
    entries = "".join(
        f'[[keys]]\nlabel = "pool{i}"\ncount = {n}\nrpm = 500\ntpm = 90000\n\n'
        for i, n in enumerate(counts)
    )
    limits = "" if limit is None else f"[limits]\nkeys = {limit}\n\n"
    path.write_text(
        f'seed = 1\nduration = "10s"\n\n{limits}{entries}'
        '[workload]\nkind = "poisson"\nrate = "5/s"\n',
        encoding="utf-8",
    )
    return path


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "validate", str(path)], capture_output=True, text=True, timeout=300,
    )


def test_the_default_bound_is_accepted_and_one_key_more_is_refused(tmp_path: Path) -> None:
    at_limit = _scenario(tmp_path / "at.toml", [DEFAULT_LIMIT // 2, DEFAULT_LIMIT // 2])
    proc = _validate(at_limit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{DEFAULT_LIMIT} keys" in proc.stdout

    over = _scenario(tmp_path / "over.toml", [DEFAULT_LIMIT // 2, DEFAULT_LIMIT // 2 + 1])
    proc = _validate(over)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert "over.toml: keys[1].count" in output  # the entry that crosses the bound
    assert "at most 100,000 keys" in output and "limits.keys" in output


def test_a_raised_bound_admits_more_keys(tmp_path: Path) -> None:
    raised = _scenario(tmp_path / "raised.toml", [DEFAULT_LIMIT + 1], limit=DEFAULT_LIMIT + 1)
    proc = _validate(raised)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{DEFAULT_LIMIT + 1} keys" in proc.stdout
