"""PNG charts of runs, sweeps and plans: the only module that imports matplotlib.

matplotlib is imported lazily (inside `_pyplot`) with the non-interactive Agg backend, so the
rest of the package, the CLI's start-up and the tests that do not draw stay fast and work
without a display. Every chart has a title, axis labels with units, and a legend when it shows
more than one series. Each function takes the runs to overlay (one per policy for ``compare``)
and the path to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omnillm_sim.sim.importers import ObservedTotals
from omnillm_sim.sim.metrics import Metrics, RunResult
from omnillm_sim.sim.stats import Interval, warmup

__all__ = [
    "CapacityPoint",
    "plot_capacity",
    "plot_keys",
    "plot_latency_cdf",
    "plot_rejections",
    "plot_replications",
    "plot_spend",
    "plot_sweep",
]

_STATES = ("available", "cooling", "half-open", "open", "dead")
_STATE_COLOURS = ("#d9f0d3", "#fdb863", "#fee08b", "#d73027", "#252525")
_REASON_COLOURS = {"NO_KEY": "#4575b4", "BUDGET": "#d73027", "RATE_LIMITED": "#fdae61"}
_POLICY_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")

CapacityPoint = tuple[float, dict[str, float], bool]
"""(x, metric name -> value, meets every target) for the capacity chart."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png", metadata={"Software": None})
    _pyplot().close(fig)


def _title(results: Sequence[RunResult], what: str) -> str:
    sc = results[0].scenario
    policies = " vs ".join(r.policy for r in results)
    return f"{what} — {sc.name} ({policies}, seed {results[0].seed})"


