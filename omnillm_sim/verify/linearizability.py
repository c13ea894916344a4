"""Linearizability of budget histories: Wing & Gong's search with memoisation.

A *history* is what concurrent clients saw: each operation on a budget — ``reserve``,
``settle`` or ``release`` — with the time it was called, the time it returned and its result.
The history is *linearizable* if some sequential order of the operations (a) respects real
time: an operation that returned before another was called comes first, and (b) produces every
observed result when run on the sequential tracker model:

* ``reserve(rid, estimate)`` is "admitted" iff ``used + estimate <= limit`` (then ``used +=
  estimate`` and ``rid`` is open), otherwise "refused" (nothing changes);
* ``settle(rid, actual)`` is "ok" iff ``rid`` is open (then ``used += actual - estimate`` and
  ``rid`` ends), otherwise "error" (nothing changes); ``release(rid)`` is ``settle(rid, 0)``.

Budgets are independent objects, so the history is checked per budget (linearizability is
local: Herlihy & Wing 1990). Each budget's history is swept once in time order using the
tracker's structure (`check_partition`): a reserve's result depends only on ``used`` at its
linearization point, an end's only on whether its reservation is open (which depends only on
the calls with its rid), and refusals and failed ends change nothing. Where the sweep's greedy
choice gets stuck it re-decides a short stretch, and if that fails it refutes by reservation or
falls back to the general search: Wing & Gong's (1993) with Lowe's memoisation (2017),
depth-first over "which pending call takes effect next", never revisiting a set of linearized
operations it has already explored, from the last point where the state is known. A pending
operation (no response) may take effect at any time after its call, with whatever result the
model gives, or never.

History file format (JSON lines, UTF-8): one object per line; blank lines and lines starting
with ``#`` are ignored. A budget line declares a budget and its limit in micro-dollars; an
operation line records one call::

    {"budget": "team-a", "limit": 100}
    {"op": "reserve", "budget": "team-a", "rid": 1, "estimate": 60, "call": 0, "return": 5,
     "result": "admitted", "client": "c0"}
    {"op": "reserve", "budget": "team-a", "rid": null, "estimate": 60, "call": 2, "return": 7,
     "result": "refused", "client": "c1"}
    {"op": "settle", "budget": "team-a", "rid": 1, "actual": 40, "call": 9, "return": 9,
     "result": "ok"}
    {"op": "release", "budget": "team-a", "rid": 3, "call": 9, "return": null, "result": null}

(each object on one line). Keys: ``op`` (reserve | settle | release); ``budget`` (may be left
out when exactly one budget is declared); ``rid`` (the reservation's id, unique per budget
among admitted reserves; ``null`` only for a refused or pending reserve); ``estimate``
(reserve) and ``actual`` (settle), integer micro-dollars >= 0; ``call`` and ``return``,
numbers on one clock (nanoseconds, simulated seconds or a counter: only their order matters;
equal times count as overlapping); ``return`` and ``result`` are ``null`` for a call that never
returned; ``result`` is "admitted" | "refused" for reserve, "ok" | "error" for settle and
release; ``client`` (optional) names the caller. `write_history` and `read_history` write and
read this format; `history_from_requests` builds a history from the simulator's per-request
records; `HistoryRecorder` records one from real threads calling `BudgetTracker`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from omnillm_sim.budget import BudgetTracker, Reservation
from omnillm_sim.errors import BudgetExceeded, InvalidValueError, ReservationStateError, TraceError

__all__ = [
    "CheckResult",
    "History",
    "HistoryRecorder",
    "Operation",
    "PartitionResult",
    "RecordedTracker",
    "RequestRecord",
    "check_history",
    "check_partition",
    "history_from_requests",
    "parse_history",
    "read_history",
    "write_history",
]

OpKind = Literal["reserve", "settle", "release"]
_RESULTS: dict[str, tuple[str, str]] = {
    "reserve": ("admitted", "refused"),
    "settle": ("ok", "error"),
    "release": ("ok", "error"),
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One call on a budget, as a client saw it.

    ``amount`` is the estimate of a reserve, the actual cost of a settle, 0 for a release.
    ``ret`` and ``result`` are ``None`` for a call that never returned.
    """

    op: OpKind
    budget: str
    rid: int | None
    amount: int
    call: float
    ret: float | None
    result: str | None
    client: str | int | None = None

    def describe(self) -> str:
        """``reserve rid=1 estimate=60 -> admitted [c0, 0..5]``."""
        if self.op == "reserve":
            what = f"reserve rid={self.rid} estimate={self.amount}"
        elif self.op == "settle":
            what = f"settle rid={self.rid} actual={self.amount}"
        else:
            what = f"release rid={self.rid}"
        result = "pending" if self.result is None else self.result
        who = "" if self.client is None else f"{self.client}, "
        ret = "..." if self.ret is None else f"{self.ret:g}"
        return f"{what} -> {result} [{who}{self.call:g}..{ret}]"

    def as_json(self) -> dict[str, object]:
        """The history-file object of this operation."""
        data: dict[str, object] = {"op": self.op, "budget": self.budget, "rid": self.rid}
        if self.op == "reserve":
            data["estimate"] = self.amount
        elif self.op == "settle":
            data["actual"] = self.amount
        data["call"] = self.call
        data["return"] = self.ret
        data["result"] = self.result
        data["client"] = self.client
        return data


