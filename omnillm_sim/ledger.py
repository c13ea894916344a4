"""A budget shared by processes: the tracker's reserve/settle/release contract over SQLite.

`Ledger` keeps one budget in a SQLite file in WAL mode. Every operation is one
``BEGIN IMMEDIATE`` transaction, so processes (pytest-xdist workers) serialise on SQLite's
write lock: the admission check ``used + estimate <= limit`` and the update that follows it
are one atomic step across processes, exactly like `BudgetTracker` under its lock.

Crash safety: a transaction either commits completely or not at all, and with
``synchronous=FULL`` a committed settle survives the process being killed (even the machine
losing power). A process killed while it holds reservations leaves them ``open``: they stay
charged (at their estimate) and visible; `Ledger.open_reservations` lists them and
`Ledger.reclaim` ends them — charged at the estimate (the call may have been billed) or
released (refunded). From the shell::

    omnillm-sim ledger session.db                      # stats and open reservations
    omnillm-sim ledger session.db --reclaim pid:4242   # charge a dead owner's reservations

Every decision is kept in the ``entries`` table (rejections included, with ``used`` at that
moment), so an audit can check each admission against the limit (invariant I5). Counters
follow `BudgetStats` and invariants I1-I5 of DESIGN.md section 4; `Ledger.check` recomputes
I1 from the entries. The ledger never reads a clock.

A ledger is marked with SQLite's application id (`APPLICATION_ID`); ledgers made before that
are recognised by their tables. Any other file (another program's database, a text file) is
refused before anything is written to it, so opening the wrong path never converts a foreign
database to WAL mode.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from omnillm_sim.budget import BudgetStats
from omnillm_sim.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidValueError,
    InvariantViolation,
    OmniLLMError,
    ReservationStateError,
)
from omnillm_sim.money import MicroDollar

__all__ = ["APPLICATION_ID", "Ledger", "LedgerEntry", "LedgerReservation"]

APPLICATION_ID = 0x4F4C4C4D
"""SQLite ``PRAGMA application_id`` of a ledger file ("OLLM")."""
_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = {"meta", "totals", "entries"}

EntryState = Literal["open", "settled", "released", "rejected"]
_SCHEMA_VERSION = 1
_COUNTERS = (
    "used",
    "spent",
    "open_reserved",
    "open_count",
    "peak_used",
    "overshoot",
    "admitted",
    "rejected",
    "settled",
    "released",
    "underestimated",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _COUNTERS)}
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    label TEXT NOT NULL,
    estimate INTEGER NOT NULL CHECK (estimate >= 0),
    used_before INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'settled', 'released', 'rejected')),
    actual INTEGER CHECK (actual IS NULL OR actual >= 0)
);
CREATE INDEX IF NOT EXISTS entries_open ON entries (owner) WHERE state = 'open';
"""


def _identify(path: str) -> None:
    """Refuse, before SQLite opens it for writing, a file that is not one of our ledgers.

    Reads the header's application id; a ledger from before the id existed is recognised by
    its tables (read through a read-only connection). A missing or empty file is a new ledger.

    Raises:
        ConfigError: not SQLite, another application's id, or other tables.
    """
    if path == ":memory:" or path.startswith("file:") or not os.path.exists(path):
        return
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise ConfigError("ledger", path, f"cannot be read: {exc.strerror or exc}") from None
    if not header:
        return
    if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
        raise ConfigError("ledger", path, "is not an omnillm-sim ledger (not a SQLite database); "
                          "refusing to touch it")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id == APPLICATION_ID:
        return
    if app_id != 0:
        raise ConfigError("ledger", path, f"is not an omnillm-sim ledger (SQLite application id "
                          f"{app_id:#x}); refusing to touch it")
    try:
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        db = sqlite3.connect(uri, uri=True)
        try:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError("ledger", path, f"is not a readable SQLite database ({exc})") from None
    if tables and not tables >= _TABLES:
        shown = ", ".join(sorted(tables)[:5])
        raise ConfigError("ledger", path, f"is not an omnillm-sim ledger (its tables are {shown}"
                          "); refusing to touch it")


