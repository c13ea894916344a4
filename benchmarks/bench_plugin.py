"""pytest plugin overhead: a large trivial suite, and one intercepted SDK request.

Both figures run real ``pytest`` subprocesses in a scratch directory (its own ``pytest.ini``,
so this project's configuration does not apply), alternating the plugin on (with a per-test
and a session budget) and ``-p no:omnillm``:

* suite: 2,000 trivial tests (one parametrised function); the time is the whole command's
  CPU time (user + system of the pytest process), pytest start-up included: on a shared
  machine the wall time also counts other processes' turns, which are not the plugin's cost
  (the wall-time medians are kept beside it);
* request: one test sends non-streamed ``chat.completions.create`` calls with the real openai
  client to the fake OpenAI server of ``tests/plugin/fakellm.py`` (a thread of this process,
  on 127.0.0.1) and reports the median time per call after a warm-up (the figure: wall time,
  which includes the server's turn; the note adds the client's CPU time per call, the
  plugin's share without the server and less moved by other processes);

With ``OMNILLM_BENCH_INSTRUCTIONS=1`` (and valgrind installed) the suite's note adds the
instructions of one on and one off command (cachegrind): unlike CPU time, a count does not
move with the machine's load, so it shows a few percent of overhead that a shared machine's
noise (spreads of +-20% per pair) hides.

Both run from cached bytecode, as a user's second run does: each command runs once uncounted
first, with ``PYTHONDONTWRITEBYTECODE`` unset and ``PYTHONPYCACHEPREFIX`` pointing into the
scratch directory. With bytecode writing off (as on some CI and shared machines) every "on"
run would recompile the plugin's source, which the "off" run never loads: a cost of that
environment, not of the plugin.
* SSE line: in this process, an httpx2 client reads a chat stream whose first chunk is one
  16 MB line (then the usage chunk) from the fake server, with the plugin's interception
  handler (a budget session) active vs none; the baseline only reads the bytes, so the ratio
  is the plugin's whole cost of watching a huge stream.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, Size, side_by_side

ROOT = Path(__file__).resolve().parents[1]
FAKE_DIR = ROOT / "tests" / "plugin"
ON = ["--llm-budget", "0.50", "--llm-session-budget", "100.00"]
OFF = ["-p", "no:omnillm"]

SUITE = """\
import pytest


@pytest.mark.parametrize("i", range({n}))
def test_trivial(i):
    assert i >= 0
"""

REQUESTS = """\
import json
import os
import statistics
import time

import openai


def test_requests():
    client = openai.OpenAI(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key="k",
                           max_retries=0)
    messages = [{{"role": "user", "content": "Summarise the benchmark in one line."}}]
    times, cpu = [], []
    for i in range({warm} + {n}):
        start, start_cpu = time.perf_counter(), time.process_time()
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                               max_tokens=64)
        if i >= {warm}:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        assert reply.choices
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump([statistics.median(times), statistics.median(cpu)], fh)
"""


def _available() -> str | None:
    """Why the plugin figures cannot run here, or ``None``."""
    if not (FAKE_DIR / "fakellm.py").exists():
        return "skipped: the plugin's fake server (tests/plugin/fakellm.py) is absent"
    return None


@contextmanager
def _fake_server() -> Iterator[Any]:
    sys.path.insert(0, str(FAKE_DIR))
    try:
        from fakellm import FakeLLM  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(FAKE_DIR))
    server = FakeLLM()
    try:
        yield server
    finally:
        server.close()


INSTRUCTIONS_ENV = "OMNILLM_BENCH_INSTRUCTIONS"
"""Set to 1 to also count the suite's instructions with valgrind (slow; no machine noise)."""