def _check_operation(op: Operation, where: str) -> None:
    if op.op not in _RESULTS:
        raise InvalidValueError("op", op.op, "must be reserve, settle or release", source=where)
    if type(op.amount) is not int or op.amount < 0:
        raise InvalidValueError("amount", op.amount, "must be an int >= 0", source=where)
    if op.ret is None:
        if op.result is not None:
            raise InvalidValueError(
                "result", op.result, "must be null if never returned", source=where
            )
    else:
        if op.ret < op.call:
            raise InvalidValueError("return", op.ret, f"must be >= call ({op.call})", source=where)
        if op.result not in _RESULTS[op.op]:
            expected = " or ".join(_RESULTS[op.op])
            raise InvalidValueError("result", op.result, f"must be {expected}", source=where)
    if op.rid is None and (op.op != "reserve" or op.result == "admitted"):
        raise InvalidValueError(
            "rid", None, f"is required for {op.op} -> {op.result}", source=where
        )


@dataclass(frozen=True)
class History:
    """Operations on one or more budgets, with each budget's limit (micro-dollars).

    Raises:
        InvalidValueError: an operation on an undeclared budget, a malformed operation, or two
            admitted reserves with the same ``rid`` on one budget.
    """

    limits: Mapping[str, int]
    operations: tuple[Operation, ...]

    def __post_init__(self) -> None:
        seen: set[tuple[str, int]] = set()
        for index, op in enumerate(self.operations):
            where = f"operation {index}"
            if op.budget not in self.limits:
                raise InvalidValueError("budget", op.budget, "has no declared limit", source=where)
            _check_operation(op, where)
            if op.op == "reserve" and op.result != "refused" and op.rid is not None:
                key = (op.budget, op.rid)
                if key in seen:
                    raise InvalidValueError("rid", op.rid, "is reserved twice", source=where)
                seen.add(key)

    def partitions(self) -> dict[str, list[Operation]]:
        """The operations of each budget, in file order."""
        out: dict[str, list[Operation]] = {name: [] for name in self.limits}
        for op in self.operations:
            out[op.budget].append(op)
        return out


# -- the checker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionResult:
    """The verdict for one budget.

    ``order`` is a witness (a valid sequential order) when linearizable, otherwise empty;
    ``reason`` says why not (the longest explainable prefix and the operations none of which
    can go next); ``states`` counts explored states (events of the sweep plus sets of the
    general search); ``searched`` how many operations the fast path handed to the general
    search (see `check_partition`).
    """

    budget: str
    limit: int
    operations: int
    linearizable: bool
    reason: str
    order: tuple[Operation, ...]
    states: int
    searched: int = 0


@dataclass(frozen=True)
class CheckResult:
    """The verdict for a whole history: linearizable iff every budget's part is."""

    partitions: tuple[PartitionResult, ...]

    @property
    def ok(self) -> bool:
        """True when every budget's history is linearizable."""
        return all(p.linearizable for p in self.partitions)

    @property
    def operations(self) -> int:
        """How many operations were checked."""
        return sum(p.operations for p in self.partitions)

    @property
    def reason(self) -> str:
        """Why the first failing budget is not linearizable ("" when ok)."""
        return next((p.reason for p in self.partitions if not p.linearizable), "")


def check_history(history: History, *, method: Literal["auto", "search"] = "auto") -> CheckResult:
    """Check each budget's operations separately (`check_partition`)."""
    return CheckResult(
        tuple(
            check_partition(ops, history.limits[name], budget=name, method=method)
            for name, ops in history.partitions().items()
        )
    )


def _mismatch(op: Operation, used: int, limit: int) -> str:
    if op.op == "reserve":
        if op.result == "admitted":
            return (
                f"{op.describe()}: the tracker would refuse it "
                f"(used {used} + {op.amount} > limit {limit})"
            )
        return (
            f"{op.describe()}: the tracker would admit it "
            f"(used {used} + {op.amount} <= limit {limit}; a spurious refusal)"
        )
    if op.result == "ok":
        return f"{op.describe()}: reservation {op.rid} is not open (never admitted, or ended)"
    return f"{op.describe()}: reservation {op.rid} is open, so the {op.op} would succeed"


_Best = tuple[int, list[int], int, dict[object, int], list[tuple[int, int]], int]

# Operation classes of the fast path. An *effect* changes the state when it takes effect (an
# admitted reserve, a successful end, or any call that never returned: it may or may not have
# taken effect); an *observer* (a refusal, a failed end) changes nothing and only needs one
# moment in its interval at which the model gives its result.
_ADMIT, _REFUSE, _END_OK, _END_ERR, _MAYBE_RESERVE, _MAYBE_END = range(6)
_OBSERVERS = (_REFUSE, _END_ERR)
_REPAIR_BACK = (16, 128, 1024)  # how many returns back the fast path re-decides when stuck
_REPAIR_MAX = 4096  # operations at most in one re-decided stretch


def check_partition(
    operations: Sequence[Operation],
    limit: int,
    *,
    budget: str = "budget",
    method: Literal["auto", "search"] = "auto",
) -> PartitionResult:
    """Is this one budget's history linearizable against the sequential tracker model?

    ``method="auto"`` (the default) sweeps the history once in time order (`_sweep`), using
    what the budget's semantics give: an operation's result depends only on ``used`` (reserve)
    or on whether its reservation is open (settle, release), and a refusal or a failed end
    changes nothing, so it only needs one moment of its interval where the model agrees. Each
    operation is linearized as late as possible (at its return) unless another operation needs
    it earlier. Where that greedy choice gets stuck, the general search (Wing & Gong with
    memoisation) decides the stretch of history between the last and the next point at which
    every linearization is in the same state (no successful reserve or end in flight, every
    refusal and failed end in flight explained), starting from that known state; the sweep
    then goes on. The verdict is exact either way. ``method="search"`` runs the general search
    on the whole history (slow beyond some thousands of overlapping operations).
    """
    ops = list(operations)
    if method == "search":
        witness, best, states = _search(ops, limit)
        if witness is None:
            assert best is not None
            return PartitionResult(
                budget, limit, len(ops), False, _reason(ops, limit, budget, best), (), states
            )
        return PartitionResult(
            budget, limit, len(ops), True, "", tuple(ops[i] for i in witness), states
        )
    return _Sweep(ops, limit, budget).run()


