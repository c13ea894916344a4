"""The interleaving explorer: its search is complete, and it judges the tracker models right."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm_sim.errors import InvalidValueError
from omnillm_sim.verify.explore import (
    Acquire,
    Execution,
    Load,
    Model,
    Program,
    Release,
    explore_exhaustive,
    explore_pct,
    explore_random,
    format_schedule,
    minimise,
    parse_schedule,
    render_trace,
    replay,
)
from omnillm_sim.verify.tracker_models import (
    MODELS,
    cas_model,
    check_then_act_model,
    double_settle_model,
    load_model,
    locked_model,
)

# -- the search itself -------------------------------------------------------------------------


def _loads(count: int):  # type: ignore[no-untyped-def]
    def program() -> Program:
        for _ in range(count):
            yield Load("used")

    return program


def _counter_model(lengths: list[int]) -> Model:
    return Model(
        name="loads",
        description="clients that only read",
        programs=tuple(_loads(n) for n in lengths),
        memory={"used": 0},
        limit=0,
    )


def _brute_force(lengths: list[int], bound: int | None) -> set[tuple[int, ...]]:
    """Every interleaving with at most ``bound`` preemptions, by enumeration.

    A preemption is a switch away from a client that still has steps left.
    """
    steps = [t for t, n in enumerate(lengths) for _ in range(n)]
    out = set()
    for schedule in set(itertools.permutations(steps)):
        left = list(lengths)
        preemptions = 0
        for prev, nxt in itertools.pairwise(schedule):
            left[prev] -= 1
            if nxt != prev and left[prev] > 0:
                preemptions += 1
        if bound is None or preemptions <= bound:
            out.add(schedule)
    return out


@pytest.mark.parametrize(
    "lengths,bound",
    [
        ([2, 2], 0),
        ([2, 2], 1),
        ([3, 2], 2),
        ([2, 2, 2], 0),
        ([2, 2, 2], 1),
        ([2, 1, 2], 2),
        ([2, 2, 1], 3),
        ([3, 3], None),
        ([2, 2, 2], None),
    ],
)
def test_exhaustive_runs_each_bounded_schedule_exactly_once(
    lengths: list[int], bound: int | None
) -> None:
    seen: list[tuple[int, ...]] = []
    result = explore_exhaustive(
        _counter_model(lengths),
        preemptions=bound,
        on_run=lambda _, execution: seen.append(execution.schedule),
    )
    assert len(seen) == len(set(seen)) == result.runs
    assert set(seen) == _brute_force(lengths, bound)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_unbounded_two_clients_is_the_binomial(m: int) -> None:
    assert explore_exhaustive(_counter_model([m, m]), preemptions=None).runs == math.comb(2 * m, m)


def test_a_lock_order_inversion_deadlocks() -> None:
    def first(a: str, b: str):  # type: ignore[no-untyped-def]
        def program() -> Program:
            yield Acquire(a)
            yield Acquire(b)
            yield Release(b)
            yield Release(a)

        return program

    model = Model("abba", "two locks", (first("a", "b"), first("b", "a")), {"used": 0}, limit=0)
    result = explore_exhaustive(model, preemptions=1)
    assert set(result.failures) == {"deadlock"}
    small = result.minimised["deadlock"]
    # Each takes its first lock, then both wait for the other's.
    assert [e.step.kind for e in small.trace] == ["lock", "lock"]
    assert {e.thread for e in small.trace} == {0, 1}
    assert "c0, c1 wait forever" in str(small.violation)


# -- the tracker models ------------------------------------------------------------------------


@pytest.mark.parametrize("clients", [2, 3])
def test_cas_never_over_admits(clients: int) -> None:
    result = explore_exhaustive(cas_model(clients), preemptions=2)
    assert result.ok, result.failures
    # limit 100, estimate 60, actual 40: at least one and at most two clients get in.
    assert set(result.counter_values) <= {40, 80}
    assert result.max_preemptions == 2


@pytest.mark.parametrize("clients", [2, 3])
def test_locked_never_over_admits(clients: int) -> None:
    assert explore_exhaustive(locked_model(clients), preemptions=2).ok
    assert explore_exhaustive(locked_model(clients), preemptions=None).ok


def test_cas_three_clients_with_unbounded_preemptions_is_clean() -> None:
    assert explore_exhaustive(cas_model(3), preemptions=None).ok


def test_cas_two_clients_two_requests_each_unbounded_is_clean() -> None:
    assert explore_exhaustive(cas_model(2, requests=2), preemptions=None).ok


@pytest.mark.parametrize("clients", [2, 3])
def test_check_then_act_over_admits_with_the_two_client_interleaving(clients: int) -> None:
    model = check_then_act_model(clients)
    result = explore_exhaustive(model, preemptions=2)
    assert "over-admitted" in result.failures
    small = result.minimised["over-admitted"]
    # Both load 0, both pass the check (0 + 60 <= 100), both store: 120 admitted of 100.
    kinds = [(e.thread, e.step.kind, e.result) for e in small.trace]
    assert [k for _, k, _ in kinds] == ["load", "load", "store", "store"]
    first, second = kinds[0][0], kinds[1][0]
    assert first != second
    assert {kinds[2][0], kinds[3][0]} == {first, second}
    assert kinds[0][2] == kinds[1][2] == 0
    assert [event.describe() for e in small.trace for event in e.events] == [
        "reserve(60) admitted",
        "reserve(60) admitted",
    ]
    assert "120 > limit 100" in str(small.violation)


def test_check_then_act_settle_loses_updates() -> None:
    result = explore_exhaustive(check_then_act_model(2), preemptions=2)
    drift = result.minimised["drift"]
    assert drift.complete
    # Two admissions settled at 40 each, but the counter kept only one of them.
    assert drift.memory["used"] == 40
    assert "account for 80" in str(drift.violation)


def test_double_settle_wraps_the_counter() -> None:
    model = double_settle_model(1)  # one stream (estimate 60, usage 10) and the canceller
    result = explore_exhaustive(model, preemptions=2)
    assert set(result.failures) == {"wrap"}
    small = result.minimised["wrap"]
    # reserve 60 -> settle(60, 10) -> cancel -> settle(60, 10) again: 10 - 50 wraps.
    assert small.memory["used"] == (10 - 50) % 2**64 == 2**64 - 40
    steps = [(model.thread_name(e.thread), e.step.kind) for e in small.trace]
    assert steps[-3:] == [("cancel", "store"), ("c0", "load"), ("c0", "fetch_sub")]
    assert steps.count(("c0", "fetch_sub")) == 2
    assert "2**64 - 40" in render_trace(model, small)


def test_double_settle_needs_the_cancel_between_completed_and_eof() -> None:
    model = double_settle_model(1)
    # The canceller first: the stream is cancelled mid-way and settles once.
    assert replay(model, "1").ok
    # The canceller last: the stream reaches EOF; nothing wrong.
    assert replay(model, "0*5,1").ok


def test_double_settle_lets_a_cas_tracker_over_admit() -> None:
    result = explore_exhaustive(double_settle_model(3), preemptions=2)
    assert {"wrap", "over-admitted"} <= set(result.failures)


# -- replay ------------------------------------------------------------------------------------


def _same(a: Execution, b: Execution) -> None:
    assert a.schedule == b.schedule
    assert a.trace == b.trace
    assert a.violation == b.violation
    assert a.memory == b.memory


@pytest.mark.parametrize("name", sorted(MODELS))
def test_replaying_a_printed_schedule_reproduces_the_run(name: str) -> None:
    model = MODELS[name](3)
    result = explore_random(model, runs=20, seed=3)
    runs = [result.last, *result.failures.values(), *result.minimised.values()]
    for execution in runs:
        assert execution is not None
        _same(replay(model, parse_schedule(execution.schedule_string)), execution)
        _same(replay(model, execution.schedule_string), execution)


def test_an_empty_schedule_is_the_non_preemptive_run() -> None:
    run = replay(cas_model(2), "")
    # c0: load 0, cas 0 -> 60, fetch_sub 20 (settled at 40); then c1 likewise (40 + 60 <= 100).
    assert run.schedule == (0, 0, 0, 1, 1, 1)
    assert run.ok and run.complete and run.memory["used"] == 80


def test_replay_names_a_client_that_cannot_run() -> None:
    model = cas_model(2)
    with pytest.raises(InvalidValueError, match=r"step 4 runs client 0, which cannot run"):
        replay(model, "0*4")  # c0 has three steps
    with pytest.raises(InvalidValueError, match=r"clients 0\.\.1"):
        replay(model, "0,7")
    with pytest.raises(InvalidValueError, match=r"entry 2 \('x'\)"):
        replay(model, "0,x")


@given(st.lists(st.integers(min_value=0, max_value=12), max_size=40))
def test_schedule_strings_round_trip(schedule: list[int]) -> None:
    text = format_schedule(schedule)
    assert parse_schedule(text) == schedule
    assert " " not in text


def test_minimise_refuses_a_passing_run() -> None:
    with pytest.raises(InvalidValueError, match="not a failing run"):
        minimise(cas_model(2), replay(cas_model(2), ""))


# -- random and PCT ----------------------------------------------------------------------------


def test_random_is_deterministic_per_seed() -> None:
    def schedules(seed: int) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        explore_random(cas_model(4), runs=30, seed=seed, on_run=lambda _, e: out.append(e.schedule))
        return out

    assert schedules(5) == schedules(5)
    assert schedules(5) != schedules(6)


def test_pct_finds_the_check_then_act_race() -> None:
    # The race has depth 2 (one client's load must fall between another's load and store).
    # PCT finds a depth-2 bug in one run with probability >= 1/(n*k) (n = 6 clients, k ~ 20
    # steps), so 300 runs miss it with probability < (1 - 1/120)**300 < 0.09; seed 1 is fixed.
    result = explore_pct(check_then_act_model(6), runs=300, seed=1, depth=2)
    assert "over-admitted" in result.failures
    assert len(result.minimised["over-admitted"].schedule) == 4


@given(
    clients=st.integers(min_value=2, max_value=6),
    limit=st.integers(min_value=0, max_value=300),
    estimates=st.lists(st.integers(min_value=0, max_value=150), min_size=6, max_size=6),
    ratios=st.lists(st.integers(min_value=0, max_value=10), min_size=6, max_size=6),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_random_schedules_of_the_locked_model_never_over_admit(
    clients: int, limit: int, estimates: list[int], ratios: list[int], seed: int
) -> None:
    ests = estimates[:clients]
    actuals = [e * r // 10 for e, r in zip(ests, ratios, strict=False)]  # actual <= estimate
    model = locked_model(clients, limit=limit, estimate=ests, actual=actuals, requests=2)
    result = explore_random(model, runs=5, seed=seed, minimise_failure=False)
    assert result.ok, result.failures


@given(
    limit=st.integers(min_value=0, max_value=200),
    estimates=st.lists(st.integers(min_value=0, max_value=120), min_size=3, max_size=3),
    actuals=st.lists(st.integers(min_value=0, max_value=160), min_size=3, max_size=3),
)
def test_cas_model_meets_the_overshoot_bound_exhaustively(
    limit: int, estimates: list[int], actuals: list[int]
) -> None:
    # Actuals may exceed estimates: then only I3 (used <= limit + underestimated) must hold.
    model = cas_model(3, limit=limit, estimate=estimates, actual=actuals)
    assert explore_exhaustive(model, preemptions=1, minimise_failure=False).ok


# -- models from users -------------------------------------------------------------------------


def test_load_model_by_name_and_by_import_path() -> None:
    assert load_model("cas", 2, limit=None).limit == 100
    user = load_model("omnillm_sim.verify.tracker_models:locked_model", 3, limit=7)
    assert user.name == "locked" and user.clients == 3 and user.limit == 7
    with pytest.raises(InvalidValueError, match="must be one of"):
        load_model("cass", 2)
    with pytest.raises(InvalidValueError, match="cannot be loaded"):
        load_model("no_such_module_xyz:f", 2)
    with pytest.raises(InvalidValueError, match="not a Model"):
        load_model("builtins:str", 2)


def test_final_counter_values_are_counted_over_complete_runs() -> None:
    result = explore_exhaustive(cas_model(2), preemptions=None)
    assert sum(result.counter_values.values()) == result.runs
    assert Counter(result.counter_values).keys() <= {40, 80}
