"""The exception tree of omnillm-sim.

Every exception the package raises on purpose derives from `OmniLLMError`, keeps its data as
attributes and builds its own message::

    OmniLLMError
    ├── InvalidValueError (ValueError)        a bad argument: names parameter, value and rule
    │   ├── ConfigError                       a bad setting from a file, option or env var
    │   │   ├── ScenarioError                 file + key path, expected, got
    │   │   └── TraceError                    file + line + column, expected, got
    │   └── UnknownModelError (LookupError)   a model the price table does not know
    ├── BudgetExceeded                        a reservation the budget cannot hold
    ├── ReservationStateError (RuntimeError)  settle/release of a reservation that already ended
    └── InvariantViolation (AssertionError)   a budget or gateway invariant failed

Re-creation: SimPy re-raises an exception thrown inside a process as ``type(exc)(*exc.args)``,
and pickling (process pools, Dask) rebuilds it the same way. Our constructors take structured
arguments (``TraceError(path, line, ...)``), so ``args`` holds one string instead: the message,
as a `str` subclass that also carries the exception's attributes. Calling the class with that
message alone rebuilds an equal exception (same type, message and attributes), for every
subclass, including ones defined outside this module.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "InvalidValueError",
    "InvariantViolation",
    "OmniLLMError",
    "ReservationStateError",
    "ScenarioError",
    "TraceError",
    "UnknownModelError",
]


class _Message(str):
    """An exception's message that remembers the exception's attributes (see the docstring)."""

    state: dict[str, Any]


class _Rebuildable(type):
    """Metaclass of `OmniLLMError`: ``cls(message)`` with a `_Message` rebuilds the exception."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and type(args[0]) is _Message:
            exc = cls.__new__(cls, args[0])  # type: ignore[call-overload]
            exc.__dict__.update(args[0].state)
            return exc
        exc = super().__call__(*args, **kwargs)
        if len(exc.args) == 1 and isinstance(exc.args[0], str):
            message = _Message(exc.args[0])
            message.state = exc.__dict__
            exc.args = (message,)
        return exc


class OmniLLMError(Exception, metaclass=_Rebuildable):
    """Root of every exception omnillm-sim raises on purpose.

    ``type(exc)(*exc.args)`` and ``pickle`` give back an equal exception (see the docstring).
    """


class InvalidValueError(OmniLLMError, ValueError):
    """A value broke a rule: ``rpm(=0) must be > 0``.

    Attributes: ``parameter``, ``value``, ``rule`` (what was expected) and ``source`` (where the
    value came from, empty when it was a plain argument).
    """

    def __init__(self, parameter: str, value: object, rule: str, *, source: str = "") -> None:
        self.parameter = parameter
        self.value = value
        self.rule = rule
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{parameter}(={value!r}) {rule}")


class ConfigError(InvalidValueError):
    """A configuration value (option, ini key, environment variable, file) is invalid."""


class ScenarioError(ConfigError):
    """A scenario file is malformed.

    The message names the file, the key path, what was expected and what was found:
    ``scenarios/x.toml: workload.rate: expected a rate like "20/s", got 'fast'``.
    """

    def __init__(self, path: str, key: str, expected: str, got: object) -> None:
        self.path = path
        self.key = key
        self.expected = expected
        self.got = got
        OmniLLMError.__init__(self, f"{path}: {key}: expected {expected}, got {got!r}")
        self.parameter, self.value, self.rule, self.source = key, got, f"expected {expected}", path


class TraceError(ConfigError):
    """A trace file has a malformed row: names file, line, column, expected and the bad value."""

    def __init__(self, path: str, line: int, column: str, expected: str, got: object) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.expected = expected
        self.got = got
        OmniLLMError.__init__(
            self, f"{path}:{line}: column {column!r}: expected {expected}, got {got!r}"
        )
        self.parameter, self.value, self.rule, self.source = (
            column,
            got,
            f"expected {expected}",
            path,
        )


class UnknownModelError(InvalidValueError, LookupError):
    """The price table has no entry for a model and no fallback was chosen."""

    def __init__(self, model: str, catalogue: str, hint: str = "") -> None:
        self.model = model
        self.catalogue = catalogue
        rule = f"is not in the {catalogue!r} price table"
        if hint:
            rule += f"; {hint}"
        super().__init__("model", model, rule)


class BudgetExceeded(OmniLLMError):
    """A reservation was refused because it would take ``used`` above ``limit``.

    Attributes (micro-dollars): ``requested``, ``available`` (what was left at that moment,
    saturating at 0), ``limit``.
    """

    def __init__(self, requested: int, available: int, limit: int, *, what: str = "budget") -> None:
        self.requested = requested
        self.available = available
        self.limit = limit
        self.what = what
        super().__init__(
            f"{what} exceeded: requested {requested} µ$ but only {available} µ$ of the "
            f"{limit} µ$ limit is available"
        )


class ReservationStateError(OmniLLMError, RuntimeError):
    """A reservation was settled or released after it had already ended (or never existed)."""


class InvariantViolation(OmniLLMError, AssertionError):
    """A budget or gateway invariant (I1-I5 of DESIGN.md) failed; the message says which."""

    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        self.detail = detail
        super().__init__(f"invariant {invariant} violated: {detail}")
