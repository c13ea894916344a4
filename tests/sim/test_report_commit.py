"""The report commit is one step: old report or new report, never a mix of the two."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from omnillm_sim.errors import ConfigError
from omnillm_sim.report import writer
from omnillm_sim.report.writer import ReportDir, check_out_dir


def _write(out: Path, tag: str, names: tuple[str, ...] = ("summary.json", "summary.md")) -> None:
    with ReportDir(out) as report:
        for name in names:
            report.write_bytes(name, f"{tag} {name}".encode())
        report.commit()


def _contents(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in out.iterdir()
            if p.is_file() and p.name != writer.MARKER}


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "file-by-file"])
def test_ctrl_c_during_the_commit_waits_until_the_whole_report_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    out = tmp_path / "r"
    _write(out, "old")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # xdist ignores it
    if not exchange:
        monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    real_rename, real_replace = os.rename, os.replace

    def ctrl_c_first(real):  # type: ignore[no-untyped-def]
        def move(a, b):  # type: ignore[no-untyped-def]
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C mid-commit
            return real(a, b)
        return move

    monkeypatch.setattr(os, "rename", ctrl_c_first(real_rename))
    monkeypatch.setattr(os, "replace", ctrl_c_first(real_replace))
    if exchange:
        monkeypatch.setattr(writer, "_exchange", ctrl_c_first(writer._exchange))
    try:
        with pytest.raises(KeyboardInterrupt):
            _write(out, "new")
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGINT, previous)
    assert _contents(out) == {"summary.json": "new summary.json", "summary.md": "new summary.md"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging folder left


def test_commit_keeps_what_the_new_report_does_not_replace(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _write(out, "old", ("summary.json", "summary.md", "keys.png"))
    _write(out / "plan", "plan", ("plan.md",))
    _write(out, "new")
    assert _contents(out) == {"summary.json": "new summary.json", "summary.md": "new summary.md",
                              "keys.png": "old keys.png"}
    assert _contents(out / "plan") == {"plan.md": "plan plan.md"}


def test_a_folder_the_user_made_keeps_its_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    monkeypatch.chdir(home)
    inode = home.stat().st_ino
    _write(Path("."), "first")
    _write(Path("."), "second")
    assert home.stat().st_ino == inode  # not swapped: the shell's cwd stays valid
    assert _contents(home) == {"notes.txt": "mine", "summary.json": "second summary.json",
                               "summary.md": "second summary.md"}
    assert not (home / writer.MARKER).exists()


def test_a_report_folder_is_swapped_whole(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _write(out, "old")
    inode = out.stat().st_ino
    _write(out, "new")
    assert out.stat().st_ino != inode  # one exchange, not file-by-file
    assert _contents(out) == {"summary.json": "new summary.json", "summary.md": "new summary.md"}


def test_a_symlinked_report_folder_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    _write(real, "old")
    (tmp_path / "link").symlink_to(real)
    _write(tmp_path / "link", "new")
    assert (tmp_path / "link").is_symlink()
    assert _contents(real)["summary.md"] == "new summary.md"


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: (p.parent / "f").write_text("x"), "lies under a file"),
    (lambda p: p.symlink_to(p.parent / "nowhere"), "dangling symlink"),
])
def test_unusable_output_folders_are_refused_before_any_work(
    tmp_path: Path, make, words: str  # type: ignore[no-untyped-def]
) -> None:
    target = tmp_path / "out"
    make(target)
    out = tmp_path / "f" / "deeper" if words == "lies under a file" else target
    with pytest.raises(ConfigError, match=words):
        check_out_dir(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_parent_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_out_dir(locked / "out")
    finally:
        locked.chmod(0o700)