def _run(
    where: Path, args: list[str], env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run pytest in ``where`` (under ``prefix``, e.g. valgrind).

    Raises:
        RuntimeError: pytest failed.
    """
    child_env = {**os.environ, "PYTHONPYCACHEPREFIX": str(where / ".pycache"), **(env or {})}
    child_env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "no:xdist", "-p", "no:randomly", *args],
        cwd=where, capture_output=True, text=True, env=child_env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pytest {' '.join(args)} failed:\n{proc.stdout[-2000:]}"
                           f"{proc.stderr[-2000:]}")
    return proc


def _pytest(where: Path, args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run pytest in ``where``; (CPU seconds of the child, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    _run(where, args, env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, elapsed


def _scratch(tmp: str, name: str, text: str) -> Path:
    where = Path(tmp)
    (where / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (where / name).write_text(text, encoding="utf-8")
    return where


def plugin_suite(size: Size) -> Figure:
    n, reps = (50, 1) if size == "smoke" else (2_000, 9)
    name = f"pytest plugin: {n:,} trivial tests, on vs off"
    why = _available()
    if why:
        return Figure(name, 0.0, None, "cpu s", "ratio<=", 1.05, 0, note=why, skipped=True)
    walls: dict[str, list[float]] = {"on": [], "off": []}

    def run(args: list[str], key: str) -> float:
        cpu, wall = _pytest(where, args)
        walls[key].append(wall)
        return cpu

    with tempfile.TemporaryDirectory() as tmp:
        where = _scratch(tmp, "test_trivial.py", SUITE.format(n=n))
        _pytest(where, ON), _pytest(where, OFF)  # warm-up: write the bytecode caches
        pair = side_by_side(lambda: run(ON, "on"), lambda: run(OFF, "off"), reps)
        counted = _instructions(where) if os.environ.get(INSTRUCTIONS_ENV) == "1" else None
    extra = {f"wall_{k}_s": statistics.median(v) for k, v in walls.items()}
    note = (f"{n:,} tests; whole pytest command incl. start-up, CPU time; on = "
            f"{' '.join(ON)}, off = {' '.join(OFF)}")
    if counted is not None:
        extra |= {"instructions_on": counted[0], "instructions_off": counted[1]}
        note += (f"; instructions (valgrind) {counted[0] / 1e9:.3f}G vs {counted[1] / 1e9:.3f}G "
                 f"= {counted[0] / counted[1]:.3f}x")
    else:
        note += f" ({INSTRUCTIONS_ENV}=1 adds the instruction counts)"
    return Figure(name, pair.ours, pair.baseline, "cpu s", "ratio<=", 1.05, reps, note=note,
                  extra=extra, spread=pair.spread)


def _instructions(where: Path) -> tuple[float, float] | None:
    """Instructions of the whole on and off commands (valgrind's cachegrind), or None.

    A count does not depend on the machine's load, unlike every timed figure here; it only
    moves with hash seeds and addresses (fixed here: ``PYTHONHASHSEED=0``, by about 0.1%).
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    prefix = (valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
    counts = []
    for args in (ON, OFF):
        stderr = _run(where, args, {"PYTHONHASHSEED": "0"}, prefix).stderr
        found = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
        if found is None:
            return None
        counts.append(float(found.group(1).replace(",", "")))
    return counts[0], counts[1]


def plugin_request(size: Size) -> Figure:
    name = "pytest plugin: openai chat request, on vs off"
    why = _available()
    if why:
        return Figure(name, 0.0, None, "ms", "ratio<=", 1.10, 0, note=why, skipped=True)
    n, warm, reps = (5, 2, 1) if size == "smoke" else (300, 30, 5)
    with tempfile.TemporaryDirectory() as tmp, _fake_server() as server:
        where = _scratch(tmp, "test_requests.py", REQUESTS.format(n=n, warm=warm))
        out = where / "per-request.json"
        env = {"FAKE_LLM_URL": server.url, "BENCH_OUT": str(out)}
        cpus: dict[str, list[float]] = {"on": [], "off": []}

        def per_request(args: list[str], key: str) -> float:
            _pytest(where, args, env)
            wall, cpu = json.loads(out.read_text())
            cpus[key].append(float(cpu) * 1000.0)
            return float(wall) * 1000.0

        per_request(ON, "on"), per_request(OFF, "off")  # warm-up: write the bytecode caches
        cpus = {"on": [], "off": []}
        pair = side_by_side(lambda: per_request(ON, "on"), lambda: per_request(OFF, "off"), reps)
    # The client process's CPU time per call (the server's work and other processes' turns
    # left out): the plugin's share, less moved by the machine's load than the wall time.
    extra = {f"cpu_{k}_ms": statistics.median(v) for k, v in cpus.items()}
    cpu_ratio = extra["cpu_on_ms"] / extra["cpu_off_ms"] if extra["cpu_off_ms"] else 0.0
    return Figure(name, pair.ours, pair.baseline, "ms", "ratio<=", 1.10, reps,
                  note=f"median of {n} non-streamed calls per run after {warm} warm-up, "
                  "openai client -> fake server on 127.0.0.1 (wall time per call); client "
                  f"CPU per call {extra['cpu_on_ms']:.3f} vs {extra['cpu_off_ms']:.3f} ms "
                  f"({cpu_ratio:.3f}x)", extra=extra, spread=pair.spread)


def plugin_sse_line(size: Size) -> Figure:
    mb, reps = (1, 1) if size == "smoke" else (16, 5)
    name = f"pytest plugin: one {mb} MB SSE line, on vs off"
    why = _available()
    if why:
        return Figure(name, 0.0, None, "s", "ratio<=", 5.0, 0, note=why, skipped=True)
    import httpx2

    from omnillm_sim import BudgetTracker, catalogue
    from pytest_omnillm import intercept
    from pytest_omnillm.session import BudgetSession
    from pytest_omnillm.settings import Budget

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 64, "stream": True, "stream_options": {"include_usage": True}}
    with _fake_server() as server:
        reply_cls = type(server.default)
        server.default = reply_cls(big_chunk=mb * 1_000_000)
        session = BudgetSession(
            prices=catalogue("current"), default_max_output=4096,
            session_budget=BudgetTracker.unlimited(), session_source="benchmark", enforce=True,
        )
        url = server.url + "/v1/chat/completions"

        def read() -> float:
            start = time.perf_counter()
            with httpx2.Client() as client, client.stream("POST", url, json=body) as response:
                for _ in response.iter_bytes():
                    pass
            return time.perf_counter() - start

        def watched() -> float:
            test = session.begin_test("bench::sse", Budget(10**9, "benchmark"))
            intercept.push_handler(session)
            try:
                return read()
            finally:
                intercept.pop_handler(session)
                session.end_test(test)
                statuses = [r.status for r in test.requests]
                if statuses != ["ok"]:
                    raise RuntimeError(f"the plugin did not read the stream's usage: {statuses}")

        ours, base = side_by_side(watched, read, reps)
    return Figure(name, ours, base, "s", "ratio<=", 5.0, reps,
                  note=f"median of {reps} reads; httpx2 stream -> fake server on 127.0.0.1, "
                  "plugin handler active vs none")


BENCHMARKS = [plugin_suite, plugin_request, plugin_sse_line]
