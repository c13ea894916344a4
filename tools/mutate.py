"""Mutation testing of the core: ``python tools/mutate.py [MODULE ...]`` (``make mutate``).

A small AST mutator. For each module of the core it makes one mutant per (node, operator) and
runs the module's own tests against it: killed (a test failed), survived (all passed) or
timeout. The tests are collected once, in a process that never imports the core beforehand;
an unmutated run records which tests call which function of the module. Each mutant inside a
function then runs in a forked child of that session, with the function's code replaced by
the mutated code and only the tests that call it (plain tests first, Hypothesis last).
Mutants that run at import time (module constants, class bodies, defaults), in nested
functions, or in functions no test calls while running get a fresh import in a forked child
instead, served by an import hook. The source files are never modified.

Operators: arithmetic (``+ -``, ``* /``, ``//``, ``%``, ``**``), comparison (boundary ``<`` ->
``<=`` and negation ``<`` -> ``>=``, ``== !=``, ``is``/``is not``, ``in``/``not in``), ``and``/
``or``, unary (drop ``not`` and ``-``), constants (ints ``n`` -> ``n + 1``, floats, ``True``/
``False``, strings), augmented assignment (``+=`` -> ``-=`` and ``+=`` -> ``=``), return
value (``return x`` -> ``return None``), condition negation (``if``/``while``/``x if c else
y``), ``max``/``min``, ``break``/``continue``, and statement deletion (-> ``pass``).

Excluded by rule (message-only or not behaviour): docstrings, strings inside f-strings and
``raise`` statements (messages), ``__repr__``/``__str__`` bodies, annotations, ``__all__`` and
``__slots__``, imports, ``if TYPE_CHECKING:`` blocks, and lines marked ``# pragma: no mutate``.
Equivalent mutants are listed, with a reason each, in ``tools/mutation-equivalents.txt``.

Results go to ``reports/mutation/<module>.json`` (one per module, so one module can be rerun
alone) and ``reports/mutation/report.md`` (all modules: scores and every survivor with its
file:line and diff).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import glob
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORT_DIR = ROOT / "reports" / "mutation"
EQUIVALENTS = ROOT / "tools" / "mutation-equivalents.txt"

# module -> the test files that are "its own tests" (globs relative to the repository root).
MODULES: dict[str, list[str]] = {
    "money": ["tests/core/test_money*.py"],
    "budget": ["tests/core/test_budget*.py", "tests/gateway/test_crate_edges.py"],
    # test_crate_edges.py pins the faithful policy's time, retry-after and stream edges,
    # which live in these four modules.
    "ratelimit": ["tests/gateway/test_ratelimit*.py", "tests/gateway/test_crate_edges.py"],
    "breaker": ["tests/gateway/test_breaker*.py", "tests/gateway/test_crate_edges.py"],
    "keypool": ["tests/gateway/test_keypool*.py", "tests/gateway/test_crate_edges.py"],
    "gateway": [
        "tests/gateway/test_gateway*.py",
        "tests/gateway/test_policy_quirks*.py",
        "tests/gateway/test_crate_edges.py",
    ],
    "ledger": ["tests/core/test_ledger*.py"],
    "pricing": ["tests/core/test_pricing*.py"],
}

PRAGMA = "pragma: no mutate"
SKIP_FUNCTIONS = {"__repr__", "__str__"}
SKIP_TARGETS = {"__all__", "__slots__"}
MESSAGE_KEYWORDS = {"name", "what", "source", "where", "msg", "message", "label"}
# Calls whose string arguments only name a value in an error message.
MESSAGE_CALLS = {
    "InvalidValueError", "ConfigError", "ReservationStateError", "InvariantViolation",
    "UnknownModelError", "BudgetExceeded", "_check_amount", "_amount", "check_micros",
    "non_negative_int", "positive_int", "non_negative_float", "positive_float", "_config",
    "_check_config", "_lookup",
}  # fmt: skip
# Keywords that are not behaviour: ``slots=`` only changes memory layout, ``repr=`` display.
LAYOUT_KEYWORDS = {"slots", "repr"}

_BINOP_SWAPS: dict[type[ast.operator], list[type[ast.operator]]] = {
    ast.Add: [ast.Sub],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.Div],
    ast.Div: [ast.Mult],
    ast.FloorDiv: [ast.Div],
    ast.Mod: [ast.Mult],
    ast.Pow: [ast.Mult],
    ast.LShift: [ast.RShift],
    ast.RShift: [ast.LShift],
    ast.BitAnd: [ast.BitOr],
    ast.BitOr: [ast.BitAnd],
}
_CMP_SWAPS: dict[type[ast.cmpop], list[type[ast.cmpop]]] = {
    ast.Lt: [ast.LtE, ast.GtE],
    ast.LtE: [ast.Lt, ast.Gt],
    ast.Gt: [ast.GtE, ast.LtE],
    ast.GtE: [ast.Gt, ast.Lt],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
}
_SYMBOL = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|",
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
    ast.And: "and", ast.Or: "or",
}  # fmt: skip


# -- finding mutation points -------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One mutation: the ``index``-th node of ``ast.walk`` order, changed by ``variant``."""

    index: int
    variant: int
    line: int
    qualname: str
    desc: str
    func: str | None  # the outermost function whose body holds the node (None: runs at import)


