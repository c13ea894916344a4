"""Text renderings of runs: ``summary.json`` (byte-deterministic) and ``summary.md``.

The JSON holds only values derived from the scenario, the seed and the simulation: no wall
clock, host or absolute path, keys sorted, floats rounded to 6 decimals. So the same scenario
and seed give byte-identical files. Money appears twice: exact integer micro-dollars
(``*_micros``) and a display string (``*_usd``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from omnillm_sim.money import format_usd
from omnillm_sim.sim.importers import ObservedTotals
from omnillm_sim.sim.metrics import RunResult
from omnillm_sim.sim.stats import Interval, warmup
from omnillm_sim.sim.units import format_duration

__all__ = [
    "compare_dict",
    "compare_markdown",
    "intervals_dict",
    "intervals_markdown",
    "observed_dict",
    "run_dict",
    "run_markdown",
    "to_json_bytes",
]

_TIMELINE_POINTS = 200


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _money(micros: int) -> dict[str, Any]:
    return {"micros": micros, "usd": format_usd(micros)}


def _timeline(result: RunResult) -> dict[str, list[Any]]:
    samples = result.samples
    step = max(1, -(-len(samples) // _TIMELINE_POINTS))
    chosen = samples[::step]
    if samples and chosen[-1] is not samples[-1]:
        chosen = (*chosen, samples[-1])
    return {
        "time_s": [_r(s.time) for s in chosen],
        "used_micros": [s.used for s in chosen],
        "spent_micros": [s.spent for s in chosen],
        "open_reserved_micros": [s.open_reserved for s in chosen],
        "in_flight": [sum(s.inflight) for s in chosen],
    }


def observed_dict(totals: ObservedTotals) -> dict[str, Any]:
    """The JSON-ready "as it happened" totals of a replayed log."""
    return {
        "requests": totals.requests,
        "ok": totals.ok,
        "statuses": dict(totals.statuses),
        "spent": _money(totals.spent),
        "latency_s": {"p50": _r(totals.percentile(50)), "p95": _r(totals.percentile(95)),
                      "p99": _r(totals.percentile(99)), "mean": _r(totals.mean_latency)},
        "length_s": _r(totals.length),
        "peak_in_flight": totals.peak_in_flight,
        "keys": totals.keys,
    }


def _bound(value: float) -> float | None:
    return None if not math.isfinite(value) else _r(value)


def intervals_dict(
    intervals: Mapping[str, Interval], seeds: Sequence[int]
) -> dict[str, Any]:
    """Means and confidence intervals per metric (``null`` bounds: fewer than 2 seeds)."""
    confidence = next(iter(intervals.values())).confidence if intervals else 0.95
    return {
        "seeds": list(seeds),
        "confidence": confidence,
        "metrics": {
            name: {"mean": _bound(iv.mean), "low": _bound(iv.low), "high": _bound(iv.high),
                   "half_width": _bound(iv.half_width)}
            for name, iv in intervals.items()
        },
    }


def _fmt_interval(iv: Interval) -> str:
    if not math.isfinite(iv.mean):
        return "-"
    if not math.isfinite(iv.half_width):
        return f"{iv.mean:.4g}"
    return f"{iv.mean:.4g} ± {iv.half_width:.2g} ({iv.low:.4g} .. {iv.high:.4g})"


def intervals_markdown(
    columns: Sequence[tuple[str, Mapping[str, Interval]]], seeds: Sequence[int], title: str
) -> list[str]:
    """A Markdown table: one row per metric, one column per named set of intervals."""
    if not columns:
        return []
    confidence = next(iter(columns[0][1].values())).confidence
    names = list(columns[0][1])
    lines = [f"## {title}", "",
             f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); mean ± half-width of the "
             f"{confidence:.0%} Student-t interval (low .. high). Latencies in seconds, money "
             "in micro-dollars.", "",
             "| metric | " + " | ".join(label for label, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_fmt_interval(ivs[name]) for _, ivs in columns)
                     + " |")
    lines.append("")
    return lines


def _warmup_dict(result: RunResult) -> dict[str, Any] | None:
    cut = warmup(result.tally.latencies)
    if cut is None:
        return None
    return {"method": "MSER-5 over ok latencies in completion order", "cut_requests": cut.cut,
            "kept_requests": cut.kept, "mean_latency_after_cut": _r(cut.mean_latency),
            "mean_latency_all": _r(cut.mean_all)}


def run_dict(
    result: RunResult,
    observed: ObservedTotals | None = None,
    *,
    replications: Mapping[str, Interval] | None = None,
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """The JSON-ready summary of one run (with a replayed log's own totals if given, and the
    means and intervals of every metric over ``seeds`` if ``replications`` are given)."""
    out = _run_dict(result)
    if observed is not None:
        out["as_it_happened"] = observed_dict(observed)
    if replications is not None:
        out["replications"] = intervals_dict(replications, seeds)
    cut = _warmup_dict(result)
    if cut is not None:
        out["warmup"] = cut
    return out


def _run_dict(result: RunResult) -> dict[str, Any]:
    m = result.metrics
    sc = result.scenario
    stats = result.budget
    limit = sc.budget.limit
    return {
        "scenario": {
            "name": sc.name,
            "source": sc.source,
            "question": sc.question,
            "policy": result.policy,
            "strategy": sc.gateway.strategy,
            "seed": result.seed,
            "duration_s": _r(sc.duration),
            "workload": sc.workload.kind,
            "keys": len(result.key_labels),
            "prices": sc.prices.catalogue,
        },
        "requests": {
            "arrivals": m.arrivals,
            "admitted": m.admitted,
            "rejected": m.rejected,
            "ok": m.ok,
            "errors": m.errors,
            "rejections_by_reason": dict(m.rejections_by_reason),
            "statuses": dict(m.statuses),
        },
        "rates": {
            "rejection": _r(m.rejection),
            "error": _r(m.error),
            "throughput_per_s": _r(m.throughput),
            "mean_in_flight": _r(m.mean_in_system),
        },
        "latency_s": {
            "p50": _r(m.p50),
            "p90": _r(m.p90),
            "p95": _r(m.p95),
            "p99": _r(m.p99),
            "max": _r(m.max_latency),
            "mean": _r(m.mean_latency),
            "mean_wait": _r(m.mean_wait),
        },
        "budget": {
            "limit": None if limit is None else _money(limit),
            "spent": _money(stats.spent),
            "peak_used": _money(stats.peak_used),
            "overshoot": _money(stats.overshoot),
            "underestimated": _money(stats.underestimated),
            "open_at_end": stats.open_count,
        },
        "keys": [
            {"label": label, "requests": n, "ok": ok, "mean_in_flight": _r(busy)}
            for label, n, ok, busy in m.per_key
        ],
        "gateway": result.gateway_stats,
        "invariants": {
            "checked": result.checked,
            "events": result.events,
            "violations": 0 if result.checked else None,
            "findings": list(result.findings),
        },
        "length_s": _r(m.length),
        "timeline": _timeline(result),
    }


def compare_dict(
    results: Sequence[RunResult],
    observed: ObservedTotals | None = None,
    *,
    replications: Mapping[str, Mapping[str, Interval]] | None = None,
    paired: Mapping[str, Mapping[str, Interval]] | None = None,
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """Side-by-side summaries of runs of one scenario under several policies (or what-ifs,
    whose label is the run's ``policy``), with a replayed log's own totals if given.

    Over several seeds: ``replications`` (label -> metric intervals) and ``paired``
    (label -> intervals of the per-seed difference from the first column).
    """
    out: dict[str, Any] = {
        "scenario": results[0].scenario.name,
        "seed": results[0].seed,
        "policies": [r.policy for r in results],
        "runs": {r.policy: run_dict(r, replications=(replications or {}).get(r.policy),
                                    seeds=seeds)
                 for r in results},
    }
    if observed is not None:
        out["as_it_happened"] = observed_dict(observed)
    if paired:
        out["paired_differences"] = {
            "baseline": results[0].policy,
            "method": "common random numbers: per-seed difference from the baseline",
            **{label: intervals_dict(ivs, seeds) for label, ivs in paired.items()},
        }
    return out


def to_json_bytes(data: Any) -> bytes:
    """Deterministic JSON: sorted keys, 2-space indent, UTF-8, final newline."""
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _rows(results: Sequence[RunResult]) -> list[tuple[str, list[str]]]:
    rows: list[tuple[str, list[str]]] = []

    def add(name: str, values: list[str]) -> None:
        rows.append((name, values))

    ms = [r.metrics for r in results]
    add("arrivals", [f"{m.arrivals:,}" for m in ms])
    add("admitted", [f"{m.admitted:,}" for m in ms])
    add("completed ok", [f"{m.ok:,}" for m in ms])
    add("rejection rate", [f"{m.rejection:.2%}" for m in ms])
    reasons = sorted({k for m in ms for k, _ in m.rejections_by_reason})
    for reason in reasons:
        add(f"&nbsp;&nbsp;rejected {reason}", [f"{dict(m.rejections_by_reason).get(reason, 0):,}"
                                               for m in ms])
    add("error rate (admitted, not ok)", [f"{m.error:.2%}" for m in ms])
    add("throughput", [f"{m.throughput:.3f} req/s" for m in ms])
    add("latency p50", [_fmt_s(m.p50) for m in ms])
    add("latency p95", [_fmt_s(m.p95) for m in ms])
    add("latency p99", [_fmt_s(m.p99) for m in ms])
    add("mean wait at provider", [_fmt_s(m.mean_wait) for m in ms])
    limits = [r.scenario.budget.limit for r in results]
    add("budget limit", ["unlimited" if lim is None else format_usd(lim) for lim in limits])
    add("spent", [format_usd(m.spent) for m in ms])
    add("peak used", [format_usd(m.peak_used) for m in ms])
    add("overshoot (peak used - limit)", [format_usd(m.overshoot) for m in ms])
    add("underestimated (actual - estimate)", [format_usd(m.underestimated) for m in ms])
    return rows


def _observed_cells(totals: ObservedTotals) -> dict[str, str]:
    """The "as it happened" value of each `_rows` metric the log itself has."""
    failed = totals.requests - totals.ok
    return {
        "arrivals": f"{totals.requests:,}",
        "admitted": f"{totals.requests:,}",
        "completed ok": f"{totals.ok:,}",
        "error rate (admitted, not ok)": f"{failed / totals.requests:.2%}"
        if totals.requests else "-",
        "throughput": f"{totals.ok / totals.length:.3f} req/s" if totals.length > 0 else "-",
        "latency p50": _fmt_s(totals.percentile(50)),
        "latency p95": _fmt_s(totals.percentile(95)),
        "latency p99": _fmt_s(totals.percentile(99)),
        "spent": format_usd(totals.spent),
    }


def _with_observed(
    rows: list[tuple[str, list[str]]], totals: ObservedTotals | None
) -> list[tuple[str, list[str]]]:
    if totals is None:
        return rows
    cells = _observed_cells(totals)
    return [(name, [cells.get(name, "-"), *values]) for name, values in rows]


def _table(headers: list[str], rows: list[tuple[str, list[str]]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join([name, *values]) + " |" for name, values in rows]
    return "\n".join(lines)


def _scenario_block(result: RunResult) -> list[str]:
    sc = result.scenario
    lines = [f"# Scenario `{sc.name}`", ""]
    if sc.question:
        lines += ["> " + line if line else ">" for line in sc.question.splitlines()]
        lines.append("")
    w = sc.workload
    load = {
        "poisson": f"Poisson arrivals at {w.rate:g}/s",
        "bursty": f"bursty arrivals ({w.rate:g}/s calm, {w.burst_rate:g}/s in bursts)",
        "diurnal": f"diurnal arrivals around {w.rate:g}/s (amplitude {w.amplitude:g})",
        "closed": f"{w.clients} closed-loop clients",
        "trace": (f"replay of `{w.trace.path.name}` ({w.trace.format}) at {w.trace.speed:g}x"
                  if w.trace else "trace replay"),
    }[w.kind]
    lines.append(
        f"Source `{sc.source}`, seed {result.seed}, {format_duration(sc.duration)} of "
        f"{load}; {len(result.key_labels)} keys; prices `{sc.prices.catalogue}`; "
        f"model `{sc.requests.model}`."
    )
    lines.append("")
    return lines


def _invariants_block(results: Sequence[RunResult]) -> list[str]:
    lines = ["## Invariants", ""]
    for r in results:
        who = f"`{r.policy}`: "
        if not r.checked:
            lines.append(f"- {who}not checked (run with `--no-check`).")
            continue
        lines.append(f"- {who}checked after each of {r.events:,} events; no violation.")
        lines += [f"  - finding: {f}" for f in r.findings]
    lines.append("")
    return lines


_CHARTS = (
    ("spend.png", "Budget: used, spent and open reservations over time, with the limit"),
    ("replications.png", "Every seed, and the mean with its confidence interval"),
    ("rejections.png", "Rejections over time by reason"),
    ("latency_cdf.png", "Latency CDF of successful requests"),
)


def _warmup_lines(result: RunResult) -> list[str]:
    cut = warmup(result.tally.latencies)
    if cut is None or cut.cut == 0:
        return []
    return ["## Warm-up", "",
            f"MSER-5 cuts the first {cut.cut:,} requests (successful replies, in completion "
            f"order): mean latency {_fmt_s(cut.mean_latency)} after the cut, "
            f"{_fmt_s(cut.mean_all)} over all.", ""]


def run_markdown(
    result: RunResult, charts: Sequence[str] = (), observed: ObservedTotals | None = None,
    *, replications: Mapping[str, Interval] | None = None, seeds: Sequence[int] = (),
) -> str:
    """``summary.md`` of one run; ``charts`` are the chart file names written beside it."""
    lines = _scenario_block(result)
    lines += [f"## Results (policy `{result.policy}`)", ""]
    headers = ["metric", "as it happened", "replayed"] if observed else ["metric", "value"]
    lines += [_table(headers, _with_observed(_rows([result]), observed)), ""]
    if replications is not None:
        lines += intervals_markdown([("mean over seeds", replications)], seeds,
                                    "Replications")
    lines += _warmup_lines(result)
    m = result.metrics
    lines += ["## Keys", "", "| key | requests | ok | mean in flight |", "|---|---|---|---|"]
    lines += [f"| {label} | {n:,} | {ok:,} | {busy:.3f} |" for label, n, ok, busy in m.per_key]
    lines.append("")
    lines += _invariants_block([result])
    lines += _charts_block(charts)
    return "\n".join(lines)


def _charts_block(charts: Sequence[str]) -> list[str]:
    if not charts:
        return []
    titles = dict(_CHARTS)
    lines = ["## Charts", ""]
    for name in charts:
        title = titles.get(name, "Per-key load and state over time"
                           if name.startswith("keys") else name)
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    return lines


def compare_markdown(
    results: Sequence[RunResult], charts: Sequence[str] = (),
    observed: ObservedTotals | None = None,
    *,
    replications: Mapping[str, Mapping[str, Interval]] | None = None,
    paired: Mapping[str, Mapping[str, Interval]] | None = None,
    seeds: Sequence[int] = (),
) -> str:
    """``summary.md`` comparing policies on the same arrivals, side by side (after the
    replayed log's own totals, "as it happened", if given)."""
    lines = _scenario_block(results[0])
    lines += ["## Policies side by side", ""]
    intro = "Same scenario, seed and arrivals; only the gateway policy differs."
    if observed is not None:
        intro = ("The log as it happened (its own totals), then each what-if replaying the "
                 "same calls with their observed timing and outcomes; rows a what-if gateway "
                 "refuses never reach the provider.")
    headers = ["metric", *(["as it happened"] if observed else []),
               *[f"`{r.policy}`" for r in results]]
    lines += [intro, "", _table(headers, _with_observed(_rows(results), observed)), ""]
    if replications:
        lines += intervals_markdown([(f"`{k}`", v) for k, v in replications.items()], seeds,
                                    "Replications")
    if paired:
        lines += intervals_markdown(
            [(f"`{k}` - `{results[0].policy}`", v) for k, v in paired.items()], seeds,
            "Paired differences (common random numbers: same arrivals and draws per seed)")
    lines += _invariants_block(results)
    lines += _charts_block(charts)
    return "\n".join(lines)