class _Sweep:
    """The fast path of `check_partition` (one pass in time order, the search where stuck)."""

    def __init__(self, ops: list[Operation], limit: int, budget: str) -> None:
        self.ops = ops
        self.limit = limit
        self.budget = budget
        n = len(ops)
        kinds = bytearray(n)
        for i, op in enumerate(ops):
            if op.ret is None:
                kinds[i] = _MAYBE_RESERVE if op.op == "reserve" else _MAYBE_END
            elif op.op == "reserve":
                kinds[i] = _ADMIT if op.result == "admitted" else _REFUSE
            else:
                kinds[i] = _END_OK if op.result == "ok" else _END_ERR
        self.kinds = kinds
        self.keys: list[object] = [
            op.rid if op.rid is not None else ("pending", i) for i, op in enumerate(ops)
        ]
        self.amounts = [op.amount for op in ops]
        calls = [op.call for op in ops]
        rets = [op.ret for op in ops]
        self.calls = sorted(range(n), key=calls.__getitem__)
        self.call_pos = [0] * n
        for pos, i in enumerate(self.calls):
            self.call_pos[i] = pos
        self.call_times = [calls[i] for i in self.calls]
        ret_at = [math.inf if t is None else t for t in rets]
        self.rets = sorted((i for i in range(n) if rets[i] is not None), key=ret_at.__getitem__)
        self.ret_times = [ret_at[i] for i in self.rets]
        self.ret_pos = [len(self.rets)] * n  # never returned: after every return
        for pos, i in enumerate(self.rets):
            self.ret_pos[i] = pos
        self.by_key: dict[object, list[int]] | None = None  # operations by reservation
        self.searched = 0  # operations handed to the general search
        self.states = 0

    def run(self) -> PartitionResult:
        ops, kinds, keys, amounts, limit = self.ops, self.kinds, self.keys, self.amounts, self.limit
        calls, rets, call_times, ret_times = self.calls, self.rets, self.call_times, self.ret_times
        call_pos, ret_pos = self.call_pos, self.ret_pos
        nc, nr = len(calls), len(rets)
        placed = bytearray(len(ops))
        order: list[int] = []  # the witness so far, as operation indices
        used = 0
        open_: dict[object, int] = {}
        waiting: dict[int, None] = {}  # effects in flight not yet taken, in call order
        unexplained: dict[int, None] = {}  # observers in flight not yet explained
        in_flight = 0  # effects in flight, taken or not
        undo: list[tuple[int, int]] = []  # (op, estimate) of effects taken since the last cut
        cut = (0, 0, 0)  # (next call, next return, len(order)) at the last cut
        inflight: dict[int, None] = {}  # every call in flight
        # (next call, next return, len(order), len(undo)) after each return since the cut
        marks: list[tuple[int, int, int, int]] = []
        base = (0, 0, 0, 0)  # where re-deciding may start when the marks do not go back enough
        ci = ri = 0  # the next call and the next return of the sweep

        def explained(i: int) -> bool:
            if kinds[i] == _REFUSE:
                return used + amounts[i] > limit
            return keys[i] not in open_

        def take(i: int) -> bool:
            """Let effect ``i`` take effect now if the model allows it."""
            nonlocal used
            kind, key = kinds[i], keys[i]
            if kind in (_ADMIT, _MAYBE_RESERVE):
                if used + amounts[i] > limit:
                    return False
                used += amounts[i]
                open_[key] = amounts[i]
                undo.append((i, amounts[i]))
            else:
                est = open_.pop(key, None)
                if est is None:
                    return False
                used += amounts[i] - est
                undo.append((i, est))
            del waiting[i]
            placed[i] = 1
            order.append(i)
            if unexplained:
                for j in [j for j in unexplained if explained(j)]:
                    del unexplained[j]
                    placed[j] = 1
                    order.append(j)
            return True

        def rewind(to_order: int, to_undo: int) -> None:
            nonlocal used
            for j, est in reversed(undo[to_undo:]):
                if kinds[j] in (_ADMIT, _MAYBE_RESERVE):
                    used -= amounts[j]
                    del open_[keys[j]]
                else:
                    used -= amounts[j] - est
                    open_[keys[j]] = est
            del undo[to_undo:]
            for j in order[to_order:]:
                placed[j] = 0
            del order[to_order:]

        def repair(back: int) -> bool:
            """Re-decide the last ``back`` returns and the next ``back`` with the general search,
            from the sweep's own state then (sound, not complete: that state is one choice
            among several). On success the sweep goes on after the stretch."""
            nonlocal ci, ri, inflight, in_flight
            m_ci, m_ri, m_order, m_undo = marks[-back - 1] if back < len(marks) else base
            new_ri = min(ri + back, nr)
            new_ci = bisect.bisect_right(call_times, ret_times[new_ri - 1], lo=ci)
            later = {
                j: None for j in itertools.chain(inflight, calls[ci:new_ci]) if ret_pos[j] >= new_ri
            }
            saved = (used, dict(open_), order[m_order:], undo[m_undo:])
            rewind(m_order, m_undo)
            # Calls in flight at the mark, then the calls since; the ones still in flight at
            # the end of the stretch are passed as pending (observers: left to the sweep).
            earlier = [rets[r] for r in range(m_ri, ri) if call_pos[rets[r]] < m_ci]
            earlier += [j for j in inflight if call_pos[j] < m_ci]
            window: list[int] = []
            local: list[Operation] = []
            left: list[int] = []  # observers in flight after: the sweep goes on explaining them
            for j in itertools.chain(earlier, calls[m_ci:new_ci]):
                if placed[j]:
                    continue
                op = ops[j]
                if j in later:
                    if kinds[j] in _OBSERVERS:
                        left.append(j)
                        continue
                    op = Operation(op.op, op.budget, op.rid, op.amount, op.call, None, None)
                window.append(j)
                local.append(op)
            if len(local) > _REPAIR_MAX:  # re-deciding grew too long: decide exactly instead
                restore(*saved)
                return False
            # First with the calls still in flight taking effect only at the very end (the
            # sweep's "as late as possible"), then anywhere.
            end = ret_times[new_ri - 1]
            lazy = [
                Operation(op.op, op.budget, op.rid, op.amount, max(op.call, end), None, None)
                if op.ret is None
                else op
                for op in local
            ]
            witness, _, states = _search(lazy, limit, used, open_)
            self.states += states
            if witness is None:
                witness, _, states = _search(local, limit, used, open_)
                self.states += states
            self.searched += len(local)
            if witness is None:  # put the sweep's own choices back
                return restore(*saved)
            # Replay the witness exactly: `unexplained` stays empty meanwhile, so `take` places
            # no observer early. An observer of the window goes where the witness puts it (the
            # witness keeps real time); one in flight after the stretch goes at the first step
            # where it is true and every operation that returned before its call is placed
            # (placing it as soon as it was true broke real time: a refusal called after an
            # admission returned went before that admission).
            waiting.clear()
            unexplained.clear()
            for j in window:
                if kinds[j] not in _OBSERVERS:
                    waiting[j] = None
            held = {j: bisect.bisect_left(ret_times, ops[j].call) for j in left}
            done = m_ri  # every return before this one is placed

            def place_held() -> None:
                nonlocal done
                while done < new_ri and placed[rets[done]]:
                    done += 1
                for j in [j for j, need in held.items() if need <= done and explained(j)]:
                    del held[j]
                    placed[j] = 1
                    order.append(j)

            place_held()
            for k in witness:
                j = window[k]
                if kinds[j] in _OBSERVERS:
                    placed[j] = 1
                    order.append(j)
                elif not take(j):
                    if j not in later:  # pragma: no cover - the search said so
                        raise AssertionError(f"witness replay failed at {ops[j].describe()}")
                    continue
                if held:
                    place_held()
            for j in window:
                if not placed[j] and j not in later:  # pragma: no cover - the search placed it
                    raise AssertionError(f"witness left {ops[j].describe()} out")
            for j in held:
                unexplained[j] = None
            for j in list(unexplained):
                if j not in later:  # pragma: no cover - returned: explained by the witness
                    raise AssertionError(f"witness left {ops[j].describe()} unexplained")
                if explained(j):
                    del unexplained[j]
                    placed[j] = 1
                    order.append(j)
            for j in waiting:
                if j not in later:  # pragma: no cover
                    raise AssertionError(f"witness left {ops[j].describe()} untaken")
            ci, ri, inflight = new_ci, new_ri, later
            in_flight = sum(1 for j in later if kinds[j] not in _OBSERVERS)
            del marks[max(len(marks) - back, 0) :]  # the marks inside the stretch are gone
            marks.append((ci, ri, len(order), len(undo)))
            return True

        def restore(
            old_used: int, old_open: dict[object, int], old_order: list[int],
            old_undo: list[tuple[int, int]],
        ) -> bool:
            nonlocal used
            used = old_used
            open_.clear()
            open_.update(old_open)
            for j in old_order:
                placed[j] = 1
            order.extend(old_order)
            undo.extend(old_undo)
            return False

        def fits(i: int) -> bool:
            return used + amounts[i] <= limit

        def lowers(i: int, j: int) -> bool:  # an end that gives back part of its estimate
            return kinds[j] in (_END_OK, _MAYBE_END) and amounts[j] < open_.get(keys[j], -1)

        def raises(i: int, j: int) -> bool:  # a reserve, or an end costing over its estimate
            return kinds[j] in (_ADMIT, _MAYBE_RESERVE) or amounts[j] > open_.get(keys[j], 1 << 62)

        def closes(i: int, j: int) -> bool:  # an end of the same reservation
            return kinds[j] in (_END_OK, _MAYBE_END) and keys[j] == keys[i]

        def make_room(
            i: int, need: Callable[[int], bool], helps: Callable[[int, int], bool]
        ) -> bool:
            """Take waiting effects that ``helps`` picks, oldest call first, until ``need(i)``."""
            for j in list(waiting):
                if helps(i, j) and take(j) and need(i):
                    return True
            return need(i)

        while ri < nr:
            if ci < nc and call_times[ci] <= ret_times[ri]:
                i = calls[ci]
                ci += 1
                inflight[i] = None
                if placed[i]:
                    continue
                if kinds[i] in _OBSERVERS:
                    if explained(i):
                        placed[i] = 1
                        order.append(i)
                    else:
                        unexplained[i] = None
                else:
                    waiting[i] = None
                    in_flight += 1
                continue
            i = rets[ri]
            ri += 1
            del inflight[i]
            if placed[i]:
                if kinds[i] not in _OBSERVERS:
                    in_flight -= 1
            else:
                kind = kinds[i]
                ok = True
                if kind == _ADMIT:
                    if not take(i):
                        ok = make_room(i, fits, lowers) and take(i)
                    in_flight -= 1
                elif kind == _END_OK:
                    if not take(i):
                        mine = [j for j in waiting if keys[j] == keys[i] and j != i]
                        ok = any(take(j) for j in mine) and take(i)
                    in_flight -= 1
                elif kind == _REFUSE:
                    ok = explained(i) or make_room(i, explained, raises)
                    if ok:
                        unexplained.pop(i, None)
                        if not placed[i]:
                            placed[i] = 1
                            order.append(i)
                else:  # a failed end: its reservation must not be open at some moment
                    ok = explained(i) or make_room(i, explained, closes)
                    if ok:
                        unexplained.pop(i, None)
                        if not placed[i]:
                            placed[i] = 1
                            order.append(i)
                if not ok:
                    # Stuck. Its reservation alone may already be impossible (whether it is
                    # open depends only on the calls with its rid): a cheap, exact refutation.
                    refuted = self._refute_by_reservation(i)
                    if refuted is not None:
                        return refuted
                    # Then re-decide the last few returns from the sweep's own state (cheap;
                    # finds a witness when the greedy choice was the problem).
                    repaired = False
                    for back in _REPAIR_BACK:
                        repaired = repair(back)
                        if repaired:
                            break
                    if repaired:
                        continue
                    # Then decide exactly: from the last cut, where the state is known.
                    rewind(cut[2], 0)
                    result = self._search_window(cut, ri, used, open_, order, placed)
                    if isinstance(result, PartitionResult):
                        return result
                    old_ci = ci
                    ci, ri, used, open_ = result
                    waiting.clear()
                    unexplained.clear()
                    in_flight = 0
                    undo.clear()
                    marks.clear()
                    inflight = {
                        j: None
                        for j in itertools.chain(inflight, calls[old_ci:ci])
                        if ret_pos[j] >= ri
                    }
                    cut = (ci, ri, len(order))
                    base = (*cut, 0)
                    continue
            if not in_flight and not unexplained:
                undo.clear()
                marks.clear()
                cut = (ci, ri, len(order))
                base = (*cut, 0)
            else:
                marks.append((ci, ri, len(order), len(undo)))
                if len(marks) > 4 * _REPAIR_BACK[-1]:
                    base = marks[-_REPAIR_BACK[-1] - 1]
                    del marks[: -_REPAIR_BACK[-1] - 1]
        # Left: calls that never returned; each may or may not have taken effect, and leaving
        # out those not taken yet is a valid choice.
        n = len(ops)
        witness = tuple(ops[i] for i in order)
        return PartitionResult(
            self.budget, limit, n, True, "", witness, self.states + n, self.searched
        )

    def _refute_by_reservation(self, stuck: int) -> PartitionResult | None:
        """Check the calls on ``stuck``'s reservation alone, with amounts ignored.

        Whether a reservation is open depends only on its own reserve and ends, so if no order
        of those explains their results, no order of the whole history does. Refused reserves
        are left out (they open nothing); every reserve fits under an unbounded limit.
        """
        ops, key = self.ops, self.keys[stuck]
        if self.ops[stuck].rid is None:
            return None
        if self.by_key is None:
            self.by_key = {}
            for i, k in enumerate(self.keys):
                if self.kinds[i] != _REFUSE:
                    self.by_key.setdefault(k, []).append(i)
        mine = self.by_key.get(key, [])
        unbounded = 1 << 62
        witness, best, states = _search([ops[i] for i in mine], unbounded)
        self.states += states
        if witness is not None:
            return None
        assert best is not None
        depth, prefix, _, at_open, failed, blocking = best
        best = (
            depth,
            [mine[k] for k in prefix],
            sum(at_open.values()),
            at_open,
            [(mine[k], u) for k, u in failed],
            mine[blocking],
        )
        reason = _reason(ops, self.limit, self.budget, best).replace(
            "The longest explainable prefix",
            f"Already the {len(mine)} call(s) on reservation {ops[stuck].rid} alone have none "
            "(whatever the amounts); their longest explainable prefix",
            1,
        )
        refused = [op for op in ops if op.rid == ops[stuck].rid and op.op == "reserve"]
        refused = [op for op in refused if op.result == "refused"]
        if refused:
            reason += "\nLeft out (a refusal opens nothing): " + "; ".join(
                op.describe() for op in refused
            )
        return PartitionResult(
            self.budget, self.limit, len(ops), False, reason, (), self.states, self.searched
        )

    def _search_window(
        self,
        cut: tuple[int, int, int],
        stuck: int,
        used: int,
        opened: dict[object, int],
        order: list[int],
        placed: bytearray,
    ) -> PartitionResult | tuple[int, int, int, dict[object, int]]:
        """Decide the stretch from ``cut`` to the next cut at or after return ``stuck``.

        Returns where and in which state to go on, or the verdict when it fails.
        """
        ops, kinds, keys, amounts, limit = self.ops, self.kinds, self.keys, self.amounts, self.limit
        calls, rets, call_times, ret_times = self.calls, self.rets, self.call_times, self.ret_times
        nc, nr = len(calls), len(rets)
        ci, ri = cut[0], cut[1]
        # The state once every effect so far has taken effect. At a cut it is the same in every
        # linearization, but not the state of applying effects in return order: an end may
        # return before its reserve does (both in flight together), so an end seen first is
        # kept in ``ended`` and applied when its reserve returns.
        end_used, end_open = used, dict(opened)
        ended: dict[object, int] = {}
        in_flight = 0
        observers: dict[int, None] = {}
        while ri < nr:
            if ci < nc and call_times[ci] <= ret_times[ri]:
                i = calls[ci]
                ci += 1
                if kinds[i] in _OBSERVERS:
                    observers[i] = None
                else:
                    in_flight += 1
                continue
            i = rets[ri]
            ri += 1
            kind = kinds[i]
            if kind == _ADMIT:
                actual = ended.pop(keys[i], None)
                if actual is None:
                    end_used += amounts[i]
                    end_open[keys[i]] = amounts[i]
                else:  # ended before it returned: what the end charged counts
                    end_used += actual
                in_flight -= 1
            elif kind == _END_OK:
                est = end_open.pop(keys[i], None)
                if est is None:
                    ended[keys[i]] = amounts[i]
                else:
                    end_used += amounts[i] - est
                in_flight -= 1
            else:
                observers.pop(i, None)
            if (
                ri >= stuck
                and not in_flight
                and all(
                    end_used + amounts[j] > limit
                    if kinds[j] == _REFUSE
                    else keys[j] not in end_open
                    for j in observers
                )
            ):
                break
        else:
            ci = nc  # to the end: every remaining call belongs to the window
        window = [i for i in calls[cut[0] : ci] if not placed[i]]
        self.searched += len(window)
        witness, best, states = _search([ops[i] for i in window], limit, used, opened)
        self.states += states
        if witness is None:
            assert best is not None
            depth, prefix, at_used, at_open, failed, blocking = best
            committed = order[: cut[2]]
            best = (
                len(committed) + depth,
                committed + [window[k] for k in prefix],
                at_used,
                at_open,
                [(window[k], u) for k, u in failed],
                window[blocking],
            )
            reason = _reason(ops, limit, self.budget, best)
            return PartitionResult(
                self.budget, limit, len(ops), False, reason, (), self.states, self.searched
            )
        for i in window:
            placed[i] = 1
        order.extend(window[k] for k in witness)
        return ci, ri, end_used, end_open