def plot_spend(results: Sequence[RunResult], path: Path) -> None:
    """Budget used (settled + reserved), settled spend and open reservations over time."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for i, r in enumerate(results):
        colour = _POLICY_COLOURS[i % len(_POLICY_COLOURS)]
        steps = list(r.budget_steps) or [  # records off: the sampled budget instead
            (smp.time, smp.used, smp.spent, smp.open_reserved) for smp in r.samples
        ]
        if steps and steps[-1][0] < r.end_time:
            steps.append((r.end_time, *steps[-1][1:]))
        t = [s[0] for s in steps]
        prefix = f"{r.policy}: " if len(results) > 1 else ""
        ax.step(t, [s[1] / 1e6 for s in steps], where="post", color=colour, lw=1.6,
                label=f"{prefix}used (spent + reserved)")
        ax.step(t, [s[2] / 1e6 for s in steps], where="post", color=colour, lw=1.0, ls="--",
                label=f"{prefix}spent (settled)")
        ax.fill_between(t, [s[2] / 1e6 for s in steps], [s[1] / 1e6 for s in steps],
                        step="post", color=colour, alpha=0.18,
                        label=f"{prefix}open reservations")
    limit = results[0].scenario.budget.limit
    if limit is not None:
        ax.axhline(limit / 1e6, color="black", lw=1.2, ls=":", label=f"limit ${limit / 1e6:,.2f}")
    cut = None
    if len(results) == 1 and results[0].records:
        ends = sorted(rec.end for rec in results[0].records
                      if rec.status == "ok" and rec.end is not None)
        cut = warmup(results[0].tally.latencies, ends)
    if cut is not None and cut.cut > 0 and cut.cut_time is not None:
        ax.axvline(cut.cut_time, color="#7570b3", lw=1.2, ls="-.",
                   label=f"warm-up cut (MSER-5): first {cut.cut:,} requests")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("budget (USD)")
    ax.set_title(_title(results, "Spend over time"))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def _rejection_counts(r: RunResult, reason: str, bins: int, width: float) -> list[int]:
    """Rejections for ``reason`` per time bin: by arrival time from the records, or (records
    off) from the cumulative counts of the samples, by sample time."""
    counts = [0] * bins
    if r.records:
        for rec in r.records:
            if rec.reason == reason:
                counts[min(int(rec.arrival / width), bins - 1)] += 1
        return counts
    before = 0
    for smp in r.samples:
        now = dict(smp.rejected).get(reason, 0)
        counts[min(int(smp.time / width), bins - 1)] += now - before
        before = now
    counts[-1] += r.tally.reasons.get(reason, 0) - before
    return counts


def plot_rejections(results: Sequence[RunResult], path: Path) -> None:
    """Rejections per second over time, stacked by reason (one panel per policy)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 + 2.2 * len(results)),
                             sharex=True, squeeze=False)
    end = max(max(r.end_time, r.scenario.duration) for r in results)
    bins = 60
    width = end / bins if end > 0 else 1.0
    reasons = sorted({reason for r in results for reason in r.tally.reasons})
    for ax, r in zip(axes[:, 0], results, strict=True):
        bottom = [0.0] * bins
        centres = [(i + 0.5) * width for i in range(bins)]
        for reason in reasons:
            counts = _rejection_counts(r, reason, bins, width)
            rates = [c / width for c in counts]
            ax.bar(centres, rates, width=width * 0.95, bottom=bottom, label=reason,
                   color=_REASON_COLOURS.get(reason, "#999999"))
            bottom = [b + x for b, x in zip(bottom, rates, strict=True)]
        if not reasons:
            ax.text(0.5, 0.5, "no rejections", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylabel("rejections / s")
        ax.set_title(f"policy {r.policy}" if len(results) > 1 else "", fontsize=9)
        ax.grid(alpha=0.3)
        if reasons:
            ax.legend(loc="upper right", fontsize=8, title="reason", title_fontsize=8)
    axes[-1, 0].set_xlabel("simulated time (s), by arrival time")
    fig.suptitle(_title(results, "Rejections over time by reason"), fontsize=11)
    _save(fig, path)


def plot_latency_cdf(
    results: Sequence[RunResult], path: Path, observed: ObservedTotals | None = None
) -> None:
    """Empirical CDF of the latency of successful requests, with p50/p99 marked; a replayed
    log's own latencies (``observed``) drawn in black, "as it happened"."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    drawn = False
    if observed is not None and observed.latencies:
        drawn = True
        n = len(observed.latencies)
        ax.step(list(observed.latencies), [(k + 1) / n for k in range(n)], where="post",
                color="black", lw=2.2, alpha=0.5, label=f"as it happened (n={n:,})")
    for i, r in enumerate(results):
        colour = _POLICY_COLOURS[i % len(_POLICY_COLOURS)]
        lat = r.tally.sorted_latencies()
        if not lat:
            continue
        drawn = True
        n = len(lat)
        ax.step(lat, [(k + 1) / n for k in range(n)], where="post", color=colour,
                label=f"{r.policy} (n={n:,})")
        m = r.metrics
        for q, value in (("p50", m.p50), ("p99", m.p99)):
            if value is not None:
                ax.axvline(value, color=colour, ls=":", lw=1)
                y = (0.03 if q == "p50" else 0.55) + 0.07 * i  # staggered per policy
                ax.text(value, y, f" {q} {value:.2f}s", color=colour, fontsize=8)
    if not drawn:
        ax.text(0.5, 0.5, "no successful request", transform=ax.transAxes, ha="center")
    ax.set_xlabel("latency, arrival to reply (s)")
    ax.set_ylabel("fraction of successful requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(_title(results, "Latency CDF"))
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_keys(result: RunResult, path: Path) -> None:
    """Per-key load (requests in flight) and key state (available/cooling/open/dead) over time."""
    plt = _pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    labels = result.key_labels
    samples = result.samples
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 4.0 + 0.25 * len(labels)), sharex=True,
        gridspec_kw={"height_ratios": [3, max(1, len(labels) * 0.35)]},
    )
    times = [s.time for s in samples]
    for i, label in enumerate(labels):
        top.step(times, [s.inflight[i] for s in samples], where="post", lw=1, label=label)
    top.set_ylabel("requests in flight")
    top.set_title(f"Per-key load and state — {result.scenario.name} "
                  f"(policy {result.policy}, seed {result.seed})")
    top.grid(alpha=0.3)
    if len(labels) <= 12:
        top.legend(loc="upper right", fontsize=7, ncol=min(len(labels), 4))
    grid = [[_STATES.index(s.key_states[i]) if s.key_states[i] in _STATES else 0
             for s in samples] for i in range(len(labels))]
    if samples:
        step = samples[1].time - samples[0].time if len(samples) > 1 else 1.0
        cmap = ListedColormap(_STATE_COLOURS)
        norm = BoundaryNorm([k - 0.5 for k in range(len(_STATES) + 1)], cmap.N)
        bottom.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
                      extent=(times[0], times[-1] + step, len(labels) - 0.5, -0.5))
    bottom.set_yticks(range(len(labels)))
    bottom.set_yticklabels(labels, fontsize=7)
    bottom.set_ylabel("key state")
    bottom.set_xlabel("simulated time (s)")
    bottom.legend(handles=[Patch(color=c, label=s) for s, c in zip(_STATES, _STATE_COLOURS,
                                                                    strict=True)],
                  loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(_STATES), fontsize=7,
                  frameon=False, borderaxespad=0.2)
    _save(fig, path)


def plot_capacity(
    points: Sequence[CapacityPoint],
    targets: Sequence[tuple[str, str, float]],
    path: Path,
    *,
    xlabel: str,
    title: str,
    answer: float | None,
    intervals: dict[float, dict[str, Interval]] | None = None,
) -> None:
    """The capacity curve: each target metric against the searched variable.

    ``targets`` are ``(metric, op, bound)``; the bound is drawn as a dashed line, points that
    meet every target are filled, and the answer is a vertical line. ``intervals`` (x ->
    metric -> confidence interval) are drawn as error bars and a shaded band.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(targets), 1, figsize=(8, 2.2 + 2.3 * len(targets)),
                             sharex=True, squeeze=False)
    ordered = sorted(points, key=lambda p: p[0])
    for ax, (metric, op, bound) in zip(axes[:, 0], targets, strict=True):
        xs = [p[0] for p in ordered]
        ys = [p[1][metric] for p in ordered]
        finite = [(x, y) for x, y in zip(xs, ys, strict=True) if y != float("inf")]
        ax.plot([x for x, _ in finite], [y for _, y in finite], color="#555555", lw=1)
        if intervals:
            bounded = [(x, intervals[x][metric]) for x, _ in finite
                       if x in intervals and metric in intervals[x]
                       and intervals[x][metric].half_width != float("inf")]
            if bounded:
                conf = bounded[0][1].confidence
                ax.fill_between([x for x, _ in bounded], [iv.low for _, iv in bounded],
                                [iv.high for _, iv in bounded], color="#999999", alpha=0.25,
                                label=f"{conf:.0%} CI")
                ax.errorbar([x for x, _ in bounded], [iv.mean for _, iv in bounded],
                            yerr=[iv.half_width for _, iv in bounded], fmt="none",
                            ecolor="#555555", capsize=3, lw=1)
        for x, values, ok in ordered:
            y = values[metric]
            if y == float("inf"):
                continue
            ax.scatter([x], [y], color="#1a9850" if ok else "#d73027", zorder=3,
                       marker="o" if ok else "x")
        ax.axhline(bound, color="black", ls="--", lw=1, label=f"target {metric} {op} {bound:g}")
        if answer is not None:
            ax.axvline(answer, color="#1a9850", lw=1.2, label=f"answer {answer:g}")
        unit = {"p50": " (s)", "p95": " (s)", "p99": " (s)", "mean_latency": " (s)",
                "mean_wait": " (s)", "throughput": " (req/s)", "spent": " (µ$)",
                "overshoot": " (µ$)"}.get(metric, " (fraction)")
        ax.set_ylabel(metric + unit)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def plot_sweep(
    labels: Sequence[str], means: Sequence[dict[str, float | None]], path: Path, *, title: str,
    errors: Sequence[dict[str, float]] | None = None,
) -> None:
    """Mean rejection rate and p99 latency per sweep grid point; ``errors`` (half-widths of
    the confidence intervals, per point and metric) drawn as error bars."""
    plt = _pyplot()
    panels = (("rejection", "rejection rate (fraction)"), ("p99", "p99 latency (s)"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 5.5), sharex=True, squeeze=False)
    xs = list(range(len(labels)))
    for ax, (metric, ylabel) in zip(axes[:, 0], panels, strict=True):
        ys = [m.get(metric) for m in means]
        ax.plot([x for x, y in zip(xs, ys, strict=True) if y is not None],
                [y for y in ys if y is not None], marker="o", color="#1b9e77")
        if errors is not None:
            bars = [(x, y, errors[x].get(metric)) for x, y in zip(xs, ys, strict=True)
                    if y is not None and errors[x].get(metric) not in (None, float("inf"))]
            if bars:
                ax.errorbar([b[0] for b in bars], [b[1] for b in bars],
                            yerr=[b[2] for b in bars], fmt="none", ecolor="#1b9e77",
                            capsize=4, lw=1, label="95% CI")
                ax.legend(loc="best", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xticks(xs)
    axes[-1, 0].set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("grid point")
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


_REPLICATED = (("rejection", "rejection rate"), ("error", "error rate"), ("p50", "p50 (s)"),
               ("p99", "p99 (s)"), ("mean_wait", "mean wait (s)"),
               ("throughput", "throughput (req/s)"), ("spent", "spent (USD)"))


def plot_replications(
    columns: Sequence[tuple[str, Sequence[Metrics], dict[str, Interval]]], path: Path, *,
    title: str,
) -> None:
    """Per-seed values (dots) and the mean with its confidence interval (error bar) of the
    main metrics, one panel per metric, one position per column (policy or what-if)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(_REPLICATED), figsize=(2.0 * len(_REPLICATED) + 1, 3.8),
                             squeeze=False)
    for ax, (metric, label) in zip(axes[0], _REPLICATED, strict=True):
        scale = 1e-6 if metric == "spent" else 1.0
        for i, (_name, runs, intervals) in enumerate(columns):
            colour = _POLICY_COLOURS[i % len(_POLICY_COLOURS)]
            values = [getattr(m, metric) for m in runs]
            dots = [v * scale for v in values if v is not None]
            ax.scatter([i] * len(dots), dots, color=colour, alpha=0.45, s=12)
            iv = intervals[metric]
            if iv.mean == iv.mean and iv.mean != float("inf"):
                err = iv.half_width * scale if iv.half_width != float("inf") else 0.0
                ax.errorbar([i + 0.15], [iv.mean * scale], yerr=[err], fmt="o", color=colour,
                            capsize=4, lw=1.4)
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([c[0] for c in columns], rotation=30, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    confidence = columns[0][2]["rejection"].confidence if columns else 0.95
    fig.suptitle(f"{title}: seeds (dots), mean and {confidence:.0%} CI (bars)", fontsize=10)
    _save(fig, path)
