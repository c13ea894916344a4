"""Budget trackers as explorer models: the seed's lock-free design, two foils and its bug.

Each factory returns an `omnillm_sim.verify.explore.Model` in which every client makes
``requests`` requests: reserve the estimate, and if admitted, settle it at the actual cost.

* ``cas``: omnillm 0.1.1's ``BudgetTracker`` — ``try_reserve`` is a CAS loop (load ``used``;
  refuse if ``used + est > limit``, the addition wrapping like a release build's ``u64``; CAS
  ``used -> used + est``, retry on failure) and ``settle`` is one ``fetch_add(actual - est)``
  or ``fetch_sub(est - actual)``.
* ``check-then-act``: the recurring industry bug — load ``used``, compare with the limit, store
  ``used + est``, as three separate steps (settle is a load and a store too).
* ``locked``: the same code as check-then-act, inside a mutex (our `BudgetTracker`'s design).
* ``double-settle``: the seed's stream path (reference §2 and §8.1). Each stream client
  reserves with the CAS loop, then polls its stream: if the cancel has already fired it settles
  the partial cost and ends; otherwise ``Completed`` arrives and it settles the actual cost, and
  then keeps polling — if the cancel fires before end-of-stream it settles a second time. The
  last thread is the canceller, which sets the ``cancel`` cell. When ``actual < est`` the second
  ``fetch_sub`` refunds ``est - actual`` again and ``used`` wraps to about 2**64.

`MODELS` maps these names to factories; `load_model` also accepts ``package.module:factory``
for a user's own model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.money import U64_MAX
from omnillm_sim.validate import non_negative_int, positive_int
from omnillm_sim.verify.explore import (
    Acquire,
    Admitted,
    CompareAndSwap,
    FetchAdd,
    FetchSub,
    Load,
    Model,
    Op,
    Program,
    Refused,
    Release,
    Settled,
    Store,
)

__all__ = [
    "MODELS",
    "cas_model",
    "cas_reserve",
    "check_then_act_model",
    "double_settle_model",
    "load_model",
    "locked_model",
    "seed_settle",
]

USED = "used"


def cas_reserve(limit: int, est: int, cell: str = USED) -> Op[bool]:
    """The seed's ``try_reserve``: a compare-exchange loop that never stores over the limit."""
    while True:
        cur = yield Load(cell)
        new = (cur + est) & U64_MAX  # `cur + estimated` is unchecked: it wraps in release builds
        if new > limit:
            return False
        if (yield CompareAndSwap(cell, cur, new)):
            return True


def seed_settle(est: int, actual: int, cell: str = USED) -> Op[None]:
    """The seed's ``settle``: one fetch_add or fetch_sub of the difference (wrapping)."""
    if actual > est:
        yield FetchAdd(cell, actual - est)
    else:
        yield FetchSub(cell, est - actual)


def _check_then_act_reserve(limit: int, est: int) -> Op[bool]:
    cur = yield Load(USED)
    if cur + est > limit:
        return False
    yield Store(USED, cur + est)
    return True


def _check_then_act_settle(est: int, actual: int) -> Op[None]:
    cur = yield Load(USED)
    yield Store(USED, cur + actual - est)


def _locked_reserve(limit: int, est: int) -> Op[bool]:
    yield Acquire("lock")
    cur: int = yield Load(USED)
    admitted = cur + est <= limit
    if admitted:
        yield Store(USED, cur + est)
    yield Release("lock")
    return admitted


def _locked_settle(est: int, actual: int) -> Op[None]:
    yield Acquire("lock")
    cur = yield Load(USED)
    yield Store(USED, cur + actual - est)
    yield Release("lock")


def _per_client(name: str, value: int | Sequence[int], clients: int) -> list[int]:
    values = [value] * clients if isinstance(value, int) else list(value)
    if len(values) != clients:
        raise InvalidValueError(name, value, f"must be one amount or {clients} amounts")
    for amount in values:
        non_negative_int(name, amount)
    return values


Reserve = Callable[[int, int], Op[bool]]
Settle = Callable[[int, int], Op[None]]


def _client(
    reserve: Reserve, settle: Settle, limit: int, est: int, actual: int, requests: int
) -> Callable[[], Program]:
    def program() -> Program:
        for _ in range(requests):
            admitted = yield from reserve(limit, est)
            if not admitted:
                yield Refused(est)
                continue
            yield Admitted(est)
            yield from settle(est, actual)
            yield Settled(est, actual)

    return program


def _tracker_model(
    name: str,
    description: str,
    reserve: Reserve,
    settle: Settle,
    clients: int,
    limit: int,
    estimate: int | Sequence[int],
    actual: int | Sequence[int],
    requests: int,
    locks: bool = False,
) -> Model:
    positive_int("clients", clients)
    non_negative_int("limit", limit)
    positive_int("requests", requests)
    ests = _per_client("estimate", estimate, clients)
    actuals = _per_client("actual", actual, clients)
    programs = tuple(
        _client(reserve, settle, limit, e, a, requests) for e, a in zip(ests, actuals, strict=True)
    )
    per = "" if requests == 1 else f"{requests} times: "
    return Model(
        name=name,
        description=description,
        programs=programs,
        memory={USED: 0},
        limit=limit,
        parameters=f"limit {limit}; each client {per}reserves {_show(ests)}, settles at "
        f"{_show(actuals)}",
    )