def _search(
    ops: Sequence[Operation], limit: int, used: int = 0, opened: Mapping[object, int] | None = None
) -> tuple[list[int] | None, _Best | None, int]:
    """Wing & Gong's search from the state (``used``, open reservations ``opened``).

    Returns (the witness as indices into ``ops`` or None, the longest explainable prefix when
    there is none, the number of explored sets).
    """
    n = len(ops)
    head, tail = 2 * n, 2 * n + 1
    inf = math.inf

    def when(entry: int) -> tuple[float, int]:
        op = ops[entry >> 1]
        if entry & 1:
            return (inf if op.ret is None else op.ret, 1)
        return (op.call, 0)  # calls sort before returns at equal times: they overlap

    order = sorted(range(2 * n), key=when)
    nxt = [0] * (2 * n + 2)
    prv = [0] * (2 * n + 2)
    chain = [head, *order, tail]
    for a, b in itertools.pairwise(chain):
        nxt[a] = b
        prv[b] = a

    open_: dict[object, int] = dict(opened or {})
    linearized = 0
    effects = 0  # which pending operations took effect: their state depends on the order
    cache: set[tuple[int, int]] = set()
    stack: list[tuple[int, object, int]] = []  # (op index, open key, estimate) for undo
    failures: list[list[tuple[int, int]]] = [[]]
    best: _Best | None = None

    entry = nxt[head]
    while nxt[head] != tail:
        if not entry & 1:  # a call: try to let it take effect now
            i = entry >> 1
            op = ops[i]
            key: object = op.rid if op.rid is not None else ("pending", i)
            kind = op.op
            if kind == "reserve":
                fits = used + op.amount <= limit
                if op.result is None or (op.result == "admitted") == fits:
                    took = fits
                else:
                    failures[-1].append((i, used))
                    entry = nxt[entry]
                    continue
                est = op.amount
                delta = est if took else 0
            else:
                is_open = key in open_
                if op.result is not None and (op.result == "ok") != is_open:
                    failures[-1].append((i, used))
                    entry = nxt[entry]
                    continue
                took = is_open
                est = open_.get(key, 0)
                delta = (op.amount - est) if took else 0
            new_lin = linearized | (1 << i)
            new_eff = effects | (1 << i) if (took and op.ret is None) else effects
            if (new_lin, new_eff) in cache:
                entry = nxt[entry]
                continue
            cache.add((new_lin, new_eff))
            linearized, effects = new_lin, new_eff
            used += delta
            if took:
                if kind == "reserve":
                    open_[key] = est
                else:
                    del open_[key]
            stack.append((i, key, est if took else -1))
            failures.append([])
            ret_entry = entry | 1  # lift the call and its return out of the list
            nxt[prv[entry]] = nxt[entry]
            prv[nxt[entry]] = prv[entry]
            nxt[prv[ret_entry]] = nxt[ret_entry]
            prv[nxt[ret_entry]] = prv[ret_entry]
            entry = nxt[head]
            continue
        # A return: the search cannot get past it without linearizing its operation first.
        i = entry >> 1
        if ops[i].ret is None:
            break  # only calls that never returned are left: they may never take effect
        if best is None or len(stack) > best[0]:
            best = (len(stack), [s[0] for s in stack], used, dict(open_), failures[-1][:], i)
        if not stack:
            return None, best, len(cache)
        j, key, est = stack.pop()
        failures.pop()
        op = ops[j]
        linearized &= ~(1 << j)
        effects &= ~(1 << j)
        if est >= 0:  # it took effect: undo it
            if op.op == "reserve":
                used -= est
                del open_[key]
            else:
                used -= op.amount - est
                open_[key] = est
        call_entry, ret_entry = 2 * j, 2 * j + 1  # put it back (LIFO keeps the links valid)
        nxt[prv[ret_entry]] = ret_entry
        prv[nxt[ret_entry]] = ret_entry
        nxt[prv[call_entry]] = call_entry
        prv[nxt[call_entry]] = call_entry
        entry = nxt[call_entry]
    return [s[0] for s in stack], None, len(cache)



