"""The ledger against its peer, the in-memory `BudgetTracker` (same contract, same counters),
and its `check` shown to fail on a broken file (issue 13)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnillm_sim.budget import BudgetTracker, Reservation
from omnillm_sim.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidValueError,
    InvariantViolation,
    ReservationStateError,
)
from omnillm_sim.ledger import Ledger, LedgerEntry, LedgerReservation

ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release"]),
        st.integers(min_value=0, max_value=60),
        st.integers(min_value=0, max_value=90),
    ),
    max_size=25,
)


@settings(max_examples=25)
@given(limit=st.integers(min_value=0, max_value=150), steps=ops)
def test_ledger_counts_exactly_like_the_tracker(
    limit: int, steps: list[tuple[str, int, int]]
) -> None:
    tracker = BudgetTracker.from_micros(limit)
    with tempfile.TemporaryDirectory() as tmp, Ledger(Path(tmp) / "l.db", limit=limit) as ledger:
        pairs: list[tuple[Reservation, LedgerReservation]] = []
        expected: list[tuple[str, int, int, int | None]] = []  # state, estimate, used, actual
        for op, amount, actual in steps:
            if op == "reserve":
                used = tracker.used
                try:
                    r = tracker.reserve(amount)
                except BudgetExceeded as exc:
                    with pytest.raises(BudgetExceeded) as info:
                        ledger.reserve(amount)
                    assert (info.value.requested, info.value.available) == (
                        exc.requested,
                        exc.available,
                    )
                    expected.append(("rejected", amount, used, None))
                else:
                    lr = ledger.reserve(amount, label=f"r{len(expected)}")
                    assert lr.estimate == amount
                    pairs.append((r, lr))
                    expected.append(("open", amount, used, None))
            elif pairs:
                r, lr = pairs.pop(amount % len(pairs))
                index = lr.id - 1
                if op == "settle":
                    r.settle(actual)
                    lr.settle(actual)
                    expected[index] = ("settled", *expected[index][1:3], actual)
                else:
                    r.release()
                    lr.release()
                    expected[index] = ("released", *expected[index][1:3], 0)
            assert asdict(ledger.stats()) == asdict(tracker.stats())
        entries = ledger.entries()
        assert [(e.state, e.estimate, e.used_before, e.actual) for e in entries] == expected
        assert [e.id for e in entries] == list(range(1, len(expected) + 1))
        ledger.check()


def test_entries_by_state_and_open_reservations_by_owner(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, limit=100, owner="a") as a, Ledger(path, owner="b") as b:
        ra = a.reserve(10, label="first")
        b.reserve(20)
        with pytest.raises(BudgetExceeded):
            a.reserve(71)
        ra.settle(5)
        assert [e.label for e in a.entries(state="settled")] == ["first"]
        assert [e.owner for e in a.entries(state="rejected")] == ["a"]
        assert [e.estimate for e in a.open_reservations()] == [20]
        assert [e.owner for e in a.open_reservations("b")] == ["b"]
        assert a.open_reservations("a") == []
        assert a.entries(state="rejected")[0].used_before == 30


def test_reclaim_by_owner_by_id_charging_or_releasing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, limit=1_000, owner="dead") as dead, Ledger(path, owner="live") as live:
        d1, d2, d3 = dead.reserve(10), dead.reserve(20), dead.reserve(40)
        keep = live.reserve(30)
        ended = live.reclaim(owner="dead", ids=[d2.id])
        assert [(e.id, e.state) for e in ended] == [(d2.id, "open")]  # as found
        assert live.stats().settled == 1 and live.stats().spent == 20  # charged the estimate
        released = live.reclaim(owner="dead", charge=False)
        assert [e.id for e in released] == [d1.id, d3.id]
        s = live.stats()
        assert (s.released, s.spent, s.used, s.open_count) == (2, 20, 50, 1)
        with pytest.raises(ReservationStateError, match=r"it is released, not open$"):
            d1.settle(10)
        assert [e.id for e in live.reclaim()] == [keep.id]  # neither: every open one
        assert live.stats().open_count == 0
        live.check()


def test_ending_twice_or_a_missing_entry_is_refused(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", limit=100) as ledger:
        r = ledger.reserve(10)
        r.settle(10)
        with pytest.raises(ReservationStateError, match=r"cannot settle ledger .* is settled"):
            r.settle(1)
        with pytest.raises(ReservationStateError, match=r"cannot release ledger .* is settled"):
            r.release()
        ghost = LedgerReservation(ledger, 99, 5, "ghost")
        with pytest.raises(ReservationStateError, match=r"#99: it is missing, not open$"):
            ghost.release()
        with pytest.raises(InvalidValueError, match=r"^actual\(=-1\)"):
            ledger.reserve(1).settle(-1)
        assert ledger.stats().settled == 1


def test_overshoot_and_peak_after_an_underestimate(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", limit=100) as ledger:
        a, b = ledger.reserve(60), ledger.reserve(40)
        a.settle(90)
        b.settle(0)
        s = ledger.stats()
        assert (s.used, s.peak_used, s.overshoot, s.underestimated, s.remaining) == (
            90, 130, 30, 30, 10,
        )  # fmt: skip


def test_opening_checks_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with pytest.raises(ConfigError, match=r"has no limit; pass limit= to create"):
        Ledger(path)
    with Ledger(path, limit=500, owner=None) as ledger:
        assert ledger.limit == 500
        assert ledger.owner == f"pid:{os.getpid()}"
    with Ledger(path) as again:
        assert again.limit == 500
    with Ledger(path, limit=500):
        pass
    with pytest.raises(ConfigError, match=r"differs from the ledger's limit 500"):
        Ledger(path, limit=501)
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidValueError, match=r"^limit\("):
            Ledger(tmp_path / "other.db", limit=bad)  # type: ignore[arg-type]
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, it is text" * 100)
    with pytest.raises(ConfigError, match=r"is not a usable ledger"):
        Ledger(junk, limit=1)


def test_entry_records_are_plain_data(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", limit=10, owner="me") as ledger:
        ledger.reserve(3, label="x").release()
        assert ledger.entries() == [LedgerEntry(1, "me", "x", 3, 0, "released", 0)]


# -- check() fails on broken files -------------------------------------------------------------


def _tamper(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "l.db"
    with Ledger(path, limit=1_000) as ledger:
        ledger.reserve(100).settle(70)
        ledger.reserve(50)
        ledger.check()
    return path


def test_check_catches_used_that_disagrees_with_spent_plus_open(ledger_file: Path) -> None:
    _tamper(ledger_file, "UPDATE totals SET used = used + 1")
    with Ledger(ledger_file) as ledger, pytest.raises(InvariantViolation) as info:
        ledger.check()
    assert info.value.invariant == "I1"
    assert info.value.detail == "used=121 != spent=70 + open=50"


@pytest.mark.parametrize(
    ("sql", "figures"),
    [
        ("UPDATE totals SET spent = 69, used = 119", ("69", "50/1", "70", "50/1")),
        ("UPDATE entries SET actual = 71 WHERE state = 'settled'", ("70", "50/1", "71", "50/1")),
        ("UPDATE entries SET estimate = 51 WHERE state = 'open'", ("70", "50/1", "70", "51/1")),
        ("UPDATE totals SET open_count = 2", ("70", "50/2", "70", "50/1")),
    ],
)
def test_check_catches_counters_that_disagree_with_the_entries(
    ledger_file: Path, sql: str, figures: tuple[str, str, str, str]
) -> None:
    spent, open_, entries_spent, entries_open = figures
    detail = (
        f"counters spent={spent} open={open_} but entries say {entries_spent} open={entries_open}"
    )
    _tamper(ledger_file, sql)
    with Ledger(ledger_file) as ledger, pytest.raises(InvariantViolation) as info:
        ledger.check()
    assert info.value.invariant == "I1"
    assert info.value.detail == f"{ledger_file}: {detail}"


# -- the file and the connection ---------------------------------------------------------------


def test_the_file_is_a_version_1_ledger_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger(path, limit=10).close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (1,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_closing_ends_the_connection(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", limit=10) as ledger:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        ledger.stats()
    other = Ledger(tmp_path / "l.db")
    other.close()
    with pytest.raises(sqlite3.ProgrammingError):
        other.reserve(1)


def test_a_ledger_is_usable_from_another_thread(tmp_path: Path) -> None:
    import threading

    with Ledger(tmp_path / "l.db", limit=100) as ledger:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                ledger.reserve(10).settle(7)
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert errors == [] and ledger.stats().spent == 7


def test_a_locked_file_fails_the_operation_and_frees_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, limit=100, busy_timeout=0.0) as ledger:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            ledger.reserve(10)
        other.execute("ROLLBACK")
        other.close()
        ledger.reserve(10)  # the ledger's own lock was released after the failure
        assert ledger.stats().open_count == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, None])
def test_reserve_refuses_bad_estimates_before_touching_the_file(
    tmp_path: Path, bad: object
) -> None:
    with Ledger(tmp_path / "l.db", limit=100) as ledger:
        with pytest.raises(InvalidValueError, match=r"^estimated\(="):
            ledger.reserve(bad)  # type: ignore[arg-type]
        assert ledger.entries() == [] and ledger.stats().rejected == 0


def test_reservation_handles_carry_their_label(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", limit=100) as ledger:
        r = ledger.reserve(5, label="summary")
        assert (r.label, r.estimate, r.id) == ("summary", 5, 1)


def test_reclaim_by_owner_skips_other_owners_anywhere_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, limit=1_000, owner="live") as live, Ledger(path, owner="dead") as dead:
        live.reserve(1)  # the first open entry belongs to someone else
        dead.reserve(2)
        live.reserve(3)
        dead.reserve(4)
        assert [e.estimate for e in live.reclaim(owner="dead")] == [2, 4]
        assert [e.estimate for e in live.open_reservations()] == [1, 3]


def test_entries_are_frozen(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", limit=10) as ledger:
        ledger.reserve(1)
        entry = ledger.entries()[0]
    with pytest.raises(AttributeError):
        entry.state = "settled"  # type: ignore[misc]
