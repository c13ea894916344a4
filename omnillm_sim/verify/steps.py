"""The atomic steps and ghost events that explorer programs yield (`omnillm_sim.verify.explore`).

A program is a generator: it yields a `Step` and receives the step's result — the value a
`Load` read, whether a `CompareAndSwap` succeeded, the previous value of a `FetchAdd` or
`FetchSub`, ``None`` for the rest. Cells hold ``u64`` values; arithmetic wraps modulo 2**64 like
Rust's atomics, and each step reports whether it wrapped. An `Event` (`Admitted`, `Refused`,
`Settled`) is not scheduled: it records what an operation returned and takes effect together
with the step before it, so it marks the operation's linearization point.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.money import U64_MAX

__all__ = [
    "Acquire",
    "Action",
    "Admitted",
    "CompareAndSwap",
    "Event",
    "FetchAdd",
    "FetchSub",
    "Load",
    "Op",
    "Program",
    "Refused",
    "Release",
    "Settled",
    "Step",
    "Store",
    "show_u64",
]

_MOD = U64_MAX + 1


def show_u64(value: int) -> str:
    """A counter value, with its distance below 2**64 when it has wrapped near the top."""
    if value > _MOD // 2:
        return f"{value} (2**64 - {_MOD - value})"
    return str(value)


# -- steps and events --------------------------------------------------------------------------


class Step:
    """One atomic shared-memory step; the scheduler may switch clients between any two."""

    __slots__ = ()
    kind: ClassVar[str] = "step"

    def enabled(self, locks: Mapping[str, int]) -> bool:
        """Whether the step can run now (only `Acquire` of a held lock cannot)."""
        return True

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        """Perform the step; return its result and whether a ``u64`` value wrapped."""
        raise NotImplementedError

    def describe(self, result: Any) -> str:
        """One line for a trace, given the step's result."""
        raise NotImplementedError


def _write(memory: dict[str, int], cell: str, value: int) -> bool:
    memory[cell] = value % _MOD
    return not 0 <= value < _MOD


@dataclass(frozen=True, slots=True)
class Load(Step):
    """Read a cell; the result is its value."""

    cell: str
    kind: ClassVar[str] = "load"

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        return memory[self.cell], False

    def describe(self, result: Any) -> str:
        return f"load {self.cell} -> {show_u64(result)}"


@dataclass(frozen=True, slots=True)
class Store(Step):
    """Write a cell (a value outside ``u64`` is reduced modulo 2**64 and reported)."""

    cell: str
    value: int
    kind: ClassVar[str] = "store"

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        return None, _write(memory, self.cell, self.value)

    def describe(self, result: Any) -> str:
        return f"store {self.cell} := {show_u64(self.value % _MOD)}"


@dataclass(frozen=True, slots=True)
class CompareAndSwap(Step):
    """Set ``cell`` to ``new`` iff it holds ``expected``; the result is whether it did."""

    cell: str
    expected: int
    new: int
    kind: ClassVar[str] = "cas"

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        if memory[self.cell] != self.expected:
            return False, False
        return True, _write(memory, self.cell, self.new)

    def describe(self, result: Any) -> str:
        verdict = "ok" if result else "failed"
        return f"cas {self.cell} {show_u64(self.expected)} -> {show_u64(self.new)}: {verdict}"


@dataclass(frozen=True, slots=True)
class FetchAdd(Step):
    """``cell += delta`` (wrapping); the result is the previous value."""

    cell: str
    delta: int
    kind: ClassVar[str] = "fetch_add"

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        old = memory[self.cell]
        return old, _write(memory, self.cell, old + self.delta)

    def describe(self, result: Any) -> str:
        new = (result + self.delta) % _MOD
        return f"fetch_add {self.cell} += {self.delta}: {show_u64(result)} -> {show_u64(new)}"


@dataclass(frozen=True, slots=True)
class FetchSub(Step):
    """``cell -= delta`` (wrapping, like Rust's ``fetch_sub``); the result is the previous value."""

    cell: str
    delta: int
    kind: ClassVar[str] = "fetch_sub"

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        old = memory[self.cell]
        return old, _write(memory, self.cell, old - self.delta)

    def describe(self, result: Any) -> str:
        new = (result - self.delta) % _MOD
        return f"fetch_sub {self.cell} -= {self.delta}: {show_u64(result)} -> {show_u64(new)}"


@dataclass(frozen=True, slots=True)
class Acquire(Step):
    """Take a mutex; a client waiting for a held mutex is not runnable (waiting is no step)."""

    lock: str
    kind: ClassVar[str] = "lock"

    def enabled(self, locks: Mapping[str, int]) -> bool:
        return self.lock not in locks

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        locks[self.lock] = tid
        return None, False

    def describe(self, result: Any) -> str:
        return f"lock {self.lock}"


@dataclass(frozen=True, slots=True)
class Release(Step):
    """Give a mutex back."""

    lock: str
    kind: ClassVar[str] = "unlock"

    def execute(self, memory: dict[str, int], locks: dict[str, int], tid: int) -> tuple[Any, bool]:
        if locks.get(self.lock) != tid:
            raise InvalidValueError(
                "lock", self.lock, f"released by c{tid}, which does not hold it"
            )
        del locks[self.lock]
        return None, False

    def describe(self, result: Any) -> str:
        return f"unlock {self.lock}"


class Event:
    """A ghost record of what an operation returned; it takes effect with the preceding step."""

    __slots__ = ()

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Admitted(Event):
    """A reserve of ``estimate`` returned "admitted"."""

    estimate: int

    def describe(self) -> str:
        return f"reserve({self.estimate}) admitted"


@dataclass(frozen=True, slots=True)
class Refused(Event):
    """A reserve of ``estimate`` returned "refused"."""

    estimate: int

    def describe(self) -> str:
        return f"reserve({self.estimate}) refused"


@dataclass(frozen=True, slots=True)
class Settled(Event):
    """The reservation of ``estimate`` really cost ``actual`` (0 for a release)."""

    estimate: int
    actual: int

    def describe(self) -> str:
        return f"settle({self.estimate}, {self.actual})"


Action: TypeAlias = Step | Event
T = TypeVar("T")
Op: TypeAlias = Generator[Action, Any, T]
"""An operation: ``ok = yield from cas_reserve(...)`` inside a program."""
Program: TypeAlias = Generator[Action, Any, None]