def _annotate(tree: ast.AST) -> None:
    """Give every node ``_parent``, ``_qualname`` and ``_skip`` (excluded by rule)."""

    def visit(
        node: ast.AST, parent: ast.AST | None, qual: str, skip: bool, func: str | None
    ) -> None:
        node._parent = parent  # type: ignore[attr-defined]
        node._func = func  # type: ignore[attr-defined]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qual = f"{qual}.{node.name}" if qual else node.name
            if node.name in SKIP_FUNCTIONS:
                skip = True
        if isinstance(node, ast.Import | ast.ImportFrom):
            skip = True
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip = True
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in SKIP_TARGETS for t in targets):
                skip = True
        node._qualname = qual or "<module>"  # type: ignore[attr-defined]
        node._skip = skip or getattr(node, "_no_mutate", False)  # type: ignore[attr-defined]
        # Messages: what a raise builds, f-strings and the name/what arguments that only
        # name things in messages. The raise itself may still be deleted.
        if isinstance(node, ast.Raise | ast.JoinedStr):
            skip = True
        if isinstance(node, ast.keyword) and node.arg in MESSAGE_KEYWORDS | LAYOUT_KEYWORDS:
            node._skip = skip = True  # type: ignore[attr-defined]
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in MESSAGE_CALLS:
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        arg._no_mutate = True  # type: ignore[attr-defined]
        # Types: Literal["open", ...] names states for the type checker only.
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Literal"
        ):
            node._skip = skip = True  # type: ignore[attr-defined]
        # A Protocol's `...` body: deleting it changes nothing.
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and node.value.value is Ellipsis
        ):
            node._skip = skip = True  # type: ignore[attr-defined]        # A statement that is only a string is documentation (attribute docstrings).
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            node._skip = skip = True  # type: ignore[attr-defined]
        # String defaults of parameters are names for messages (name="budget").
        if isinstance(node, ast.arguments):
            for default in [*node.defaults, *node.kw_defaults]:
                if isinstance(default, ast.Constant) and isinstance(default.value, str):
                    default._no_mutate = True  # type: ignore[attr-defined]
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST):
                    # Annotations describe types, not behaviour.
                    child_skip = skip or field in ("annotation", "returns")
                    if _is_docstring(node, child):
                        child_skip = True
                    child_func = func
                    if (
                        func is None
                        and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                        and field == "body"
                    ):
                        child_func = qual
                    visit(child, node, qual, child_skip, child_func)

    visit(tree, None, "", False, None)