_SHOW_PREFIX = 10  # the end of a long prefix is what explains the failure


def _reason(
    ops: list[Operation],
    limit: int,
    budget: str,
    best: tuple[int, list[int], int, dict[object, int], list[tuple[int, int]], int],
) -> str:
    depth, prefix, used, open_, failed, blocking = best
    lines = [
        f"budget {budget!r} (limit {limit}): no sequential order of its {len(ops)} operations "
        "explains their results.",
        f"The longest explainable prefix has {depth} operation(s):",
    ]
    shown_from = max(len(prefix) - _SHOW_PREFIX, 0)
    if shown_from:
        lines.append(f"  ... {shown_from} earlier operation(s)")
    lines += [
        f"  {k}. {ops[i].describe()}"
        for k, i in enumerate(prefix[shown_from:], start=shown_from + 1)
    ]
    shown = ", ".join(f"{rid}: {est}" for rid, est in open_.items())
    stuck = ops[blocking]
    lines.append(
        f"then used = {used}, open reservations {{{shown}}}; {stuck.op} rid={stuck.rid} "
        f"returned at {stuck.ret:g}, so it or an operation called before then must go next, "
        "but none can:"
    )
    lines += [f"  - {_mismatch(ops[i], at, limit)}" for i, at in failed]
    if not failed:
        lines.append("  - every candidate leads only to states already shown to fail")
    return "\n".join(lines)


