"""Interleaving explorer: run client programs over shared memory under chosen schedules.

A *model* is a set of client programs and some shared memory cells. Each program is a
generator that yields one atomic step at a time — `Load`, `Store`, `CompareAndSwap`,
`FetchAdd`, `FetchSub`, `Acquire`, `Release` — and receives the step's result back (the value
read, whether the CAS succeeded, the previous value of a fetch-add). Programs also yield ghost
*events* (`Admitted`, `Refused`, `Settled`) that record what an operation returned; events are
not scheduled, they take effect together with the step before them, so they mark linearization
points. Cells hold ``u64`` values: arithmetic wraps modulo 2**64 like Rust's atomics, and every
wrap is reported.

A *schedule* is the sequence of client numbers that run one step each. Schedulers:

* `explore_exhaustive`: every schedule with at most K preemptions (a preemption is a switch
  away from a client that could have continued), by stateless depth-first search; each
  schedule is executed from the initial state exactly once;
* `explore_random`: uniformly random choices among the runnable clients, seeded;
* `explore_pct`: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010): random
  priorities with ``depth - 1`` priority change points; one run finds a given bug of depth
  ``d`` with probability at least ``1 / (n * k**(d - 1))`` (n clients, k steps).

Checked after every step: no counter wrapped, and the ghost ledger stays within the limit
(``open estimates + settled actuals <= limit + underestimated``, invariant I3 of DESIGN.md,
which is I2 when no actual exceeds its estimate) — a violation of this is *over-admission*. At
the end of a complete run the counter must equal the ghost ledger (no lost update, no double
refund). Every run carries a replayable schedule string (``format_schedule``: ``"0,1*3,0"``
means client 0 once, client 1 three times, client 0 once; after the string ends, the current
client continues, then the lowest-numbered runnable one). `minimise` shrinks a failing
schedule to the fewest steps, then the fewest preemptions.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.validate import non_negative_int, positive_int
from omnillm_sim.verify.steps import (
    Acquire,
    Action,
    Admitted,
    CompareAndSwap,
    Event,
    FetchAdd,
    FetchSub,
    Load,
    Op,
    Program,
    Refused,
    Release,
    Settled,
    Step,
    Store,
    show_u64,
)

__all__ = [
    "Acquire",
    "Action",
    "Admitted",
    "CompareAndSwap",
    "Event",
    "Execution",
    "Exploration",
    "FetchAdd",
    "FetchSub",
    "Load",
    "Model",
    "Op",
    "Program",
    "Refused",
    "Release",
    "Settled",
    "Step",
    "Store",
    "TraceEntry",
    "Violation",
    "explore_exhaustive",
    "explore_pct",
    "explore_random",
    "format_schedule",
    "minimise",
    "parse_schedule",
    "render_trace",
    "replay",
]

DEFAULT_MAX_STEPS = 10_000


# -- models and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """Client programs over shared memory, with the budget they must respect.

    ``programs[i]()`` starts client ``i``. ``counter`` is the cell that must equal the ghost
    ledger at the end of a run. ``invariant(memory)`` (optional) returns a message when the
    memory is bad, checked after every step.
    """

    name: str
    description: str
    programs: tuple[Callable[[], Program], ...]
    memory: Mapping[str, int]
    limit: int
    counter: str = "used"
    thread_names: tuple[str, ...] = ()
    invariant: Callable[[Mapping[str, int]], str | None] | None = None
    parameters: str = ""

    def __post_init__(self) -> None:
        positive_int("clients", len(self.programs))
        if self.counter not in self.memory:
            raise InvalidValueError("counter", self.counter, "must name a memory cell")
        if self.thread_names and len(self.thread_names) != len(self.programs):
            raise InvalidValueError(
                "thread_names", self.thread_names, f"must name all {len(self.programs)} clients"
            )

    @property
    def clients(self) -> int:
        """The number of client programs (threads)."""
        return len(self.programs)

    def thread_name(self, tid: int) -> str:
        """``c0``, ``c1``, ... unless the model names its threads."""
        return self.thread_names[tid] if self.thread_names else f"c{tid}"


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One executed step: who ran it, its result, and the events it completed."""

    thread: int
    step: Step
    result: Any
    events: tuple[Event, ...]
    wrapped: bool


