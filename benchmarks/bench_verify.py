"""Verification speed: exhaustive interleaving exploration and the linearizability checker.

Absolute figures (no baseline exists): seconds per run, median of a few repetitions. Run with
``python benchmarks/bench_verify.py [--smoke]``; ``BENCHMARKS`` plugs into ``python -m
benchmarks`` like the other modules.

The million-operation figure runs in a child process (``python -m benchmarks.bench_verify
million N``, measured from outside by `benchmarks.harness.run_child`): 8 real threads record
N operations on one `BudgetTracker` (limit 1,000 micro-dollars, estimates 50-400, each
admitted call released or settled at cost 0 so that the budget stays contended all run, and
5% of them ended a second time, which fails), with Python's default thread switch interval;
then `check_history` on it (wall and CPU time), then on the same history with one result
flipped (a settle in the middle that succeeded, recorded as failed: no order explains it,
since the same thread's reserve returned before), whose reason must name that settle. The
peak RSS is the whole child's: threads, history and both checks.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ChildRun, Figure, Size, run_child, timed
from omnillm_sim.budget import BudgetTracker
from omnillm_sim.verify.explore import explore_exhaustive
from omnillm_sim.verify.linearizability import (
    History,
    HistoryRecorder,
    Operation,
    check_history,
)
from omnillm_sim.verify.tracker_models import MODELS


def _median(fn: Callable[[], object], reps: int) -> float:
    run = timed(fn)
    return statistics.median(run() for _ in range(reps))


def _explore(model: str, clients: int, bound: int | None, size: Size, requests: int = 1) -> Figure:
    reps = 1 if size == "smoke" else 5
    info: dict[str, float] = {}

    def once() -> None:
        result = explore_exhaustive(MODELS[model](clients, requests=requests), preemptions=bound)
        info["runs"] = result.runs
        info["failing_runs"] = result.failing_runs

    seconds = _median(once, reps)
    bound_text = "unbounded" if bound is None else f"bound {bound}"
    per = "" if requests == 1 else f" x {requests} requests"
    command = f"omnillm-sim verify explore --model {model} --clients {clients}"
    command += " --unbounded" if bound is None else f" --preemptions {bound}"
    command += "" if requests == 1 else f" --requests {requests}"
    return Figure(
        f"explore {model}, {clients} clients{per}, {bound_text}",
        seconds,
        None,
        "s",
        "value<=",
        5.0,
        reps,
        note=f"{int(info['runs']):,} schedules, {int(info['failing_runs'])} failing (the time"
        f" includes minimising them); command: {command}",
        extra=info,
    )


def explore_cas(size: Size) -> Figure:
    return _explore("cas", 3, 2, size)


def explore_check_then_act(size: Size) -> Figure:
    return _explore("check-then-act", 3, 2, size)


def explore_locked(size: Size) -> Figure:
    return _explore("locked", 3, 2, size)


def explore_double_settle(size: Size) -> Figure:
    return _explore("double-settle", 3, 2, size)


def explore_cas_unbounded(size: Size) -> Figure:
    return _explore("cas", 3, None, size)


def explore_cas_larger(size: Size) -> Figure:
    return _explore("cas", 4, 2, size, requests=2)


def synthetic_history(ops: int, budgets: int, overlap: float, seed: int) -> History:
    """A run of the sequential model (one call per time unit), each interval then widened by up
    to ``overlap`` units on each side around its moment, so calls overlap ~2x``overlap`` others.
    """
    rng = random.Random(seed)
    limits = {f"b{k}": 1_000 for k in range(budgets)}
    used = dict.fromkeys(limits, 0)
    open_: dict[str, dict[int, int]] = {name: {} for name in limits}
    out: list[Operation] = []
    for rid in range(ops):
        name = rng.choice(list(limits))
        moment = float(rid)
        call, ret = moment - rng.uniform(0, overlap), moment + rng.uniform(0, overlap)
        if open_[name] and rng.random() < 0.5:
            which = rng.choice(list(open_[name]))
            est = open_[name].pop(which)
            actual = rng.randint(0, est + 50)
            used[name] += actual - est
            out.append(Operation("settle", name, which, actual, call, ret, "ok"))
            continue
        est = rng.randint(50, 400)
        if used[name] + est <= limits[name]:
            used[name] += est
            open_[name][rid] = est
            out.append(Operation("reserve", name, rid, est, call, ret, "admitted"))
        else:
            out.append(Operation("reserve", name, rid, est, call, ret, "refused"))
    return History(limits, tuple(out))


def threaded_history(ops: int, budgets: int, threads: int) -> History:
    """Real threads on our BudgetTracker, recorded (about ``ops`` operations)."""
    recorder = HistoryRecorder()
    trackers = [
        recorder.wrap(BudgetTracker.from_micros(1_000, name=f"b{k}")) for k in range(budgets)
    ]
    issued = itertools.count()  # a shared ticket per operation: stop at about ``ops``
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while next(issued) < ops:
            tracker = rng.choice(trackers)
            r = tracker.reserve(rng.randint(50, 400), client=seed)
            if r is not None:
                next(issued)
                tracker.settle(r, rng.randint(0, 450), client=seed)

    try:
        workers = [threading.Thread(target=client, args=(s,)) for s in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(before)
    return recorder.history()


def _check(name: str, history: History, size: Size, how: str) -> Figure:
    reps = 1 if size == "smoke" else 5
    info: dict[str, float] = {}

    def once() -> None:
        result = check_history(history)
        assert result.ok, result.reason
        info["operations"] = result.operations
        info["states"] = sum(p.states for p in result.partitions)

    seconds = _median(once, reps)
    return Figure(
        name,
        seconds,
        None,
        "s",
        "value<=",
        5.0,
        reps,
        note=f"{int(info['operations']):,} operations, {len(history.limits)} budget(s), "
        f"{int(info['states']):,} states; {how}",
        extra=info,
    )


def check_one_budget(size: Size) -> Figure:
    n = 500 if size == "smoke" else 10_000
    history = synthetic_history(n, 1, 4.0, seed=1)
    return _check("linearizability: synthetic, 1 budget", history, size, "synthetic, overlap 4")


def check_hundred_budgets(size: Size) -> Figure:
    n = 500 if size == "smoke" else 10_000
    history = synthetic_history(n, 100, 4.0, seed=2)
    return _check("linearizability: synthetic, 100 budgets", history, size, "synthetic, overlap 4")


def check_threads(size: Size) -> Figure:
    n = 500 if size == "smoke" else 10_000
    history = threaded_history(n, 4, 8)
    return _check("linearizability: 8 real threads", history, size, "HistoryRecorder on 4 trackers")


def check_rejection(size: Size) -> Figure:
    """The time to reject: one reserve in the middle of the history has its result flipped."""
    n = 500 if size == "smoke" else 10_000
    history = synthetic_history(n, 1, 4.0, seed=3)
    ops = list(history.operations)
    k = next(i for i in range(n // 2, n) if ops[i].op == "reserve")
    flip = {"admitted": "refused", "refused": "admitted"}
    op = ops[k]
    ops[k] = Operation(op.op, op.budget, op.rid, op.amount, op.call, op.ret, flip[op.result or ""])
    bad = History(history.limits, tuple(ops))
    reps = 1 if size == "smoke" else 5
    info: dict[str, float] = {}

    def once() -> None:
        result = check_history(bad)
        assert not result.ok
        info["states"] = sum(p.states for p in result.partitions)

    seconds = _median(once, reps)
    return Figure(
        "linearizability: reject a flipped result",
        seconds,
        None,
        "s",
        "value<=",
        5.0,
        reps,
        note=f"{n:,} operations, 1 budget, one result flipped at #{k}; "
        f"{int(info['states']):,} states",
        extra=info,
    )


def contended_history(ops: int, threads: int = 8, seed: int = 0) -> History:
    """``ops`` operations of 8 real threads on one contended budget (see the module doc)."""
    recorder = HistoryRecorder()
    budget = recorder.wrap(BudgetTracker.from_micros(1_000, name="b"))
    issued = itertools.count()

    def client(k: int) -> None:
        rng = random.Random(seed * 1_000 + k)
        while next(issued) < ops:
            r = budget.reserve(rng.randint(50, 400), client=k)
            if r is None:
                continue
            next(issued)
            if rng.random() < 0.3:
                budget.release(r, client=k)
            else:
                budget.settle(r, 0, client=k)
            if rng.random() < 0.05:
                next(issued)
                budget.release(r, client=k)  # a second end: fails

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return recorder.history()


def _mean_in_flight(operations: list[Operation]) -> float:
    """How many other calls are in flight, on average, when a call returns."""
    events = sorted(
        [(op.call, 0) for op in operations] + [(op.ret, 1) for op in operations if op.ret]
    )
    in_flight = total = returns = 0
    for _, kind in events:
        if kind == 0:
            in_flight += 1
        else:
            in_flight -= 1
            total += in_flight
            returns += 1
    return total / max(returns, 1)


def million_child(ops: int) -> dict[str, object]:
    """Record, check, flip one result, check again; print the figures as JSON."""
    start = time.perf_counter()
    history = contended_history(ops)
    recorded = time.perf_counter() - start
    operations = list(history.operations)
    overlapping = _mean_in_flight(operations)
    wall, cpu = time.perf_counter(), time.process_time()
    result = check_history(history)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    part = result.partitions[0]
    k = next(
        i
        for i in range(len(operations) // 2, len(operations))
        if operations[i].op == "settle" and operations[i].result == "ok"
    )
    flipped = dataclasses.replace(operations[k], result="error")
    operations[k] = flipped
    bad = History(history.limits, tuple(operations))
    bad_wall, bad_cpu = time.perf_counter(), time.process_time()
    rejected = check_history(bad)
    bad_wall, bad_cpu = time.perf_counter() - bad_wall, time.process_time() - bad_cpu
    return {
        "operations": len(operations),
        "overlapping": overlapping,
        "record_s": recorded,
        "ok": result.ok,
        "check_s": wall,
        "check_cpu_s": cpu,
        "searched": part.searched,
        "rejected": not rejected.ok,
        "explained": flipped.describe() in rejected.reason,
        "reject_s": bad_wall,
        "reject_cpu_s": bad_cpu,
        "reject_searched": rejected.partitions[0].searched,
        "reason": rejected.reason,
    }


_MILLION: dict[str, tuple[ChildRun, dict[str, Any]]] = {}  # one child run feeds both rows


def _million(size: Size) -> tuple[ChildRun, dict[str, Any]]:
    if size not in _MILLION:
        n = 20_000 if size == "smoke" else 1_000_000
        child = run_child([sys.executable, "-m", "benchmarks.bench_verify", "million", str(n)])
        _MILLION[size] = (child, json.loads(child.stdout))
    return _MILLION[size]


def check_million(size: Size) -> Figure:
    """CPU seconds of the check (the wall time, printed beside, also counts other jobs)."""
    child, info = _million(size)
    assert info["ok"], "the recorded history must be linearizable"
    assert info["rejected"] and info["explained"], info["reason"]
    return Figure(
        f"linearizability: {info['operations']:,} ops, 8 threads (CPU s)",
        info["check_cpu_s"],
        None,
        "s",
        "value<=",
        10.0,
        1,
        note=f"check {info['check_cpu_s']:.1f} s CPU ({info['check_s']:.1f} s wall; "
        f"{info['searched']:,} operations re-decided by the search); recording took "
        f"{info['record_s']:.1f} s; on average {info['overlapping']:.1f} other calls in "
        "flight at a return; "
        f"one settle flipped to failed: rejected and named in {info['reject_cpu_s']:.1f} s "
        f"CPU ({info['reject_s']:.1f} s wall); peak RSS of the whole child "
        f"{child.peak_rss_mb:,.0f} MB (target 1,024 MB)",
        extra={
            "check_cpu_s": info["check_cpu_s"],
            "reject_s": info["reject_s"],
            "reject_cpu_s": info["reject_cpu_s"],
            "peak_rss_mb": child.peak_rss_mb,
            "searched": float(info["searched"]),
        },
    )


def check_million_memory(size: Size) -> Figure:
    """Peak RSS of the same child (a separate row so that both targets show)."""
    child, info = _million(size)
    return Figure(
        f"linearizability: {info['operations']:,} ops: peak RSS (MB)",
        child.peak_rss_mb,
        None,
        "MB",
        "value<=",
        1024.0,
        1,
        note="whole child process (8 threads recording, the history, both checks), "
        f"kernel ru_maxrss; {child.seconds:.0f} s wall for the whole child",
    )


BENCHMARKS = [
    explore_cas,
    explore_check_then_act,
    explore_locked,
    explore_double_settle,
    explore_cas_unbounded,
    explore_cas_larger,
    check_one_budget,
    check_hundred_budgets,
    check_threads,
    check_rejection,
    check_million,
    check_million_memory,
]


def main() -> int:
    from benchmarks.__main__ import render
    from benchmarks.harness import machine

    size: Size = "smoke" if "--smoke" in sys.argv[1:] else "full"
    info = machine()
    print(f"machine: {info['cores']} cores, Python {info['python']} ({info['platform']})")
    started = time.perf_counter()
    figures = [bench(size) for bench in BENCHMARKS]
    print(render(figures))
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0 if all(f.passed for f in figures) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "million":
        print(json.dumps(million_child(int(sys.argv[2]))))
        raise SystemExit(0)
    raise SystemExit(main())
