"""Writing report folders atomically: an interrupted run never leaves a half-written file.

Every file of a report is first written into a hidden staging folder inside the destination
(``reports/steady/.partial-XXXX/``); only when all of them are complete are they moved into
place, each with ``os.replace`` (atomic on POSIX and Windows). If anything fails before that —
an error, or Ctrl-C while the charts render — the staging folder is deleted and the previous
report stays as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

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

__all__ = ["ReportDir", "atomic_write", "write_compare_report", "write_run_report"]


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


class ReportDir:
    """A report folder being written: stage files, then `commit` moves them all into place."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._staging: Path | None = None
        self.names: list[str] = []

    def __enter__(self) -> ReportDir:
        self.out.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.out))
        return self

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
        """Move every staged file into the report folder; returns the final paths."""
        assert self._staging is not None
        final = []
        for name in self.names:
            target = self.out / name
            os.replace(self._staging / name, target)
            final.append(target)
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging = None
        return final

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


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
