"""The SQLite ledger: the tracker's contract across processes, durability, recovery."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnillm_sim import BudgetExceeded, BudgetTracker, ConfigError, ReservationStateError
from omnillm_sim.errors import InvariantViolation
from omnillm_sim.ledger import APPLICATION_ID, Ledger

ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release"]),
        st.integers(0, 400),
        st.integers(0, 10),
    ),
    max_size=25,
)


@settings(max_examples=40)
@given(limit=st.integers(0, 1_000), steps=ops)
def test_ledger_matches_the_tracker_step_for_step(
    tmp_path_factory: pytest.TempPathFactory, limit: int, steps: list[tuple[str, int, int]]
) -> None:
    # The reference BudgetTracker is the model: same decisions, same counters, every step.
    path = tmp_path_factory.mktemp("ledger") / "l.sqlite"
    ledger = Ledger(path, limit=limit)
    tracker = BudgetTracker.from_micros(limit)
    open_pairs: list[tuple[object, object]] = []
    for op, amount, pick in steps:
        if op == "reserve":
            try:
                ours = tracker.reserve(amount)
            except BudgetExceeded as exc:
                with pytest.raises(BudgetExceeded) as theirs:
                    ledger.reserve(amount)
                assert (theirs.value.requested, theirs.value.available) == (
                    exc.requested,
                    exc.available,
                )
            else:
                open_pairs.append((ours, ledger.reserve(amount)))
        elif open_pairs:
            ours, theirs = open_pairs.pop(pick % len(open_pairs))
            if op == "settle":
                ours.settle(amount)  # type: ignore[attr-defined]
                theirs.settle(amount)  # type: ignore[attr-defined]
            else:
                ours.release()  # type: ignore[attr-defined]
                theirs.release()  # type: ignore[attr-defined]
        assert ledger.stats() == tracker.stats()
    ledger.check()
    ledger.close()


def test_reservation_ends_once_and_rejections_are_logged(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", limit=100, owner="me") as ledger:
        r = ledger.reserve(60, label="a")
        with pytest.raises(BudgetExceeded) as info:
            ledger.reserve(50, label="b")
        assert (info.value.requested, info.value.available, info.value.limit) == (50, 40, 100)
        r.settle(70)
        with pytest.raises(ReservationStateError):
            r.release()
        entries = ledger.entries()
        assert [(e.label, e.state, e.used_before, e.actual) for e in entries] == [
            ("a", "settled", 0, 70),
            ("b", "rejected", 60, None),
        ]
        s = ledger.stats()
        assert (s.used, s.underestimated, s.rejected, s.settled) == (70, 10, 1, 1)


def test_opening_checks_the_limit_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, limit=5).close()
    assert Ledger(path).limit == 5
    with pytest.raises(ConfigError, match="differs from the ledger's limit 5"):
        Ledger(path, limit=6)
    with pytest.raises(ConfigError, match="has no limit"):
        Ledger(tmp_path / "new.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"not an omnillm-sim ledger \(not a SQLite database\)"):
        Ledger(junk, limit=1)


def _sqlite_file(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_a_new_ledger_carries_its_application_id(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, limit=5).close()
    assert int.from_bytes(path.read_bytes()[68:72], "big") == APPLICATION_ID
    assert APPLICATION_ID.to_bytes(4, "big") == b"OLLM"


@pytest.mark.parametrize("app_id", [0, 0x0F055112])
def test_a_foreign_database_is_refused_untouched(tmp_path: Path, app_id: int) -> None:
    path = tmp_path / "app.db"
    _sqlite_file(path, f"PRAGMA application_id = {app_id}",
                 "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
                 "INSERT INTO customers (name) VALUES ('ada')")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="not an omnillm-sim ledger"):
        Ledger(path, limit=100)
    assert path.read_bytes() == before  # still journal_mode=delete: never converted to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_a_ledger_from_before_the_application_id_is_still_recognised(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Ledger(path, limit=7) as ledger:
        ledger.reserve(3).settle(2)
    _sqlite_file(path, "PRAGMA application_id = 0")
    with Ledger(path) as ledger:
        assert (ledger.limit, ledger.stats().spent) == (7, 2)


@pytest.mark.parametrize("stored", ["-5", "'lots'", "2.5"])
def test_a_tampered_limit_is_refused(tmp_path: Path, stored: str) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, limit=5).close()
    _sqlite_file(path, f"UPDATE meta SET value = {stored} WHERE key = 'limit'")
    with pytest.raises(ConfigError, match=r"limit\(=.*\) must be an int of micro-dollars >= 0"):
        Ledger(path)


def test_check_reports_a_corrupted_page_as_an_integrity_violation(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, limit=10**6) as ledger:
        for i in range(40):  # about 10 pages of entries
            ledger.reserve(10, label="x" * 1000 + str(i)).settle(5)
    data = bytearray(path.read_bytes())
    data[3 * 4096: 3 * 4096 + 512] = b"\xa5" * 512  # a page of the entries table
    path.write_bytes(bytes(data))
    with Ledger(path) as ledger, pytest.raises(
        InvariantViolation, match=r"^invariant integrity violated: .*l\.sqlite"
    ):
        ledger.check()


def test_check_finds_counters_that_disagree_with_the_entries(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, limit=100) as ledger:
        ledger.reserve(30).settle(20)
        ledger.check()
    _sqlite_file(path, "UPDATE totals SET spent = 19, used = 19")
    with Ledger(path) as ledger, pytest.raises(
        InvariantViolation, match=r"^invariant I1 violated: .*counters spent=19 .* entries say 20 "
    ):
        ledger.check()
    _sqlite_file(path, "UPDATE totals SET spent = 20, used = 25")
    with Ledger(path) as ledger, pytest.raises(
        InvariantViolation, match=r"^invariant I1 violated: used=25 != spent=20 \+ open=0$"
    ):
        ledger.check()


WORKER = textwrap.dedent(
    """
    import sys
    from omnillm_sim import BudgetExceeded
    from omnillm_sim.ledger import Ledger

    path, owner, estimate, attempts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ledger = Ledger(path, owner=owner)
    held = []
    for i in range(attempts):
        try:
            r = ledger.reserve(estimate, label=f"{owner}-{i}")
        except BudgetExceeded:
            continue
        if i < 2:
            held.append(r)            # two reservations stay open
            print("held", r.id, flush=True)
        else:
            r.settle(estimate - 1)    # committed before the line is printed
            print("settled", r.id, estimate - 1, flush=True)
    print("done", flush=True)
    if len(sys.argv) > 5:
        import time
        time.sleep(60)                # wait to be killed, holding the two reservations
    """
)


def _worker(path: Path, owner: str, estimate: int, attempts: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), owner, str(estimate), str(attempts), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_processes_never_over_admit(tmp_path: Path) -> None:
    # Three processes race for a limit of 1000 with estimates of 7 settled at 6 (two per
    # process held at 7). Whatever the interleaving, every admission saw used + 7 <= 1000.
    path = tmp_path / "l.sqlite"
    Ledger(path, limit=1000).close()
    workers = [_worker(path, f"w{i}", 7, 80) for i in range(3)]
    for w in workers:
        w.wait(timeout=120)
        assert w.returncode == 0
    with Ledger(path) as ledger:
        ledger.check()
        entries = ledger.entries()
        for e in entries:
            admitted = e.state != "rejected"
            assert admitted == (e.used_before + e.estimate <= 1000), e
        s = ledger.stats()
        assert s.used <= 1000 and s.admitted + s.rejected == 240
        assert s.open_count == 6 and s.settled == s.admitted - 6


def test_sigkill_mid_traffic_loses_nothing_and_leaves_open_reservations_visible(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, limit=10_000_000).close()
    victim = _worker(path, "victim", 1000, 1_000_000, "wait")  # runs until killed
    bystander = _worker(path, "bystander", 500, 300)
    assert victim.stdout is not None
    settled: dict[int, int] = {}
    held: list[int] = []
    for line in victim.stdout:
        word, *rest = line.split()
        if word == "held":
            held.append(int(rest[0]))
        elif word == "settled":
            settled[int(rest[0])] = int(rest[1])
        if len(settled) >= 50:
            break  # in the middle of its traffic, while the bystander keeps writing
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    bystander.wait(timeout=120)
    assert victim.returncode == -signal.SIGKILL and bystander.returncode == 0

    # The file is readable by plain sqlite3 too, and passes its integrity check.
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Ledger(path, owner="recovery") as ledger:
        ledger.check()
        rows = {e.id: e for e in ledger.entries()}
        for rid, actual in settled.items():
            assert rows[rid].state == "settled" and rows[rid].actual == actual
        open_ids = sorted(e.id for e in ledger.open_reservations(owner="victim"))
        # The two held ones, plus the one it was between reserve and settle on, if any.
        assert len(held) == 2 and set(held) <= set(open_ids) and len(open_ids) <= 3
        assert not set(open_ids) & set(settled)
        before = ledger.stats()
        reclaimed = ledger.reclaim(owner="victim")  # charged at their estimates
        after = ledger.stats()
        assert [e.id for e in reclaimed] == open_ids
        assert after.open_count == before.open_count - len(open_ids)
        assert after.used == before.used
        assert ledger.open_reservations(owner="victim") == []
        ledger.check()


def test_reclaim_can_refund(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", limit=100, owner="dead") as ledger:
        ledger.reserve(30)
        ledger.reserve(20)
        ended = ledger.reclaim(owner="dead", charge=False)
        assert len(ended) == 2
        s = ledger.stats()
        assert (s.used, s.released, s.open_count) == (0, 2, 0)


def test_cli_shows_and_reclaims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from omnillm_sim.cli import main

    path = tmp_path / "l.sqlite"
    with Ledger(path, limit=1_000_000, owner="gw0:pid:1") as ledger:
        ledger.reserve(1234, label="#1 gpt-4o")
    assert main(["ledger", str(path)]) == 0
    out = capsys.readouterr().out
    assert "limit $1.000000" in out and "used $0.001234" in out
    assert "gw0:pid:1" in out and "#1 gpt-4o" in out and "1 open" in out
    assert main(["ledger", str(path), "--reclaim", "gw0:pid:1", "--release"]) == 0
    assert "released 1 reservation(s)" in capsys.readouterr().out
    with Ledger(path) as ledger:
        assert ledger.stats().used == 0
    assert main(["ledger", str(tmp_path / "missing.sqlite")]) == 2