def _amount(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise InvalidValueError(name, value, "must be an int of micro-dollars >= 0")
    return value


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of the ledger: a reservation (open or ended) or a rejected request.

    ``used_before`` is the ledger's ``used`` when the decision was taken; ``actual`` is the
    settled cost (0 after release, ``None`` while open or for a rejection).
    """

    id: int
    owner: str
    label: str
    estimate: MicroDollar
    used_before: MicroDollar
    state: EntryState
    actual: MicroDollar | None


class LedgerReservation:
    """A handle on an open ledger entry; it ends exactly once, like `Reservation`."""

    __slots__ = ("_ledger", "estimate", "id", "label")

    def __init__(self, ledger: Ledger, rid: int, estimate: MicroDollar, label: str) -> None:
        self._ledger = ledger
        self.id = rid
        self.estimate = estimate
        self.label = label

    def settle(self, actual: MicroDollar) -> None:
        """Replace the estimate by the real cost.

        Raises:
            InvalidValueError: ``actual`` is not an int >= 0.
            ReservationStateError: the reservation already ended (here or by `Ledger.reclaim`).
        """
        _amount("actual", actual)
        self._ledger._end(self.id, actual, released=False)

    def release(self) -> None:
        """Refund the whole estimate.

        Raises:
            ReservationStateError: the reservation already ended.
        """
        self._ledger._end(self.id, 0, released=True)

    def __repr__(self) -> str:
        return f"<LedgerReservation #{self.id} {self.label!r} estimate={self.estimate}>"


class Ledger:
    """A budget of micro-dollars in a SQLite file, shared safely by processes and threads.

    ``Ledger(path, limit=...)`` creates the file (or opens it and checks the limit matches);
    ``Ledger(path)`` opens an existing ledger. ``owner`` names this process's reservations
    (default ``"pid:<pid>"``) so a dead process's open ones can be found and reclaimed.
    ``busy_timeout`` is how long (seconds) to wait for another process's transaction.

    Raises:
        ConfigError: the file is not a ledger, has no limit and none was given, or was
            created with a different limit.
        InvalidValueError: a limit that is not an int >= 0.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        limit: MicroDollar | None = None,
        owner: str | None = None,
        name: str = "session budget",
        busy_timeout: float = 60.0,
    ) -> None:
        if limit is not None:
            _amount("limit", limit)
        self.path = str(path)
        self.name = name
        self.owner = owner if owner is not None else f"pid:{os.getpid()}"
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        _identify(self.path)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._limit = self._initialise(limit)
        except sqlite3.DatabaseError as exc:
            raise ConfigError("ledger", self.path, f"is not a usable ledger ({exc})") from None

    def _initialise(self, limit: MicroDollar | None) -> MicroDollar:
        with self._transaction() as db:
            # Not executescript: it would COMMIT our BEGIN IMMEDIATE.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'limit'").fetchone()
            if row is None:
                if limit is None:
                    raise ConfigError("ledger", self.path, "has no limit; pass limit= to create")
                db.execute(
                    "INSERT INTO meta VALUES ('limit', ?), ('version', ?)", (limit, _SCHEMA_VERSION)
                )
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute("INSERT INTO totals (id) VALUES (1)")
                return limit
            stored = row[0]
            if type(stored) is not int or stored < 0:
                raise ConfigError("limit", stored, "must be an int of micro-dollars >= 0 (the "
                                  "ledger file was changed outside omnillm-sim?)",
                                  source=self.path)
            if limit is not None and limit != stored:
                raise ConfigError(
                    "limit", limit, f"differs from the ledger's limit {stored}", source=self.path
                )
            return stored

    # -- transactions ------------------------------------------------------------------------

    class _Tx:
        def __init__(self, ledger: Ledger) -> None:
            self._ledger = ledger

        def __enter__(self) -> sqlite3.Connection:
            ledger = self._ledger
            ledger._lock.acquire()
            try:
                ledger._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                ledger._lock.release()
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raise OmniLLMError(
                    f"{ledger.path}: the ledger's lock was held by another process for more "
                    f"than {ledger.busy_timeout:g} s ({exc}); is a process stuck in a "
                    "transaction on this file?"
                ) from None
            except BaseException:
                ledger._lock.release()
                raise
            return ledger._db

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            try:
                self._ledger._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self._ledger._lock.release()

    def _transaction(self) -> Ledger._Tx:
        return Ledger._Tx(self)

    def _totals(self, db: sqlite3.Connection) -> dict[str, int]:
        row = db.execute(f"SELECT {', '.join(_COUNTERS)} FROM totals WHERE id = 1").fetchone()
        return dict(zip(_COUNTERS, (int(v) for v in row), strict=True))

    def _store(self, db: sqlite3.Connection, totals: dict[str, int]) -> None:
        assignments = ", ".join(f"{c} = ?" for c in _COUNTERS)
        db.execute(f"UPDATE totals SET {assignments} WHERE id = 1", [totals[c] for c in _COUNTERS])

    # -- the contract -------------------------------------------------------------------------

    @property
    def limit(self) -> MicroDollar:
        """The limit in micro-dollars (fixed when the ledger was created)."""
        return self._limit

    def reserve(self, estimated: MicroDollar, *, label: str = "") -> LedgerReservation:
        """Reserve ``estimated`` iff ``used + estimated <= limit``, atomically across processes.

        Raises:
            InvalidValueError: ``estimated`` is not an int >= 0.
            BudgetExceeded: it does not fit; the rejection is recorded in the entries.
        """
        _amount("estimated", estimated)
        with self._transaction() as db:
            t = self._totals(db)
            used = t["used"]
            admitted = used + estimated <= self._limit
            state = "open" if admitted else "rejected"
            cursor = db.execute(
                "INSERT INTO entries (owner, label, estimate, used_before, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.owner, label, estimated, used, state),
            )
            if admitted:
                t["used"] = used + estimated
                t["open_reserved"] += estimated
                t["open_count"] += 1
                t["admitted"] += 1
                t["peak_used"] = max(t["peak_used"], t["used"])
            else:
                t["rejected"] += 1
            self._store(db, t)
        if not admitted:
            raise BudgetExceeded(estimated, max(self._limit - used, 0), self._limit, what=self.name)
        rid = cursor.lastrowid
        assert rid is not None
        return LedgerReservation(self, rid, estimated, label)

    def _end(self, rid: int, actual: MicroDollar, *, released: bool) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT estimate, state FROM entries WHERE id = ?", (rid,)).fetchone()
            if row is None or row[1] != "open":
                state = "missing" if row is None else row[1]
                verb = "release" if released else "settle"
                raise ReservationStateError(
                    f"cannot {verb} ledger reservation #{rid}: it is {state}, not open"
                )
            self._finish(db, rid, int(row[0]), actual, released=released)

    def _finish(
        self, db: sqlite3.Connection, rid: int, est: int, actual: int, *, released: bool
    ) -> None:
        db.execute(
            "UPDATE entries SET state = ?, actual = ? WHERE id = ?",
            ("released" if released else "settled", actual, rid),
        )
        t = self._totals(db)
        t["used"] += actual - est
        t["spent"] += actual
        t["open_reserved"] -= est
        t["open_count"] -= 1
        if released:
            t["released"] += 1
        else:
            t["settled"] += 1
            if actual > est:
                t["underestimated"] += actual - est
                t["peak_used"] = max(t["peak_used"], t["used"])
                t["overshoot"] = max(t["overshoot"], t["used"] - self._limit)
        self._store(db, t)

    # -- inspection and recovery ---------------------------------------------------------------

    def stats(self) -> BudgetStats:
        """A consistent snapshot of the counters (one read transaction)."""
        with self._transaction() as db:
            t = self._totals(db)
        return BudgetStats(limit=self._limit, **t)

    def entries(self, *, state: EntryState | None = None) -> list[LedgerEntry]:
        """Every entry in decision order (optionally only those in ``state``)."""
        query = "SELECT id, owner, label, estimate, used_before, state, actual FROM entries"
        args: tuple[str, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        with self._transaction() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def open_reservations(self, owner: str | None = None) -> list[LedgerEntry]:
        """Open reservations (of ``owner`` only, if given): still charged at their estimate."""
        return [e for e in self.entries(state="open") if owner is None or e.owner == owner]

    def reclaim(
        self,
        *,
        owner: str | None = None,
        ids: Iterable[int] | None = None,
        charge: bool = True,
    ) -> list[LedgerEntry]:
        """End open reservations left by a dead process; returns the entries it ended.

        Selects the open reservations of ``owner`` (or the given ``ids``; with neither, every
        open one). ``charge=True`` settles each at its estimate (the call may have been billed;
        the conservative choice), ``charge=False`` releases it (a full refund).
        Only reclaim owners that are no longer running: a live owner's later settle of a
        reclaimed reservation raises `ReservationStateError`.
        """
        wanted = None if ids is None else set(ids)
        ended: list[LedgerEntry] = []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, owner, label, estimate, used_before, state, actual FROM entries "
                "WHERE state = 'open' ORDER BY id"
            ).fetchall()
            for row in rows:
                entry = LedgerEntry(*row)
                if owner is not None and entry.owner != owner:
                    continue
                if wanted is not None and entry.id not in wanted:
                    continue
                actual = entry.estimate if charge else 0
                self._finish(db, entry.id, entry.estimate, actual, released=not charge)
                ended.append(entry)
        return ended

    def check(self) -> None:
        """Check the file's integrity and invariant I1 recomputed from the entries.

        Raises:
            InvariantViolation: SQLite's integrity check fails, or the counters disagree
                with the entries.
        """
        try:
            with self._transaction() as db:
                status = "; ".join(
                    str(row[0]) for row in db.execute("PRAGMA integrity_check(5)"))
                t = self._totals(db)
                spent, open_reserved, open_count = db.execute(
                    "SELECT COALESCE(SUM(CASE WHEN state IN ('settled', 'released')"
                    " THEN actual END), 0),"
                    " COALESCE(SUM(CASE WHEN state = 'open' THEN estimate END), 0),"
                    " COUNT(CASE WHEN state = 'open' THEN 1 END) FROM entries"
                ).fetchone()
        except sqlite3.DatabaseError as exc:  # a corrupted page stops the queries themselves
            raise InvariantViolation("integrity", f"{self.path}: {exc}") from None
        if status != "ok":
            raise InvariantViolation("integrity", f"{self.path}: {status}")
        if (t["spent"], t["open_reserved"], t["open_count"]) != (spent, open_reserved, open_count):
            raise InvariantViolation(
                "I1",
                f"{self.path}: counters spent={t['spent']} open={t['open_reserved']}"
                f"/{t['open_count']} but entries say {spent} open={open_reserved}/{open_count}",
            )
        if t["used"] != t["spent"] + t["open_reserved"]:
            raise InvariantViolation(
                "I1", f"used={t['used']} != spent={t['spent']} + open={t['open_reserved']}"
            )

    def close(self) -> None:
        """Close the connection (reservations stay as they are in the file)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.path!r} limit={self._limit} owner={self.owner!r}>"
