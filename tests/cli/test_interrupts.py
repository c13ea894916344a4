"""Ctrl-C (SIGINT to the process group) and SIGTERM stop run and sweep cleanly.

Each test starts ``omnillm-sim`` on a long job, waits until it is busy (simulating, or with its
worker processes started), signals it and checks: exit status 130 (SIGINT) or 143 (SIGTERM),
that it exits (a generous bound, only so a hang fails), that no staging folder is left, that
the previous report is byte-for-byte intact, and that no worker process outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = str(Path(sys.executable).with_name("omnillm-sim"))
HANG_BOUND = 60.0  # seconds after the signal; a bound against hangs, not a speed assertion

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

LONG = 'name = "long"\nduration = "10h"\nrecords = false\n[workload]\nrate = "50/s"\n'


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(c) for c in text}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _previous_report(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True)
    (out / "summary.json").write_bytes(b'{"old": true}\n')
    (out / "summary.md").write_bytes(b"# old report\n")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _start(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    (tmp_path / "long.toml").write_text(LONG)
    return subprocess.Popen([SCRIPT, *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    # An ignored SIGINT is inherited (pytest-xdist workers ignore it, as do background jobs of
    # a shell); a user at a terminal has the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_until(proc: subprocess.Popen[str], busy: callable) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + HANG_BOUND
    while not busy():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the command never got busy: {proc.communicate()}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen[str], sig: int, *, group: bool) -> tuple[int, str]:
    if group:
        os.killpg(proc.pid, sig)  # what the terminal does on Ctrl-C
    else:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=HANG_BOUND)
    finally:
        if proc.poll() is None:  # a failed test must not leave the process behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def _check_clean(tmp_path: Path, out: Path, before: dict[str, bytes]) -> None:
    leftovers = [p for p in tmp_path.rglob("*") if "partial" in p.name]
    assert leftovers == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.parametrize(("sig", "status", "word"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_run_stops_cleanly_and_keeps_the_previous_report(
    tmp_path: Path, sig: int, status: int, word: str
) -> None:
    out = tmp_path / "out"
    before = _previous_report(out)
    proc = _start(tmp_path, "run", "long.toml", "--out", "out", "--no-check")
    _wait_until(proc, lambda: _cpu_seconds(proc.pid) > 1.5)  # imports done, simulating
    code, err = _finish(proc, sig, group=sig == signal.SIGINT)
    assert code == status, err
    assert word in err and "Traceback" not in err
    _check_clean(tmp_path, out, before)


@pytest.mark.parametrize(("sig", "status", "word"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_sweep_of_a_million_seeds_stops_cleanly(
    tmp_path: Path, sig: int, status: int, word: str
) -> None:
    out = tmp_path / "out"
    before = _previous_report(out)
    proc = _start(tmp_path, "sweep", "long.toml", "--grid", "duration=20s,30s",
                  "--seeds", "1000000", "--workers", "2", "--out", "out", "--no-charts")
    workers: set[int] = set()

    def busy() -> bool:
        workers.update(_children(proc.pid))
        return bool(workers)

    _wait_until(proc, busy)
    time.sleep(1.0)  # let some runs finish, so there are results to throw away
    workers.update(_children(proc.pid))
    code, err = _finish(proc, sig, group=sig == signal.SIGINT)
    assert code == status, err
    assert word in err and "Traceback" not in err
    _check_clean(tmp_path, out, before)
    deadline = time.monotonic() + HANG_BOUND
    while any(_alive(w) for w in workers):
        assert time.monotonic() < deadline, "a worker process outlived the sweep"
        time.sleep(0.05)