def _show(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(values)


def cas_model(
    clients: int = 2,
    *,
    limit: int = 100,
    estimate: int | Sequence[int] = 60,
    actual: int | Sequence[int] = 40,
    requests: int = 1,
) -> Model:
    """The seed's lock-free tracker: CAS reserve loop, fetch-add/fetch-sub settle."""
    return _tracker_model(
        "cas",
        "omnillm 0.1.1: CAS loop reserve, fetch_add/fetch_sub settle (u64, wrapping)",
        cas_reserve,
        seed_settle,
        clients,
        limit,
        estimate,
        actual,
        requests,
    )


def check_then_act_model(
    clients: int = 2,
    *,
    limit: int = 100,
    estimate: int | Sequence[int] = 60,
    actual: int | Sequence[int] = 40,
    requests: int = 1,
) -> Model:
    """Load, compare, store as separate steps: the check-then-act race."""
    return _tracker_model(
        "check-then-act",
        "check-then-act: load used, compare with the limit, store used + est (not atomic)",
        _check_then_act_reserve,
        _check_then_act_settle,
        clients,
        limit,
        estimate,
        actual,
        requests,
    )


def locked_model(
    clients: int = 2,
    *,
    limit: int = 100,
    estimate: int | Sequence[int] = 60,
    actual: int | Sequence[int] = 40,
    requests: int = 1,
) -> Model:
    """Check-then-act inside one mutex (the design of our `BudgetTracker`)."""
    return _tracker_model(
        "locked",
        "locked: load, compare, store inside one mutex",
        _locked_reserve,
        _locked_settle,
        clients,
        limit,
        estimate,
        actual,
        requests,
    )


def _stream_client(limit: int, est: int, actual: int) -> Callable[[], Program]:
    def program() -> Program:
        admitted = yield from cas_reserve(limit, est)
        if not admitted:
            yield Refused(est)
            return
        yield Admitted(est)
        if (yield Load("cancel")):  # cancelled mid-stream: settle the partial cost once
            yield from seed_settle(est, actual)
            yield Settled(est, actual)
            return
        yield from seed_settle(est, actual)  # `Completed`: settle on the reported usage
        yield Settled(est, actual)
        if (yield Load("cancel")):  # still polling: a cancel before EOF settles again (§8.1)
            yield from seed_settle(est, actual)

    return program


def _canceller() -> Program:
    yield Store("cancel", 1)


def double_settle_model(
    clients: int = 1,
    *,
    limit: int = 100,
    estimate: int | Sequence[int] = 60,
    actual: int | Sequence[int] = 10,
    requests: int = 1,
) -> Model:
    """The seed's stream: settle on ``Completed``, and again if the cancel fires before EOF.

    ``clients`` stream clients plus one canceller thread (the last one).
    """
    positive_int("clients", clients)
    non_negative_int("limit", limit)
    if requests != 1:
        raise InvalidValueError("requests", requests, "must be 1 for the double-settle model")
    ests = _per_client("estimate", estimate, clients)
    actuals = _per_client("actual", actual, clients)
    programs = [_stream_client(limit, e, a) for e, a in zip(ests, actuals, strict=True)]
    return Model(
        name="double-settle",
        description="omnillm stream: settle on Completed, settle again on a cancel before EOF",
        programs=(*programs, _canceller),
        memory={USED: 0, "cancel": 0},
        limit=limit,
        thread_names=(*(f"c{i}" for i in range(clients)), "cancel"),
        parameters=f"limit {limit}; each stream reserves {_show(ests)}, usage {_show(actuals)};"
        " the last thread fires the cancel",
    )


MODELS: dict[str, Callable[..., Model]] = {
    "cas": cas_model,
    "check-then-act": check_then_act_model,
    "locked": locked_model,
    "double-settle": double_settle_model,
}


def load_model(spec: str, clients: int, **params: Any) -> Model:
    """A model by name (`MODELS`) or by ``package.module:factory``.

    The factory is called as ``factory(clients, **params)`` and must return a `Model`; params
    whose value is ``None`` are left out so factories keep their defaults.

    Raises:
        InvalidValueError: an unknown name, an import path that does not resolve, or a factory
            that does not return a `Model`.
    """
    given = {key: value for key, value in params.items() if value is not None}
    if spec in MODELS:
        return MODELS[spec](clients, **given)
    if ":" not in spec:
        raise InvalidValueError(
            "model", spec, f"must be one of {', '.join(MODELS)} or package.module:factory"
        )
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidValueError("model", spec, f"cannot be loaded ({exc})") from exc
    model = factory(clients, **given)
    if not isinstance(model, Model):
        raise InvalidValueError("model", spec, f"returned {type(model).__name__}, not a Model")
    return model