def _is_docstring(parent: ast.AST, child: ast.AST) -> bool:
    body = getattr(parent, "body", None)
    return (
        isinstance(parent, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and isinstance(body, list)
        and bool(body)
        and body[0] is child
        and isinstance(child, ast.Expr)
        and isinstance(child.value, ast.Constant)
        and isinstance(child.value.value, str)
    )


def _replace(node: ast.AST, new: ast.AST) -> None:
    """Put ``new`` in ``node``'s place in its parent."""
    parent = node._parent  # type: ignore[attr-defined]
    for field, value in ast.iter_fields(parent):
        if isinstance(value, list):
            for i, child in enumerate(value):
                if child is node:
                    value[i] = new
                    return
        elif value is node:
            setattr(parent, field, new)
            return
    raise AssertionError("node not found in its parent")


Mutator = Callable[[ast.AST], ast.AST]  # mutates in place; returns the node to show in the diff


def _variants(node: ast.AST) -> list[tuple[str, Mutator]]:
    """Every mutation of ``node`` as (description, function that applies it)."""
    out: list[tuple[str, Mutator]] = []
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        for new in _BINOP_SWAPS[type(node.op)]:

            def swap_bin(n: ast.AST, new: type[ast.operator] = new) -> ast.AST:
                n.op = new()  # type: ignore[attr-defined]
                return n

            out.append((f"'{_SYMBOL[type(node.op)]}' -> '{_SYMBOL[new]}'", swap_bin))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in _CMP_SWAPS.get(type(op), []):

                def swap_cmp(n: ast.AST, i: int = i, new: type[ast.cmpop] = new) -> ast.AST:
                    n.ops[i] = new()  # type: ignore[attr-defined]
                    return n

                out.append((f"'{_SYMBOL[type(op)]}' -> '{_SYMBOL[new]}'", swap_cmp))
    elif isinstance(node, ast.BoolOp):
        new_op = ast.Or if isinstance(node.op, ast.And) else ast.And

        def swap_bool(n: ast.AST) -> ast.AST:
            n.op = new_op()  # type: ignore[attr-defined]
            return n

        out.append((f"'{_SYMBOL[type(node.op)]}' -> '{_SYMBOL[new_op]}'", swap_bool))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        sym = "not" if isinstance(node.op, ast.Not) else "-"

        def drop_unary(n: ast.AST) -> ast.AST:
            operand = n.operand  # type: ignore[attr-defined]
            _replace(n, operand)
            return operand  # type: ignore[no-any-return]

        out.append((f"drop unary '{sym}'", drop_unary))
    elif isinstance(node, ast.Constant):
        out.extend(_constant_variants(node))
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
        for new in _BINOP_SWAPS[type(node.op)]:

            def swap_aug(n: ast.AST, new: type[ast.operator] = new) -> ast.AST:
                n.op = new()  # type: ignore[attr-defined]
                return n

            out.append((f"'{_SYMBOL[type(node.op)]}=' -> '{_SYMBOL[new]}='", swap_aug))

        def aug_to_assign(n: ast.AST) -> ast.AST:
            new_node = ast.Assign(targets=[n.target], value=n.value)  # type: ignore[attr-defined]
            ast.copy_location(new_node, n)
            _replace(n, new_node)
            return new_node

        out.append((f"'{_SYMBOL[type(node.op)]}=' -> '='", aug_to_assign))
    elif (
        isinstance(node, ast.Return)
        and node.value is not None
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
    ):

        def return_none(n: ast.AST) -> ast.AST:
            n.value = ast.Constant(value=None)  # type: ignore[attr-defined]
            return n

        out.append(("return value -> None", return_none))
    elif isinstance(node, ast.If | ast.While | ast.IfExp):

        def negate(n: ast.AST) -> ast.AST:
            n.test = ast.UnaryOp(op=ast.Not(), operand=n.test)  # type: ignore[attr-defined]
            return n.test  # type: ignore[attr-defined, no-any-return]

        out.append(("negate condition", negate))
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("max", "min")
    ):
        other = "min" if node.func.id == "max" else "max"

        def swap_call(n: ast.AST, other: str = other) -> ast.AST:
            n.func.id = other  # type: ignore[attr-defined]
            return n

        out.append((f"{node.func.id}() -> {other}()", swap_call))
    elif isinstance(node, ast.Break | ast.Continue):
        new_stmt = ast.Continue if isinstance(node, ast.Break) else ast.Break

        def swap_loop(n: ast.AST, new_stmt: type[ast.stmt] = new_stmt) -> ast.AST:
            new_node = new_stmt()
            ast.copy_location(new_node, n)
            _replace(n, new_node)
            return new_node

        out.append((f"{type(node).__name__.lower()} -> {new_stmt.__name__.lower()}", swap_loop))
    if _deletable(node):

        def delete(n: ast.AST) -> ast.AST:
            new_node = ast.Pass()
            ast.copy_location(new_node, n)
            _replace(n, new_node)
            return new_node

        out.append(("delete statement", delete))
    return out