# -- files -------------------------------------------------------------------------------------


def write_history(history: History, path: str | Path) -> None:
    """Write ``history`` as JSON lines (the format in this module's docstring)."""
    with open(path, "w", encoding="utf-8") as fh:
        for name, limit in history.limits.items():
            fh.write(json.dumps({"budget": name, "limit": limit}) + "\n")
        for op in history.operations:
            fh.write(json.dumps(op.as_json()) + "\n")


def read_history(path: str | Path) -> History:
    """Read a JSON-lines history file.

    Raises:
        TraceError: a line that is not valid; the message names file, line, key and value.
        OSError: the file cannot be read.
    """
    with open(path, encoding="utf-8") as fh:
        return parse_history(fh, source=str(path))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_history(lines: Iterable[str], *, source: str = "<history>") -> History:
    """Parse history lines (see the module docstring).

    Raises:
        TraceError: a malformed line, naming ``source``, the line, the key and the value.
    """
    limits: dict[str, int] = {}
    raw: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(source, number, "-", f"a JSON object ({exc.msg})", text[:60]) from exc
        if not isinstance(data, dict):
            raise TraceError(source, number, "-", "a JSON object", data)
        if "op" not in data:
            name, limit = data.get("budget"), data.get("limit")
            if not isinstance(name, str):
                raise TraceError(source, number, "budget", "a budget name (string)", name)
            if type(limit) is not int or limit < 0:
                raise TraceError(source, number, "limit", "an integer >= 0 (micro-dollars)", limit)
            limits[name] = limit
        else:
            raw.append((number, data))
    only = next(iter(limits)) if len(limits) == 1 else None
    operations = [_operation(source, number, data, limits, only) for number, data in raw]
    seen: dict[tuple[str, int], int] = {}
    for (number, _), op in zip(raw, operations, strict=True):
        if op.op == "reserve" and op.result != "refused" and op.rid is not None:
            first = seen.setdefault((op.budget, op.rid), number)
            if first != number:
                expected = f"a rid not already admitted (line {first})"
                raise TraceError(source, number, "rid", expected, op.rid)
    return History(limits, tuple(operations))


