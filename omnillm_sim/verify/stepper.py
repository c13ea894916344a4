"""Run a few operations in real threads, interleaved one source line at a time, deterministically.

`Stepper` exposes check-then-act races in ordinary Python code without sleeps or luck: each
operation runs in its own thread under a line tracer (``sys.settrace``) limited to chosen
code objects; at every traced line the thread stops and waits until the scheduler grants it
one step. The scheduler picks the next thread from a *schedule*, a list of small integers
(``schedule[k] % len(runnable)`` at decision ``k``; once it is exhausted, the lowest
runnable thread), so the same schedule always produces the same interleaving, and Hypothesis
can draw and shrink schedules.

Locks: a thread blocked in a real lock held by a paused thread would stall the scheduler.
`Stepper.locks` patches ``threading.Lock`` and ``threading.RLock`` while the object under test
is built, so its locks are scheduler-aware: a thread that would block becomes non-runnable
until the lock is free (deterministic, no timeouts). A thread stuck on a primitive the stepper
cannot see raises `StepperError` after ``stall_timeout`` seconds instead of hanging.

Granularity is one source line: a read-modify-write on one line (``self.used += est``) is a
single step, so races inside one line are not explored.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import CodeType, FrameType, FunctionType
from typing import Any

__all__ = ["Outcome", "Stepper", "StepperError", "code_objects_of"]

_RealLock = threading.Lock
_RealRLock = threading.RLock
_active: Stepper | None = None


class StepperError(RuntimeError):
    """The operations deadlocked, or a thread blocked on something the stepper cannot see."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation returned (``value``) or raised (``error``)."""

    value: Any = None
    error: BaseException | None = None