def _constant_variants(node: ast.Constant) -> list[tuple[str, Mutator]]:
    value = node.value
    if isinstance(value, bool):
        new: Any = not value
    elif isinstance(value, int):
        new = value + 1
    elif isinstance(value, float):
        new = value + 1.0 if value not in (0.0, 1.0) else 1.0 - value
    elif isinstance(value, str):
        new = f"XX{value}XX"
    else:
        return []

    def set_value(n: ast.AST, new: Any = new) -> ast.AST:
        n.value = new  # type: ignore[attr-defined]
        return n

    return [(f"{value!r} -> {new!r}", set_value)]


def _deletable(node: ast.AST) -> bool:
    if not isinstance(node, ast.Expr | ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Raise):
        return False
    if isinstance(node, ast.AnnAssign) and node.value is None:
        return False
    parent = node._parent  # type: ignore[attr-defined]
    # Module- and class-level definitions: deleting them breaks imports, not behaviour.
    return not isinstance(parent, ast.Module | ast.ClassDef)


def find_points(source: str) -> Iterator[tuple[Point, ast.AST]]:
    tree = ast.parse(source)
    _annotate(tree)
    lines = source.splitlines()
    for index, node in enumerate(ast.walk(tree)):
        if getattr(node, "_skip", True) or not hasattr(node, "lineno"):
            continue
        if PRAGMA in lines[node.lineno - 1]:
            continue
        for variant, (desc, _) in enumerate(_variants(node)):
            yield (
                Point(index, variant, node.lineno, node._qualname, desc, node._func),  # type: ignore[attr-defined]
                node,
            )


def mutate(source: str, point: Point) -> tuple[ast.Module, ast.AST, ast.AST]:
    """The mutated tree, the original node and the node to show as its replacement."""
    tree = ast.parse(source)
    _annotate(tree)
    original = ast.parse(source)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == point.index)
    orig = next(n for i, n in enumerate(ast.walk(original)) if i == point.index)
    _, apply = _variants(node)[point.variant]
    shown = apply(node)
    ast.fix_missing_locations(tree)
    return tree, orig, shown


def diff_lines(source: str, orig: ast.AST, shown: ast.AST) -> tuple[str, str]:
    """(original lines, mutated lines) for the report."""
    lines = source.splitlines()
    start, end = orig.lineno, orig.end_lineno or orig.lineno  # type: ignore[attr-defined]
    first = lines[start - 1]
    last = lines[end - 1]
    col, end_col = orig.col_offset, orig.end_col_offset  # type: ignore[attr-defined]
    before = "\n".join(lines[start - 1 : end])
    if isinstance(shown, ast.UnaryOp) and isinstance(shown.op, ast.Not):
        text = f"not ({ast.get_source_segment(source, orig.test)})"  # type: ignore[attr-defined]
        seg = orig.test  # type: ignore[attr-defined]
        first, last = lines[seg.lineno - 1], lines[seg.end_lineno - 1]
        after = first[: seg.col_offset] + text + last[seg.end_col_offset :]
        before = "\n".join(lines[seg.lineno - 1 : seg.end_lineno])
        return before, after
    after = first[:col] + ast.unparse(shown) + last[end_col:]
    return before, after


def mutant_key(source: str, module: str, point: Point, seen: dict[str, int]) -> str:
    """A short id that survives edits elsewhere in the file: the function, the line's text,
    the operator and the occurrence within that line."""
    text = source.splitlines()[point.line - 1].strip()
    base = f"{module}|{point.qualname}|{text}|{point.desc}"
    seen[base] = seen.get(base, 0) + 1
    return f"{module}:" + hashlib.sha1(f"{base}|{seen[base]}".encode()).hexdigest()[:10]


# -- running ------------------------------------------------------------------------------------


class _Hook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutated code for one module name."""

    def __init__(self, fullname: str, path: str, code: CodeType) -> None:
        self.fullname, self.path, self.code = fullname, path, code

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.fullname:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=self.path)

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = self.path
        exec(self.code, module.__dict__)


def _pytest_args(tests: list[str]) -> list[str]:
    return [
        *tests,
        "-x",
        "-q",
        "-p", "no:cacheprovider",
        "-p", "_hypothesis_pytestplugin",
        "-o", "addopts=",
        "-m", "not soak",
        "--no-header",
    ]  # fmt: skip


def start_child(fullname: str, path: str, code: CodeType | None, tests: list[str]) -> int:
    """Fork a child that runs ``tests`` with ``code`` served as module ``fullname``."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if code is not None:
                sys.meta_path.insert(0, _Hook(fullname, path, code))
            import pytest

            rc = pytest.main(_pytest_args(tests))
            os._exit(int(rc))
        except BaseException:
            os._exit(99)
    return pid


