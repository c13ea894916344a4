"""Writing report folders atomically: an interrupted run never leaves a half-written report.

Every file of a report is first written into a hidden staging folder next to the destination
(``reports/.steady.partial-XXXX/``). `ReportDir.commit` then puts the whole folder in place in
one atomic step: a rename when ``reports/steady`` does not exist yet, otherwise an atomic
exchange of the two folders (Linux ``renameat2(RENAME_EXCHANGE)``), after which entries of the
old folder that the new report does not replace (another report's sub-folder, say) are moved
across and the old folder is deleted. So a reader, a crash or Ctrl-C sees the old report or
the new one, never a new ``summary.json`` beside an old ``summary.md``. Only folders this
module created are exchanged (they hold the empty file `MARKER`); a folder the user made, such
as ``--out .``, keeps its identity.

Where no exchange exists or is allowed (other systems, some file systems, a destination whose
parent is not writable, a folder without the marker), the files are moved one by one with
``os.replace`` while SIGINT and SIGTERM are held back, so an interruption still cannot fall
between two of them. If anything fails before the commit (an error, or Ctrl-C while the charts
render) the staging folder is deleted and the previous report stays as it was.

`check_out_dir` tells before a run whether a report could be written at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from omnillm_sim.errors import ConfigError
from omnillm_sim.report.summary import (
    compare_dict,
    compare_markdown,
    run_dict,
    run_markdown,
    to_json_bytes,
)
from omnillm_sim.sim.importers import ObservedTotals
from omnillm_sim.sim.metrics import RunResult
from omnillm_sim.sim.stats import metric_intervals, paired_intervals, steady_mean_latency

__all__ = [
    "MARKER",
    "ReportDir",
    "atomic_write",
    "check_out_dir",
    "write_compare_report",
    "write_run_report",
]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_out_dir(out: Path, *, option: str = "--out") -> None:
    """Refuse, before any simulation, an output folder that could not be written.

    Raises:
        ConfigError: ``out`` (or a folder above it) is a file or a dangling symlink, or the
            folder that would hold it is not writable.
    """
    out = Path(out)

    def refuse(rule: str) -> ConfigError:
        return ConfigError(option, str(out), rule)

    probe = Path(os.path.abspath(out))
    while True:
        if probe.is_symlink() and not probe.exists():
            raise refuse(f"is a dangling symlink ({probe} -> {os.readlink(probe)})"
                         if probe == Path(os.path.abspath(out)) else
                         f"lies under a dangling symlink ({probe})")
        if probe.exists():
            break
        probe = probe.parent
    if not probe.is_dir():
        raise refuse("is a file, not a folder" if probe == Path(os.path.abspath(out))
                     else f"lies under a file ({probe}), not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise refuse(f"cannot be written: {probe} is not writable")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM while a commit moves files; deliver them afterwards.

    Python runs signal handlers in the main thread only, so swapping the handlers there is
    enough (a mask would cover one thread, and the process may have others).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # KeyboardInterrupt is never raised in another thread
        return
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        caught.append(signum)

    wanted = [signal.SIGINT, signal.SIGTERM]
    previous = {signum: signal.signal(signum, hold) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)


MARKER = ".omnillm-sim-report"
"""Empty file in every report folder this module created: only those are ever exchanged."""


def _holds_cwd(folder: Path) -> bool:
    cwd = Path.cwd().resolve()
    resolved = folder.resolve()
    return resolved == cwd or resolved in cwd.parents


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap folders ``a`` and ``b``; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # pragma: no cover - glibc before 2.28, musl
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


class ReportDir:
    """A report folder being written: stage files, then `commit` puts them all in place at once."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._staging: Path | None = None
        self._inside = False  # staging inside the destination (its parent is not writable)
        self._made = False  # ... and that destination was created for this report
        self.names: list[str] = []

    def __enter__(self) -> ReportDir:
        check_out_dir(self.out, option="output folder")
        target = self._target()
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging = tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent)
        except PermissionError:
            self._made = not target.exists()
            target.mkdir(exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".partial-", dir=target)
            self._inside = True
        self._staging = Path(staging)
        return self

    def _target(self) -> Path:
        # A symlinked report folder stays a symlink: the real folder is what gets replaced.
        return self.out.resolve() if self.out.is_symlink() else Path(os.path.abspath(self.out))

    def path(self, name: str) -> Path:
        """Where to write ``name`` while staging."""
        assert self._staging is not None, "use ReportDir as a context manager"
        if name not in self.names:
            self.names.append(name)
        return self._staging / name

    def write_bytes(self, name: str, data: bytes) -> None:
        """Stage a file's bytes."""
        self.path(name).write_bytes(data)

    def commit(self) -> list[Path]:
        """Put every staged file in place in one step; returns the final paths."""
        staging = self._staging
        assert staging is not None
        target = self._target()
        with _signals_held():
            if self._inside or not self._swap(staging, target):
                for name in self.names:
                    os.replace(staging / name, target / name)
                shutil.rmtree(staging, ignore_errors=True)
            self._staging = None
        return [self.out / name for name in self.names]

    def _swap(self, staging: Path, target: Path) -> bool:
        """Rename or exchange the staged folder into ``target``; False if it must not be.

        Only a folder this module created (it holds `MARKER`) is ever exchanged, and never the
        working directory or one above it: ``--out .`` or ``--out ~`` keep their folder.
        """
        (staging / MARKER).touch()
        exists = os.path.lexists(target)
        if exists and (not (target / MARKER).is_file() or _holds_cwd(target)):
            return False
        mask = os.umask(0)
        os.umask(mask)
        mode = target.stat().st_mode & 0o7777 if exists else 0o777 & ~mask
        os.chmod(staging, mode)
        if not exists:
            try:
                os.rename(staging, target)  # atomic
                return True
            except OSError as exc:  # created meanwhile by someone else: leave it be
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
        if not _exchange(staging, target):
            return False
        # ``staging`` now holds the old report: keep what the new one does not replace.
        for entry in os.listdir(staging):
            if entry not in self.names and not (target / entry).exists():
                os.rename(staging / entry, target / entry)
        shutil.rmtree(staging, ignore_errors=True)
        return True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._made:
            with contextlib.suppress(OSError):
                self._target().rmdir()  # only if we made it and it stayed empty


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _draw(report: ReportDir, name: str, draw: Callable[[Path], None], names: list[str]) -> None:
    draw(report.path(name))
    names.append(name)