def _nested(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _nested(const)


def code_objects_of(cls: type) -> frozenset[CodeType]:
    """Every code object of ``cls``'s methods (inherited ones too, except ``object``'s)."""
    codes: set[CodeType] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        for value in vars(klass).values():
            candidates = [value]
            if isinstance(value, staticmethod | classmethod):
                candidates = [value.__func__]
            elif isinstance(value, property):
                candidates = [value.fget, value.fset, value.fdel]
            for fn in candidates:
                fn = inspect.unwrap(fn) if callable(fn) else fn
                if isinstance(fn, FunctionType):
                    codes.update(_nested(fn.__code__))
    return frozenset(codes)


class _SchedLock:
    """A ``threading.Lock``/``RLock`` stand-in that the active stepper schedules around.

    Under a stepper only one thread runs at a time, so the lock's own fields need no guard.
    """

    def __init__(self, reentrant: bool) -> None:
        self._reentrant = reentrant
        self._owner: object = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        stepper = _active
        index = stepper._index() if stepper is not None else None
        me: object = ("thread", threading.get_ident()) if index is None else index
        while True:
            if self._owner is None or (self._reentrant and self._owner == me):
                self._owner = me
                self._count += 1
                if stepper is not None and index is not None:
                    stepper._held[index] += 1
                return True
            if not blocking:
                return False
            if stepper is None or index is None:
                raise StepperError(
                    "a lock of the object under test is held by a thread that is not "
                    "running (it raised while holding it?)"
                )
            stepper._pause(index, waiting=self)

    def release(self) -> None:
        if self._owner is None:
            raise RuntimeError("release unlocked lock")
        stepper = _active
        if stepper is not None and isinstance(self._owner, int):
            stepper._held[self._owner] -= 1
        self._count -= 1
        if self._count == 0:
            self._owner = None

    def locked(self) -> bool:
        return self._owner is not None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Stepper:
    """Runs operations in threads, one traced line per scheduling decision.

    ``codes``: the code objects whose lines are scheduling points (see `code_objects_of`).
    ``schedule``: the choices, as described in the module docstring. After `run`, ``steps``
    lists ``(thread, line)`` for every step taken, a readable record of the interleaving.
    Exactly one thread (or the scheduler) runs at any moment: a grant hands it the baton
    and it hands the baton back at its next step.
    """

    def __init__(
        self,
        codes: frozenset[CodeType],
        schedule: Sequence[int],
        *,
        stall_timeout: float = 10.0,
    ) -> None:
        self._codes = codes
        self._schedule = list(schedule)
        self._stall_timeout = stall_timeout
        # Raw locks used as binary semaphores (much cheaper than threading.Semaphore): a
        # thread releases the baton when it stops; the scheduler releases a grant to let a
        # thread take one step.
        self._baton = _RealLock()
        self._baton.acquire()
        self._grants: list[Any] = []
        self._done: list[bool] = []
        self._waiting: list[_SchedLock | None] = []
        self._line: list[int] = []
        self._held: list[int] = []
        self._idents: dict[int, int] = {}
        self.steps: list[tuple[int, int]] = []
        self.holding: list[bool] = []  # per step: did the thread hold a stepper lock then?

    @staticmethod
    @contextlib.contextmanager
    def locks() -> Iterator[None]:
        """While active, ``threading.Lock()``/``RLock()`` make scheduler-aware locks."""
        module: Any = threading  # the stand-ins are not the real lock types
        module.Lock = lambda: _SchedLock(False)
        module.RLock = lambda: _SchedLock(True)
        try:
            yield
        finally:
            module.Lock = _RealLock
            module.RLock = _RealRLock

    def _index(self) -> int | None:
        return self._idents.get(threading.get_ident())

    def _pause(self, index: int, *, waiting: _SchedLock | None = None) -> None:
        self._waiting[index] = waiting
        self._baton.release()
        self._grants[index].acquire()
        self._waiting[index] = None

    def _tracer(self, index: int) -> Callable[[FrameType, str, Any], Any]:
        codes = self._codes

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line":
                self._line[index] = frame.f_lineno
                self._pause(index)
            return local

        def global_(frame: FrameType, event: str, arg: Any) -> Any:
            return local if frame.f_code in codes else None

        return global_

    def run(self, operations: Sequence[Callable[[], Any]]) -> list[Outcome]:
        """Run ``operations`` concurrently under the schedule; their outcomes in order.

        Raises:
            StepperError: every unfinished thread waits for a lock (deadlock), or a thread
                ran ``stall_timeout`` seconds without reaching a step.
        """
        global _active
        n = len(operations)
        self._grants = [_RealLock() for _ in range(n)]
        for grant in self._grants:
            grant.acquire()
        self._done = [False] * n
        self._waiting = [None] * n
        self._line = [0] * n
        self._held = [0] * n
        outcomes: list[Outcome] = [Outcome()] * n

        def body(index: int) -> None:
            self._idents[threading.get_ident()] = index
            self._pause(index)
            sys.settrace(self._tracer(index))
            try:
                outcomes[index] = Outcome(value=operations[index]())
            except BaseException as exc:
                outcomes[index] = Outcome(error=exc)
            finally:
                sys.settrace(None)
                self._done[index] = True
                self._baton.release()

        previous, _active = _active, self
        threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
        try:
            for thread in threads:  # one at a time: the baton holds one release
                thread.start()
                self._take_baton()
            self._schedule_loop(n)
        finally:
            _active = previous
        for thread in threads:
            thread.join()
        return outcomes

    def _take_baton(self) -> None:
        if not self._baton.acquire(timeout=self._stall_timeout):
            raise StepperError(
                f"a thread did not reach its next step within {self._stall_timeout} s: "
                "blocked on a lock created outside Stepper.locks()?"
            )

    def _schedule_loop(self, n: int) -> None:
        decision = 0
        while not all(self._done):
            runnable = [
                i
                for i in range(n)
                if not self._done[i]
                and (self._waiting[i] is None or self._waiting[i]._owner is None)  # type: ignore[union-attr]
            ]
            if not runnable:
                raise StepperError("deadlock: every unfinished thread waits for a lock")
            choice = self._schedule[decision] if decision < len(self._schedule) else 0
            decision += 1
            index = runnable[choice % len(runnable)]
            self.steps.append((index, self._line[index]))
            self.holding.append(self._held[index] > 0)
            self._grants[index].release()
            self._take_baton()

    def describe(self) -> str:
        """The interleaving that ran, as ``T0:12 T0:13 T1:12 ...`` (thread:line before step)."""
        return " ".join(f"T{i}:{line}" if line else f"T{i}:start" for i, line in self.steps)