def _status(wait_status: int) -> str:
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 0:
        return "survived"
    # 1 tests failed, 2 interrupted (collection error), 3 internal error, <0 signal;
    # 4 (usage), 5 (no tests) and 99 (the child failed to start) are errors of ours.
    return "killed" if code in (1, 2, 3) or code < 0 else "error"


def run_children(
    jobs: list[tuple[str, str, CodeType | None, list[str]]],
    limit: float,
    parallel: int,
    progress: Callable[[int], None] = lambda done: None,
) -> list[str]:
    """Run every job (at most ``parallel`` at once): killed, survived, timeout or error each."""
    results = [""] * len(jobs)
    running: dict[int, tuple[int, float]] = {}  # pid -> (job index, deadline)
    queue = list(range(len(jobs)))[::-1]
    done = 0
    while queue or running:
        while queue and len(running) < parallel:
            i = queue.pop()
            running[start_child(*jobs[i])] = (i, time.monotonic() + limit)
        for pid, (i, deadline) in list(running.items()):
            finished, wait_status = os.waitpid(pid, os.WNOHANG)
            if finished:
                results[i] = _status(wait_status)
            elif time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                results[i] = "timeout"
            else:
                continue
            del running[pid]
            done += 1
            progress(done)
        time.sleep(0.01)
    return results


# -- the fast path: one pytest session, one fork per mutant -------------------------------------


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def _functions(module: ModuleType, qualname: str) -> list[Any]:
    """The function objects that ``qualname`` (``Class.method``) names in ``module``."""
    obj: Any = module
    for part in qualname.split("."):
        obj = vars(obj).get(part) if isinstance(obj, type | ModuleType) else None
        if obj is None:
            return []
    found = []
    for f in (obj, getattr(obj, "__func__", None), getattr(obj, "fget", None),
              getattr(obj, "fset", None), getattr(obj, "fdel", None)):  # fmt: skip
        while f is not None and hasattr(f, "__wrapped__"):
            f = f.__wrapped__
        if f is not None and hasattr(f, "__code__"):
            found.append(f)
    return found


def patch_function(module: ModuleType, func: str, mutant: CodeType) -> bool:
    """Give the function ``func`` of ``module`` the code it has in the mutated module.

    Every function of that name gets its mutated code: a property's getter and setter share
    one qualified name, and the mutant may be in either.
    """
    new_codes = {(c.co_qualname, c.co_firstlineno): c for c in _code_objects(mutant)}
    patched = False
    for f in _functions(module, func):
        new = new_codes.get((f.__code__.co_qualname, f.__code__.co_firstlineno))
        if new is not None:
            try:
                f.__code__ = new
            except ValueError:  # the mutant changed the closure's free variables
                return False
            patched = True
    return patched


FALLBACK = 98  # exit code of a fast-path child that could not apply its mutant