def write_run_report(
    result: RunResult, out: Path, *, charts: bool = True, observed: ObservedTotals | None = None,
    replicas: Sequence[RunResult] = (), confidence: float = 0.95,
) -> list[Path]:
    """Write ``summary.json``, ``summary.md`` and (unless ``charts=False``) the PNG charts;
    ``observed``: a replayed log's own totals, shown "as it happened" beside the run;
    ``replicas``: the same scenario on more seeds (``result`` first), whose metrics get means
    and confidence intervals (and a ``replications.png`` chart)."""
    runs = [result, *replicas]
    seeds = [r.seed for r in runs]
    intervals = metric_intervals(
        [r.metrics for r in runs], confidence, extra={"mean_latency_after_warmup": [
            steady_mean_latency(r.tally.latencies) for r in runs]}) if replicas else None
    with ReportDir(out) as report:
        chart_names: list[str] = []
        if charts:
            from omnillm_sim.report import plots

            _draw(report, "spend.png", lambda p: plots.plot_spend([result], p), chart_names)
            _draw(report, "rejections.png", lambda p: plots.plot_rejections([result], p),
                  chart_names)
            _draw(report, "latency_cdf.png",
                  lambda p: plots.plot_latency_cdf([result], p, observed=observed), chart_names)
            _draw(report, "keys.png", lambda p: plots.plot_keys(result, p), chart_names)
            if intervals is not None:
                _draw(report, "replications.png", lambda p: plots.plot_replications(
                    [(result.policy, [r.metrics for r in runs], intervals)], p,
                    title=result.scenario.name), chart_names)
        report.write_bytes("summary.json", to_json_bytes(
            run_dict(result, observed, replications=intervals, seeds=seeds)))
        report.write_bytes("summary.md", run_markdown(
            result, chart_names, observed, replications=intervals, seeds=seeds).encode())
        return report.commit()


def write_compare_report(
    results: Sequence[RunResult], out: Path, *, charts: bool = True,
    observed: ObservedTotals | None = None,
    replicas: Sequence[Sequence[RunResult]] = (), confidence: float = 0.95,
) -> list[Path]:
    """Write one report comparing runs of the same scenario under different policies (or
    what-ifs); ``observed``: a replayed log's own totals, the "as it happened" column.

    ``replicas[i]``: column i's runs on further seeds (the same seeds for every column, so
    the draws are common): means and intervals per column, and the paired difference of
    each column from the first, with its interval.
    """
    replications = paired = None
    seeds = [results[0].seed]
    if replicas:
        columns = [[r, *more] for r, more in zip(results, replicas, strict=True)]
        seeds = [r.seed for r in columns[0]]
        metrics = [[r.metrics for r in col] for col in columns]
        replications = {col[0].policy: metric_intervals(m, confidence, extra={
            "mean_latency_after_warmup": [steady_mean_latency(r.tally.latencies) for r in col]})
            for col, m in zip(columns, metrics, strict=True)}
        paired = {col[0].policy: paired_intervals(m, metrics[0], confidence)
                  for col, m in zip(columns[1:], metrics[1:], strict=True)}
    with ReportDir(out) as report:
        chart_names: list[str] = []
        if charts:
            from omnillm_sim.report import plots

            _draw(report, "spend.png", lambda p: plots.plot_spend(results, p), chart_names)
            _draw(report, "rejections.png", lambda p: plots.plot_rejections(results, p),
                  chart_names)
            _draw(report, "latency_cdf.png",
                  lambda p: plots.plot_latency_cdf(results, p, observed=observed), chart_names)
            for r in results:
                _draw(report, f"keys-{_safe(r.policy)}.png",
                      lambda p, r=r: plots.plot_keys(r, p), chart_names)  # type: ignore[misc]
            if replications is not None:
                _draw(report, "replications.png", lambda p: plots.plot_replications(
                    [(label, [m.metrics for m in col], replications[label])
                     for label, col in zip(replications, columns, strict=True)], p,
                    title=results[0].scenario.name), chart_names)
        report.write_bytes("summary.json", to_json_bytes(compare_dict(
            results, observed, replications=replications, paired=paired, seeds=seeds)))
        report.write_bytes("summary.md", compare_markdown(
            results, chart_names, observed, replications=replications, paired=paired,
            seeds=seeds).encode())
        return report.commit()