def _operation(
    source: str, number: int, data: dict[str, Any], limits: Mapping[str, int], only: str | None
) -> Operation:
    def fail(key: str, expected: str) -> TraceError:
        return TraceError(source, number, key, expected, data.get(key))

    kind = data["op"]
    if kind not in _RESULTS:
        raise fail("op", "reserve, settle or release")
    budget: Any = data.get("budget", only)
    if budget not in limits:
        raise fail("budget", f"a declared budget ({', '.join(limits) or 'none declared'})")
    amount_key = {"reserve": "estimate", "settle": "actual", "release": None}[kind]
    amount: Any = 0
    if amount_key is not None:
        amount = data.get(amount_key)
        if type(amount) is not int or amount < 0:
            raise fail(amount_key, "an integer >= 0 (micro-dollars)")
    rid = data.get("rid")
    if rid is not None and type(rid) is not int:
        raise fail("rid", "an integer or null")
    call: Any = data.get("call")
    ret, result = data.get("return"), data.get("result")
    if not _number(call):
        raise fail("call", "a number (time of the call)")
    if ret is not None and (not _number(ret) or ret < call):
        raise fail("return", f"null or a number >= call ({call})")
    if ret is None and result is not None:
        raise fail("result", "null for a call that never returned")
    if ret is not None and result not in _RESULTS[kind]:
        raise fail("result", " or ".join(_RESULTS[kind]))
    if rid is None and (kind != "reserve" or result == "admitted"):
        raise fail("rid", f"an integer for {kind} -> {result}")
    client = data.get("client")
    if client is not None and not isinstance(client, str | int):
        raise fail("client", "a string, an integer or null")
    return Operation(kind, budget, rid, amount, call, ret, result, client)