class SessionRunner:
    """A pytest plugin that, once the tests are collected, runs them once per mutant in forked
    children with the mutated function patched in."""

    def __init__(
        self, fullname: str, mutants: list[tuple[str, CodeType]], limit: float, parallel: int,
        out: Path, log: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.fullname, self.mutants, self.limit = fullname, mutants, limit
        self.parallel, self.out, self.log = parallel, out, log
        self.failed = False
        self.failure = ""  # the first failing test's id and report (for a failed baseline)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            if not self.failed:
                text = report.longreprtext
                if len(text) > 8000:  # the end holds the error and Hypothesis' failing example
                    text = "...\n" + text[-8000:]
                self.failure = f"{report.nodeid} ({report.when}):\n{text}"
            self.failed = True

    def _child(self, session: Any, mutant: tuple[str, CodeType] | None) -> int:
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        module = importlib.import_module(self.fullname)
        if mutant is None:
            return self._trace(session, module)
        if not patch_function(module, *mutant):
            return FALLBACK
        items = self._items_for(session, mutant[0])
        for i, item in enumerate(items):
            nextitem = items[i + 1] if i + 1 < len(items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if self.failed:
                return 1
        return 0

    def _trace(self, session: Any, module: ModuleType) -> int:
        """The unmutated run: which functions of the module each test calls."""
        target = module.__file__
        called: set[str] = set()

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename == target:
                called.add(frame.f_code.co_qualname)

        calls: dict[str, list[str]] = {}
        items = session.items
        sys.setprofile(profile)
        threading.setprofile(profile)
        for i, item in enumerate(items):
            called.clear()
            nextitem = items[i + 1] if i + 1 < len(items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            calls[item.nodeid] = sorted(called)
        sys.setprofile(None)
        threading.setprofile(None)
        self.calls_file.write_text(json.dumps(calls))
        if self.failed:
            self.calls_file.with_suffix(".failure.txt").write_text(self.failure)
        return 1 if self.failed else 0

    def _items_for(self, session: Any, func: str) -> list[Any]:
        """The tests that call ``func`` (or a function nested in it); plain tests first,
        Hypothesis and state-machine tests last (they take longest to fail)."""
        nested = f"{func}.<locals>."
        chosen = [
            item
            for item in session.items
            if any(q == func or q.startswith(nested) for q in self.calls.get(item.nodeid, ()))
        ]

        def slow(item: Any) -> bool:
            obj = getattr(item, "obj", None)
            return bool(getattr(obj, "is_hypothesis_test", False)) or (
                item.cls is not None
                and ("Machine" in item.cls.__name__ or "TestCase" in item.cls.__name__)
            )

        return sorted(chosen, key=slow)

    def _fork(self, session: Any, mutant: tuple[str, CodeType] | None) -> int:
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                code = self._child(session, mutant)
            finally:
                os._exit(code)
        return pid

    def pytest_runtestloop(self, session: Any) -> bool:
        started = time.monotonic()
        self.calls_file = self.out.with_suffix(".calls.json")
        baseline = self._run([None], 900.0, session)
        elapsed = time.monotonic() - started
        if baseline != ["survived"]:
            failure = self.calls_file.with_suffix(".failure.txt")
            text = failure.read_text() if failure.exists() else ""
            failure.unlink(missing_ok=True)
            self.calls_file.unlink(missing_ok=True)
            self.out.write_text(json.dumps({"baseline": baseline[0], "failure": text}))
            return True
        self.calls = json.loads(self.calls_file.read_text())
        self.calls_file.unlink()
        limit = max(self.limit, 3 * elapsed)
        statuses = self._run(self.mutants, limit, session)
        self.out.write_text(json.dumps({"baseline": elapsed, "statuses": statuses}))
        return True

    def _run(self, mutants: list[Any], limit: float, session: Any) -> list[str]:
        results = [""] * len(mutants)
        running: dict[int, tuple[int, float]] = {}
        queue = list(range(len(mutants)))[::-1]
        done = 0
        while queue or running:
            while queue and len(running) < self.parallel:
                i = queue.pop()
                if mutants[i] is not None and not self._items_for(session, mutants[i][0]):
                    # No test calls it while running: it may run only while the tests are
                    # imported (a table built at module level), so give it a fresh import.
                    results[i] = "fallback"
                    done += 1
                    continue
                running[self._fork(session, mutants[i])] = (i, time.monotonic() + limit)
            for pid, (i, deadline) in list(running.items()):
                finished, wait_status = os.waitpid(pid, os.WNOHANG)
                if finished:
                    code = os.waitstatus_to_exitcode(wait_status)
                    results[i] = (
                        "fallback" if code == FALLBACK else
                        "survived" if code == 0 else
                        "killed" if code in (1,) or code < 0 else "error"
                    )  # fmt: skip
                elif time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    results[i] = "timeout"
                else:
                    continue
                del running[pid]
                done += 1
                if done % 25 == 0:
                    self.log(f"  {done}/{len(mutants)}\n")
            time.sleep(0.01)
        return results


def run_in_session(
    fullname: str, tests: list[str], mutants: list[tuple[str, CodeType]], limit: float,
    parallel: int, log: Callable[[str], None],
) -> tuple[float, list[str]]:  # fmt: skip
    """Run the fast path in a forked process (the tool's own process never imports the core)."""
    out = REPORT_DIR / f".{fullname}.session.json"
    out.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            import pytest

            console = os.fdopen(os.dup(1), "w", buffering=1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            runner = SessionRunner(fullname, mutants, limit, parallel, out, console.write)
            code = int(pytest.main(_pytest_args(tests), plugins=[runner]))
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
    if not out.exists():
        raise SystemExit(f"{fullname}: the test session failed to start")
    data = json.loads(out.read_text())
    out.unlink()
    if "statuses" not in data:
        # Hypothesis runs under the tool's own profile (derandomized, 30 examples): a failing
        # example here is a real failure of the unmutated code that plain runs may not draw.
        failure = data.get("failure", "")
        detail = f"; the first failing test, {failure}" if failure else ""
        raise SystemExit(
            f"{fullname}: its tests fail without any mutant ({data['baseline']}){detail}"
        )
    return data["baseline"], data["statuses"]


def load_equivalents() -> dict[str, str]:
    out: dict[str, str] = {}
    if not EQUIVALENTS.exists():
        return out
    for raw in EQUIVALENTS.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, reason = line.partition(" ")
        out[key] = reason.strip()
    return out


def run_module(module: str, parallel: int, log: Callable[[str], None]) -> dict[str, Any]:
    path = ROOT / "omnillm_sim" / f"{module}.py"
    source = path.read_text()
    fullname = f"omnillm_sim.{module}"
    tests = sorted({f for pattern in MODULES[module] for f in glob.glob(str(ROOT / pattern))})
    equivalents = load_equivalents()
    started = time.monotonic()
    points = list(find_points(source))
    seen: dict[str, int] = {}
    results: list[dict[str, Any]] = []
    pending: list[tuple[int, Point, str, CodeType, tuple[str, str]]] = []
    for n, (point, _) in enumerate(points):
        key = mutant_key(source, module, point, seen)
        tree, orig, shown = mutate(source, point)
        try:
            code = compile(tree, str(path), "exec")
        except (SyntaxError, ValueError) as exc:  # e.g. 'continue' outside a loop
            log(f"  skip uncompilable mutant {point}: {exc}")
            continue
        pending.append((n, point, key, code, diff_lines(source, orig, shown)))
    to_run = [p for p in pending if p[2] not in equivalents]
    # Mutants inside a function: patched into one collected session (fast). The others run at
    # import time (module constants, class bodies, defaults): a fresh import per mutant.
    # A nested function's code is copied into each closure when the outer function runs, maybe
    # while the tests are imported: mutants in nested functions get a fresh import too.
    fast = [p for p in to_run if p[1].func is not None and p[1].func == p[1].qualname]
    log(f"{module}: {len(pending)} mutants ({len(fast)} in functions), {len(tests)} test files")
    baseline, fast_statuses = run_in_session(
        fullname,
        tests,
        [(p[1].func, p[3]) for p in fast],
        10.0,
        parallel,
        log,  # type: ignore[misc]
    )
    statuses = {p[2]: st for p, st in zip(fast, fast_statuses, strict=True) if st != "fallback"}
    slow = [p for p in to_run if p[2] not in statuses]
    log(f"{module}: baseline {baseline:.1f}s; {len(slow)} mutants need a fresh import")
    slow_limit = max(20.0, 5 * baseline)
    statuses.update(
        zip(
            [p[2] for p in slow],
            run_children([(fullname, str(path), p[3], tests) for p in slow], slow_limit, parallel),
            strict=True,
        )
    )
    for _n, point, key, _code, (before, after) in pending:
        results.append(
            {
                "id": key,
                "line": point.line,
                "function": point.qualname,
                "operator": point.desc,
                "status": statuses.get(key, "equivalent"),
                "before": before,
                "after": after,
                "reason": equivalents.get(key, ""),
            }
        )
    counts = {s: sum(r["status"] == s for r in results) for s in
              ("killed", "survived", "timeout", "equivalent", "error")}  # fmt: skip
    scored = counts["killed"] + counts["survived"] + counts["timeout"]
    score = (counts["killed"] + counts["timeout"]) / scored if scored else 1.0
    listed = {r["id"] for r in results}
    stale = sorted(k for k in equivalents if k not in listed and k.startswith(f"{module}:"))
    return {
        "module": module,
        "file": f"omnillm_sim/{module}.py",
        "tests": [os.path.relpath(t, ROOT) for t in tests],
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "seconds": round(time.monotonic() - started, 1),
        "counts": counts,
        "score": score,
        "raw_score": counts["killed"] / len(results) if results else 1.0,
        "mutants": results,
        "stale_equivalents": stale,
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "omnillm_sim", "tests"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def write_report() -> Path:
    results = []
    equivalents = load_equivalents()
    for module in MODULES:
        f = REPORT_DIR / f"{module}.json"
        if f.exists():
            r = json.loads(f.read_text())
            # The list as it is now: an entry added after the run still counts.
            for m in r["mutants"]:
                if m["id"] in equivalents:
                    m["status"], m["reason"] = "equivalent", equivalents[m["id"]]
            c = r["counts"] = {
                s: sum(m["status"] == s for m in r["mutants"])
                for s in ("killed", "survived", "timeout", "equivalent", "error")
            }
            scored = c["killed"] + c["survived"] + c["timeout"]
            r["score"] = (c["killed"] + c["timeout"]) / scored if scored else 1.0
            results.append(r)
    lines = [
        "# Mutation report",
        "",
        "Score = (killed + timeout) / (killed + survived + timeout); equivalent mutants",
        "(tools/mutation-equivalents.txt) are left out. Raw = killed / all mutants.",
        "",
        "| module | mutants | killed | survived | timeout | equivalent | score | raw | date"
        " | commit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        c = r["counts"]
        lines.append(
            f"| {r['module']} | {len(r['mutants'])} | {c['killed']} | {c['survived']} "
            f"| {c['timeout']} | {c['equivalent']} | {r['score']:.1%} | {r['raw_score']:.1%} "
            f"| {r['date']} | {r['commit']} |"
        )
    for r in results:
        survivors = [m for m in r["mutants"] if m["status"] in ("survived", "error")]
        lines += ["", f"## {r['module']}: {len(survivors)} survivors", ""]
        lines.append(f"Tests: {', '.join(r['tests'])}")
        if r["stale_equivalents"]:
            lines.append(f"Stale entries in the equivalents list: {r['stale_equivalents']}")
        for m in survivors:
            lines += [
                "",
                f"### {r['file']}:{m['line']} `{m['id']}` {m['function']}: {m['operator']}",
                "```diff",
                *(f"- {x}" for x in m["before"].splitlines()),
                *(f"+ {x}" for x in m["after"].splitlines()),
                "```",
            ]
    out = REPORT_DIR / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants run at once")
    parser.add_argument(
        "--report", action="store_true", help="only rewrite report.md from the saved results"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    args = parser.parse_args(argv)
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    os.chdir(ROOT)
    if args.report:
        print(f"report: {write_report().relative_to(ROOT)}")
        return 0
    if args.list:
        for module in modules:
            source = (ROOT / "omnillm_sim" / f"{module}.py").read_text()
            seen: dict[str, int] = {}
            for point, _ in find_points(source):
                key = mutant_key(source, module, point, seen)
                print(f"{key} omnillm_sim/{module}.py:{point.line} {point.qualname}: {point.desc}")
        return 0
    # Pre-import what every child needs, so a fork starts warm. The core itself is NOT imported
    # here: each child imports it fresh, with the mutant in place.
    os.environ["HYPOTHESIS_PROFILE"] = "mutate"
    # Only the plugins the core's tests use: no entry-point scan (and no pytest-randomly, whose
    # reseeding would make a run irreproducible) in each child.
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    import _hypothesis_pytestplugin  # noqa: F401
    import hypothesis
    import hypothesis.stateful
    import hypothesis.strategies
    import pytest  # noqa: F401
    import simpy  # noqa: F401

    hypothesis.settings.register_profile(
        "mutate",
        deadline=None,
        max_examples=30,
        database=None,
        # A failing example is enough to kill a mutant: shrinking it only costs time.
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.reuse, hypothesis.Phase.generate],
        # The same examples in every child: the run that maps tests to functions and each
        # mutant's run see the same inputs.
        derandomize=True,
        report_multiple_bugs=False,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    assert not any(m.startswith("omnillm_sim") for m in sys.modules), "core imported early"
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    for module in modules:
        result = run_module(module, args.jobs, lambda s: print(s, flush=True))
        (REPORT_DIR / f"{module}.json").write_text(json.dumps(result, indent=1))
        c = result["counts"]
        print(
            f"{module}: killed {c['killed']}, survived {c['survived']}, timeout {c['timeout']}, "
            f"equivalent {c['equivalent']}: score {result['score']:.1%} ({result['seconds']}s)",
            flush=True,
        )
    print(f"report: {write_report().relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
