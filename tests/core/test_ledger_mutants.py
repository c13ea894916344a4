"""Ledger files that are not (or no longer) what they claim, and limits at zero: cases the
mutation run (`make mutate MODULE=ledger`) found untested (issue 13)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from omnillm_sim.errors import ConfigError
from omnillm_sim.ledger import Ledger


def _sqlite_file(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _garble_after_header(path: Path) -> None:
    """Keep the 100-byte SQLite header, overwrite every page after it."""
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)
    path.write_bytes(bytes(data))


def test_another_applications_database_is_named_by_its_application_id(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _sqlite_file(path, "PRAGMA application_id = 123456", "CREATE TABLE meta (k, v)",
                 "CREATE TABLE totals (id)", "CREATE TABLE entries (id)")  # fmt: skip
    with pytest.raises(ConfigError, match=r"not an omnillm-sim ledger \(SQLite application id "
                       r"0x1e240\); refusing to touch it$"):  # fmt: skip
        Ledger(path, limit=1)


def test_a_folder_is_not_a_ledger(tmp_path: Path) -> None:
    folder = tmp_path / "ledger.sqlite"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"ledger\.sqlite'\) cannot be read: "):
        Ledger(folder, limit=1)


def test_a_damaged_database_without_an_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    _sqlite_file(path, "CREATE TABLE users (name TEXT)")
    _garble_after_header(path)
    with pytest.raises(ConfigError, match=r"is not a readable SQLite database \(.*malformed"):
        Ledger(path, limit=1)


def test_a_damaged_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, limit=5).close()
    _garble_after_header(path)
    with pytest.raises(ConfigError, match=r"is not a usable ledger \(.*malformed"):
        Ledger(path)


def test_a_foreign_database_names_its_first_five_tables(tmp_path: Path) -> None:
    path = tmp_path / "six.db"
    _sqlite_file(path, *(f"CREATE TABLE {name} (x)" for name in "fedcba"))
    with pytest.raises(ConfigError, match=r"\(its tables are a, b, c, d, e\); refusing"):
        Ledger(path, limit=1)


def test_a_ledger_from_before_the_application_id_still_opens(tmp_path: Path) -> None:
    """A ledger whose header has no application id (written before it existed) is known by
    its tables, exactly ours, and opens with its limit."""
    path = tmp_path / "old.sqlite"
    Ledger(path, limit=7).close()
    _sqlite_file(path, "PRAGMA application_id = 0")
    assert path.read_bytes()[68:72] == bytes(4)
    ledger = Ledger(path)
    assert ledger.limit == 7
    ledger.close()


def test_a_zero_limit_is_a_limit(tmp_path: Path) -> None:
    """A budget of $0 is a limit like any other: the file keeps it when reopened."""
    path = tmp_path / "zero.sqlite"
    Ledger(path, limit=0).close()
    ledger = Ledger(path)
    assert ledger.limit == 0
    ledger.close()