# -- sources of histories ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One simulated request as `history_from_requests` reads it.

    ``decision``: "admitted" (the budget reserved ``estimate``), "refused" (the budget said
    no) or "skipped" (the request never reached the budget, e.g. no key). Times are simulated
    seconds; ``start`` is when it was admitted and sent (None if never), ``end`` when it
    finished (None if still running). ``actual`` is the settled cost (None: released, cost 0).
    """

    id: int
    arrival: float
    start: float | None
    end: float | None
    estimate: int
    actual: int | None
    decision: str
    budget: str = "budget"


class RequestLike(Protocol):
    """Anything with the attributes of `RequestRecord` (``budget`` optional)."""

    @property
    def id(self) -> int: ...
    @property
    def arrival(self) -> float: ...
    @property
    def start(self) -> float | None: ...
    @property
    def end(self) -> float | None: ...
    @property
    def estimate(self) -> int: ...
    @property
    def actual(self) -> int | None: ...
    @property
    def decision(self) -> str: ...


def _field(record: RequestLike | Mapping[str, Any], name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def history_from_requests(
    records: Iterable[RequestLike | Mapping[str, Any]],
    *,
    limit: int | Mapping[str, int],
    budget: str = "budget",
) -> History:
    """Turn per-request records (objects or dicts, see `RequestRecord`) into a history.

    An admitted request's reserve spans ``[arrival, start]`` (the admission happened somewhere
    in there) and returns "admitted" with ``rid = id``; when it has ended, a settle of
    ``actual`` (or a release when ``actual`` is None) spans ``[end, end]``. A refused request's
    reserve spans ``[arrival, start or end or arrival]`` and returns "refused". Skipped requests
    add nothing. ``limit`` is one limit, or a limit per budget name (records choose theirs with
    a ``budget`` field; default ``budget``).

    Raises:
        InvalidValueError: an unknown decision, a record on a budget with no limit, or a
            malformed amount or time.
    """
    limits = {budget: limit} if isinstance(limit, int) else dict(limit)
    ops: list[Operation] = []
    for record in records:
        rid = _field(record, "id")
        name = _field(record, "budget", budget) or budget
        decision = str(_field(record, "decision"))
        arrival = _field(record, "arrival")
        start, end = _field(record, "start"), _field(record, "end")
        est = _field(record, "estimate")
        if decision == "admitted":
            ops.append(
                Operation(
                    "reserve",
                    name,
                    rid,
                    est,
                    arrival,
                    arrival if start is None else start,
                    "admitted",
                    rid,
                )
            )
            if end is not None:
                actual = _field(record, "actual")
                kind: OpKind = "release" if actual is None else "settle"
                ops.append(Operation(kind, name, rid, actual or 0, end, end, "ok", rid))
        elif decision == "refused":
            done = next((t for t in (start, end) if t is not None), arrival)
            ops.append(Operation("reserve", name, rid, est, arrival, done, "refused", rid))
        elif decision != "skipped":
            raise InvalidValueError(
                "decision", decision, "must be admitted, refused or skipped", source=f"id {rid}"
            )
    return History(limits, tuple(ops))


class RecordedTracker:
    """A `BudgetTracker` whose reserve/settle/release calls are recorded (see `HistoryRecorder`)."""

    def __init__(self, recorder: HistoryRecorder, tracker: BudgetTracker) -> None:
        self._recorder = recorder
        self.tracker = tracker

    def reserve(self, estimate: int, *, client: str | int | None = None) -> Reservation | None:
        """`BudgetTracker.reserve`; ``None`` when refused (`BudgetExceeded`)."""
        rec = self._recorder
        call = rec.clock()
        try:
            reservation: Reservation | None = self.tracker.reserve(estimate)
        except BudgetExceeded:
            reservation = None
        ret = rec.clock()
        result = "refused" if reservation is None else "admitted"
        rid = None if reservation is None else reservation.id
        rec.add(Operation("reserve", self.tracker.name, rid, estimate, call, ret, result, client))
        return reservation

    def settle(
        self, reservation: Reservation, actual: int, *, client: str | int | None = None
    ) -> bool:
        """`Reservation.settle`; False if it had already ended (`ReservationStateError`)."""
        return self._end(reservation, actual, client)

    def release(self, reservation: Reservation, *, client: str | int | None = None) -> bool:
        """`Reservation.release`; False if it had already ended."""
        return self._end(reservation, None, client)

    def _end(self, reservation: Reservation, actual: int | None, client: str | int | None) -> bool:
        rec = self._recorder
        call = rec.clock()
        try:
            if actual is None:
                reservation.release()
            else:
                reservation.settle(actual)
            ok = True
        except ReservationStateError:
            ok = False
        ret = rec.clock()
        kind: OpKind = "release" if actual is None else "settle"
        result = "ok" if ok else "error"
        name = self.tracker.name
        rec.add(Operation(kind, name, reservation.id, actual or 0, call, ret, result, client))
        return ok


@dataclass
class HistoryRecorder:
    """Records calls on `BudgetTracker` objects from many threads into a `History`.

    Times come from ``clock``: by default a global atomic counter (unique, totally ordered and
    consistent with real time: a call that returned before another began has smaller stamps);
    pass ``time.perf_counter_ns`` for wall time. Each wrapped tracker is one budget, named by
    ``tracker.name`` (names must differ).

    >>> rec = HistoryRecorder()
    >>> t = rec.wrap(BudgetTracker.from_micros(100, name="b"))
    >>> r = t.reserve(60)
    >>> t.settle(r, 40)
    True
    >>> check_history(rec.history()).ok
    True
    """

    clock: Callable[[], float] = field(default_factory=lambda: itertools.count().__next__)
    _ops: list[Operation] = field(default_factory=list, init=False, repr=False)
    _limits: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def wrap(self, tracker: BudgetTracker) -> RecordedTracker:
        """Record this tracker's calls made through the returned object.

        Raises:
            InvalidValueError: another wrapped tracker has the same name.
        """
        with self._lock:
            if tracker.name in self._limits:
                raise InvalidValueError("tracker.name", tracker.name, "is already recorded")
            self._limits[tracker.name] = tracker.limit
        return RecordedTracker(self, tracker)

    def add(self, operation: Operation) -> None:
        """Append one operation (``list.append`` is atomic)."""
        self._ops.append(operation)

    def history(self) -> History:
        """Everything recorded so far, ordered by call time."""
        with self._lock:
            limits = dict(self._limits)
        return History(limits, tuple(sorted(self._ops, key=lambda op: op.call)))