@dataclass(frozen=True, slots=True)
class Violation:
    """What went wrong: ``kind`` is "over-admitted", "wrap", "drift", "deadlock",
    "step-limit" or "invariant"; ``step`` is how many steps had run."""

    kind: str
    detail: str
    step: int

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail} (after step {self.step})"


@dataclass(frozen=True)
class Execution:
    """One run: the schedule it followed, its trace and how it ended."""

    schedule: tuple[int, ...]
    trace: tuple[TraceEntry, ...]
    violation: Violation | None
    memory: Mapping[str, int]
    preemptions: int
    complete: bool

    @property
    def schedule_string(self) -> str:
        """The replayable schedule (`format_schedule`)."""
        return format_schedule(self.schedule)

    @property
    def ok(self) -> bool:
        """True when the run ended without a violation."""
        return self.violation is None


@dataclass
class Exploration:
    """The outcome of a search: how many runs, and the first failing run of each kind.

    ``failures[kind]`` is the first run that failed that way, ``minimised[kind]`` the same
    failure shrunk by `minimise`, ``failure_counts[kind]`` how many runs failed that way.
    ``counter_values`` counts the counter's final value over complete runs.
    """

    model: Model
    strategy: str
    runs: int = 0
    max_preemptions: int = 0
    max_steps: int = 0
    failures: dict[str, Execution] = field(default_factory=dict)
    failure_counts: dict[str, int] = field(default_factory=dict)
    minimised: dict[str, Execution] = field(default_factory=dict)
    last: Execution | None = None
    counter_values: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no run violated anything."""
        return not self.failures

    @property
    def failing_runs(self) -> int:
        """How many runs failed, of any kind."""
        return sum(self.failure_counts.values())


# -- the machine -------------------------------------------------------------------------------


class _Machine:
    """Memory, locks, client generators and the ghost ledger of one run."""

    __slots__ = (
        "gens",
        "locks",
        "memory",
        "model",
        "open",
        "pending",
        "spent",
        "under",
        "wrapped",
    )

    def __init__(self, model: Model) -> None:
        self.model = model
        self.memory = dict(model.memory)
        self.locks: dict[str, int] = {}
        self.open = 0
        self.spent = 0
        self.under = 0
        self.wrapped = False
        self.gens = [program() for program in model.programs]
        self.pending: list[Step | None] = [None] * len(self.gens)
        for tid in range(len(self.gens)):
            self._advance(tid, None, [])

    def _advance(self, tid: int, value: Any, events: list[Event]) -> None:
        gen = self.gens[tid]
        try:
            action = gen.send(value)
            while not isinstance(action, Step):
                if not isinstance(action, Event):
                    raise InvalidValueError(
                        "program", action, f"of {self.model.thread_name(tid)} yielded a non-step"
                    )
                self._ghost(action)
                events.append(action)
                action = gen.send(None)
        except StopIteration:
            self.pending[tid] = None
            return
        self.pending[tid] = action

    def _ghost(self, event: Event) -> None:
        if isinstance(event, Admitted):
            self.open += event.estimate
        elif isinstance(event, Settled):
            self.open -= event.estimate
            self.spent += event.actual
            self.under += max(event.actual - event.estimate, 0)

    def enabled(self) -> list[int]:
        locks = self.locks
        return [t for t, s in enumerate(self.pending) if s is not None and s.enabled(locks)]

    def done(self) -> bool:
        return all(s is None for s in self.pending)

    def run(self, tid: int) -> TraceEntry:
        step = self.pending[tid]
        assert step is not None
        result, wrapped = step.execute(self.memory, self.locks, tid)
        events: list[Event] = []
        self._advance(tid, result, events)
        self.wrapped = wrapped
        return TraceEntry(tid, step, result, tuple(events), wrapped)

    def check_step(self, entry: TraceEntry, index: int) -> Violation | None:
        model = self.model
        if entry.wrapped:
            step = entry.step
            cell = getattr(step, "cell", model.counter)
            return Violation(
                "wrap",
                f"{model.thread_name(entry.thread)}'s {step.kind} wrapped {cell} to "
                f"{show_u64(self.memory[cell])}",
                index,
            )
        ghost = self.open + self.spent
        if ghost > model.limit + self.under:
            return Violation(
                "over-admitted",
                f"admitted reservations and settled costs hold {ghost} > limit {model.limit}"
                + (f" + underestimated {self.under}" if self.under else ""),
                index,
            )
        if model.invariant is not None:
            message = model.invariant(self.memory)
            if message:
                return Violation("invariant", message, index)
        return None

    def check_end(self, index: int) -> Violation | None:
        value = self.memory[self.model.counter]
        ghost = self.open + self.spent
        if value != ghost:
            return Violation(
                "drift",
                f"{self.model.counter} = {show_u64(value)} at the end, but the operations' "
                f"results account for {ghost} (a lost update or a double refund)",
                index,
            )
        return None


class _Chooser(Protocol):
    def choose(
        self, index: int, enabled: list[int], current: int | None, preempted: int
    ) -> int: ...


def _execute(model: Model, chooser: _Chooser, max_steps: int) -> Execution:
    machine = _Machine(model)
    schedule: list[int] = []
    trace: list[TraceEntry] = []
    current: int | None = None
    preemptions = 0
    violation: Violation | None = None
    complete = False
    while True:
        enabled = machine.enabled()
        if not enabled:
            if machine.done():
                complete = True
                violation = machine.check_end(len(schedule))
            else:
                waiting = [model.thread_name(t) for t, s in enumerate(machine.pending) if s]
                violation = Violation(
                    "deadlock", f"{', '.join(waiting)} wait forever", len(schedule)
                )
            break
        if len(schedule) >= max_steps:
            violation = Violation(
                "step-limit", f"no end after {max_steps} steps (livelock?)", len(schedule)
            )
            break
        tid = chooser.choose(len(schedule), enabled, current, preemptions)
        if current is not None and tid != current and current in enabled:
            preemptions += 1
        entry = machine.run(tid)
        schedule.append(tid)
        trace.append(entry)
        current = tid
        violation = machine.check_step(entry, len(schedule))
        if violation is not None:
            break
    return Execution(
        tuple(schedule), tuple(trace), violation, dict(machine.memory), preemptions, complete
    )


# -- schedules ---------------------------------------------------------------------------------

_ENTRY = re.compile(r"^(\d+)(?:\*(\d+))?$")


def format_schedule(schedule: Sequence[int]) -> str:
    """``[0, 1, 1, 1, 0]`` -> ``"0,1*3,0"`` (runs of one client are compressed)."""
    parts: list[str] = []
    i = 0
    while i < len(schedule):
        j = i
        while j < len(schedule) and schedule[j] == schedule[i]:
            j += 1
        parts.append(str(schedule[i]) if j - i == 1 else f"{schedule[i]}*{j - i}")
        i = j
    return ",".join(parts)


def parse_schedule(text: str) -> list[int]:
    """The inverse of `format_schedule`; blanks are ignored, an empty string is ``[]``.

    Raises:
        InvalidValueError: an entry that is not ``N`` or ``N*COUNT``.
    """
    out: list[int] = []
    cleaned = text.replace(" ", "").strip(",")
    if not cleaned:
        return out
    for number, part in enumerate(cleaned.split(","), start=1):
        match = _ENTRY.match(part)
        if match is None:
            raise InvalidValueError(
                "schedule", text, f"entry {number} ({part!r}) must be CLIENT or CLIENT*COUNT"
            )
        out.extend([int(match.group(1))] * int(match.group(2) or 1))
    return out


class _Replay:
    """Follow a schedule, then continue with the current client, then the lowest runnable one."""

    def __init__(self, model: Model, schedule: Sequence[int], *, strict: bool) -> None:
        self.model = model
        self.schedule = list(schedule)
        self.pos = 0
        self.strict = strict

    def choose(self, index: int, enabled: list[int], current: int | None, preempted: int) -> int:
        while self.pos < len(self.schedule):
            tid = self.schedule[self.pos]
            self.pos += 1
            if tid in enabled:
                return tid
            if self.strict:
                raise InvalidValueError(
                    "schedule",
                    format_schedule(self.schedule),
                    f"step {index + 1} runs client {tid}, which cannot run then (finished or "
                    "waiting for a lock)",
                )
        return current if current is not None and current in enabled else enabled[0]


def replay(
    model: Model, schedule: str | Sequence[int], *, max_steps: int = DEFAULT_MAX_STEPS
) -> Execution:
    """Run ``model`` under ``schedule`` (a string from `format_schedule`, or client numbers).

    Raises:
        InvalidValueError: the schedule is malformed or names a client that cannot run at
            that step (finished, waiting for a lock, or no such client).
    """
    steps = parse_schedule(schedule) if isinstance(schedule, str) else list(schedule)
    for tid in steps:
        if not 0 <= tid < model.clients:
            raise InvalidValueError(
                "schedule",
                format_schedule(steps),
                f"names client {tid}, but the model has clients 0..{model.clients - 1}",
            )
    return _execute(model, _Replay(model, steps, strict=True), max_steps)


# -- search strategies -------------------------------------------------------------------------


class _Frame:
    __slots__ = ("alternatives", "chosen")

    def __init__(self, chosen: int, alternatives: list[int]) -> None:
        self.chosen = chosen
        self.alternatives = alternatives


class _DepthFirst:
    """Stateless DFS over the choice tree: replays the kept prefix, extends it by default."""

    def __init__(self, bound: int | None) -> None:
        self.bound = bound
        self.frames: list[_Frame] = []

    def choose(self, index: int, enabled: list[int], current: int | None, preempted: int) -> int:
        if index < len(self.frames):
            return self.frames[index].chosen
        can_continue = current is not None and current in enabled
        default = current if can_continue and current is not None else enabled[0]
        if can_continue and self.bound is not None and preempted >= self.bound:
            alternatives: list[int] = []  # any switch now would be one preemption too many
        else:
            alternatives = [t for t in enabled if t != default]
        self.frames.append(_Frame(default, alternatives))
        return default

    def backtrack(self) -> bool:
        frames = self.frames
        while frames:
            frame = frames[-1]
            if frame.alternatives:
                frame.chosen = frame.alternatives.pop()
                return True
            frames.pop()
        return False


class _Random:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, index: int, enabled: list[int], current: int | None, preempted: int) -> int:
        return enabled[self.rng.randrange(len(enabled))]


class _PCT:
    """Highest priority runs; at change point ``k_i`` the running client drops to priority i."""

    def __init__(self, rng: random.Random, clients: int, depth: int, steps: int) -> None:
        priorities = list(range(depth, depth + clients))
        rng.shuffle(priorities)
        self.priority = priorities
        points = rng.sample(range(1, steps + 1), min(depth - 1, steps))
        self.changes = {point: i for i, point in enumerate(points, start=1)}

    def choose(self, index: int, enabled: list[int], current: int | None, preempted: int) -> int:
        prio = self.priority
        tid = max(enabled, key=prio.__getitem__)
        lowered = self.changes.get(index + 1)
        if lowered is not None:
            prio[tid] = lowered
            tid = max(enabled, key=prio.__getitem__)
        return tid


RunCallback = Callable[[int, Execution], None]


def _record(result: Exploration, execution: Execution, on_run: RunCallback | None) -> None:
    result.runs += 1
    result.last = execution
    result.max_preemptions = max(result.max_preemptions, execution.preemptions)
    result.max_steps = max(result.max_steps, len(execution.schedule))
    if execution.complete:
        value = execution.memory[result.model.counter]
        result.counter_values[value] = result.counter_values.get(value, 0) + 1
    if execution.violation is not None:
        kind = execution.violation.kind
        result.failure_counts[kind] = result.failure_counts.get(kind, 0) + 1
        result.failures.setdefault(kind, execution)
    if on_run is not None:
        on_run(result.runs, execution)


def _finish(result: Exploration, minimise_failure: bool) -> Exploration:
    if minimise_failure:
        for kind, failing in result.failures.items():
            result.minimised[kind] = minimise(result.model, failing)
    return result


def explore_exhaustive(
    model: Model,
    *,
    preemptions: int | None = 2,
    stop_at_first: bool = False,
    minimise_failure: bool = True,
    on_run: RunCallback | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Exploration:
    """Run every schedule with at most ``preemptions`` preemptions (``None``: no bound).

    Each distinct schedule runs once, from the initial state. With ``stop_at_first`` the search
    ends at the first violation; the first failing run of each kind is minimised (`minimise`).
    ``on_run(n, execution)`` is called after every run.
    """
    if preemptions is not None:
        non_negative_int("preemptions", preemptions)
    bound = "unbounded" if preemptions is None else f"<= {preemptions} preemptions"
    result = Exploration(model, f"exhaustive DFS, {bound}")
    dfs = _DepthFirst(preemptions)
    while True:
        execution = _execute(model, dfs, max_steps)
        _record(result, execution, on_run)
        if execution.violation is not None and stop_at_first:
            break
        if not dfs.backtrack():
            break
    return _finish(result, minimise_failure)


def explore_random(
    model: Model,
    *,
    runs: int,
    seed: int = 0,
    stop_at_first: bool = False,
    minimise_failure: bool = True,
    on_run: RunCallback | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Exploration:
    """``runs`` schedules that pick uniformly among runnable clients (``random.Random(seed)``)."""
    positive_int("runs", runs)
    rng = random.Random(seed)
    result = Exploration(model, f"random, {runs} runs, seed {seed}")
    for _ in range(runs):
        execution = _execute(model, _Random(rng), max_steps)
        _record(result, execution, on_run)
        if execution.violation is not None and stop_at_first:
            break
    return _finish(result, minimise_failure)


def explore_pct(
    model: Model,
    *,
    runs: int,
    seed: int = 0,
    depth: int = 3,
    steps: int | None = None,
    stop_at_first: bool = False,
    minimise_failure: bool = True,
    on_run: RunCallback | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Exploration:
    """``runs`` PCT schedules of bug depth ``depth`` over about ``steps`` steps per run.

    ``steps`` defaults to the length of the non-preemptive run (client 0 to the end, then 1...).
    """
    positive_int("runs", runs)
    positive_int("depth", depth)
    if steps is None:
        steps = max(len(_execute(model, _Replay(model, [], strict=False), max_steps).schedule), 1)
    positive_int("steps", steps)
    rng = random.Random(seed)
    result = Exploration(model, f"PCT depth {depth}, {runs} runs, seed {seed}, k = {steps} steps")
    for _ in range(runs):
        execution = _execute(model, _PCT(rng, model.clients, depth, steps), max_steps)
        _record(result, execution, on_run)
        if execution.violation is not None and stop_at_first:
            break
    return _finish(result, minimise_failure)


# -- minimisation ------------------------------------------------------------------------------


def _cost(execution: Execution) -> tuple[int, int, tuple[int, ...]]:
    return (len(execution.schedule), execution.preemptions, execution.schedule)


def minimise(model: Model, failing: Execution, *, max_steps: int = DEFAULT_MAX_STEPS) -> Execution:
    """Shrink a failing run to the fewest steps, then the fewest preemptions.

    Candidates delete chunks of the schedule (halving sizes down to single entries) or change
    one entry to another client; each candidate is replayed leniently (entries naming a client
    that cannot run are skipped) and kept if it fails the same way at a lower cost. The result
    is a real execution whose schedule replays exactly.

    Raises:
        InvalidValueError: ``failing`` did not fail.
    """
    if failing.violation is None:
        raise InvalidValueError("failing", failing.schedule_string, "is not a failing run")
    kind = failing.violation.kind
    best = failing
    improved = True
    while improved:
        improved = False
        schedule = list(best.schedule)
        size = max(len(schedule) // 2, 1)
        candidates: list[list[int]] = []
        while True:
            for start in range(0, len(schedule), size):
                candidates.append(schedule[:start] + schedule[start + size :])
            if size == 1:
                break
            size //= 2
        for i in range(len(schedule)):
            for tid in range(model.clients):
                if tid != schedule[i]:
                    candidates.append([*schedule[:i], tid, *schedule[i + 1 :]])
        for a in range(model.clients):  # clients often run the same program: rename them
            for b in range(a + 1, model.clients):
                swap = {a: b, b: a}
                candidates.append([swap.get(t, t) for t in schedule])
        for candidate in candidates:
            run = _execute(model, _Replay(model, candidate, strict=False), max_steps)
            if (
                run.violation is not None
                and run.violation.kind == kind
                and _cost(run) < _cost(best)
            ):
                best = run
                improved = True
                break
    return best


# -- rendering ---------------------------------------------------------------------------------


def render_trace(model: Model, execution: Execution) -> str:
    """The run as numbered lines: step, client, what it did, which operations completed."""
    lines = []
    width = max((len(model.thread_name(t)) for t in range(model.clients)), default=2)
    for number, entry in enumerate(execution.trace, start=1):
        text = entry.step.describe(entry.result)
        done = "; ".join(event.describe() for event in entry.events)
        flag = "  WRAPPED" if entry.wrapped else ""
        line = f"  {number:>3}  {model.thread_name(entry.thread):<{width}}  {text:<44}"
        lines.append((line + (f"  {done}" if done else "") + flag).rstrip())
    if execution.violation is not None:
        lines.append(f"  violation: {execution.violation}")
    return "\n".join(lines)
