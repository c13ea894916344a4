"""Renderings of sweeps and capacity plans: JSON, CSV, Markdown tables and their charts.

Each ``*_outputs`` function stages its files in a `ReportDir` and returns the text to print.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from typing import Any

from omnillm_sim.report.summary import to_json_bytes
from omnillm_sim.report.writer import ReportDir
from omnillm_sim.sim.metrics import METRIC_NAMES
from omnillm_sim.sim.plan import PlanResult
from omnillm_sim.sim.scenario import Scenario
from omnillm_sim.sim.stats import mean_ci, paired_ci
from omnillm_sim.sim.sweep import SweepResult

__all__ = ["plan_outputs", "sweep_outputs"]


def _point_label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def sweep_outputs(result: SweepResult, report: ReportDir, *, charts: bool = True) -> str:
    """Stage ``sweep.json``, ``sweep.csv``, ``sweep.md`` (and ``sweep.png``); return a table."""
    columns = ["seed", "arrivals", "ok", *METRIC_NAMES]
    keys = list(result.grid)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, *columns])
    for row in result.rows:
        writer.writerow([row["point"][k] for k in keys] + [row[c] for c in columns])
    report.write_bytes("sweep.csv", buffer.getvalue().encode())
    report.write_bytes("sweep.json", to_json_bytes({
        "scenario": result.scenario.name,
        "grid": result.grid,
        "seeds": list(result.seeds),
        "rows": list(result.rows),
    }))
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in result.rows:
        grouped[_point_label(row["point"])].append(row)
    shown = ("rejection", "error", "p50", "p99", "throughput", "spent", "overshoot")
    many = len(result.seeds) > 1
    lines = [
        f"# Sweep of `{result.scenario.name}`",
        "",
        f"{len(result.rows)} runs: {len(grouped)} grid points x {len(result.seeds)} seeds "
        f"({', '.join(map(str, result.seeds))}); means over seeds"
        + (", ± the half-width of the 95% Student-t interval" if many else "")
        + ". Latencies in seconds, money in micro-dollars.",
        "",
        "| point | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    means: list[tuple[str, dict[str, float | None]]] = []
    errors: list[dict[str, float]] = []
    per_seed: dict[str, dict[str, list[float]]] = {}
    for label, rows in grouped.items():
        m = {name: _mean([r[name] for r in rows]) for name in shown}
        values = {name: [math.inf if r[name] is None else float(r[name]) for r in rows]
                  for name in shown}
        per_seed[label] = values
        ivs = {name: mean_ci(values[name]) for name in shown} if many else {}
        errors.append({name: iv.half_width for name, iv in ivs.items()})
        means.append((label, m))
        cells = [_fmt(m[n]) + (f" ± {ivs[n].half_width:.2g}" if many
                               and math.isfinite(ivs[n].half_width) else "") for n in shown]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if many and len(grouped) > 1:
        first, *others = list(per_seed)
        lines += ["", f"Paired differences from `{first}` (common random numbers: every point "
                  "runs on the same seeds, so the same arrivals and draws), mean ± 95% "
                  "half-width:", "",
                  "| point | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for label in others:
            cells = []
            for name in shown:
                iv = paired_ci(per_seed[label][name], per_seed[first][name])
                cells.append("-" if not math.isfinite(iv.mean) else
                             f"{iv.mean:.4g} ± {iv.half_width:.2g}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if charts:
        from omnillm_sim.report import plots

        plots.plot_sweep([label for label, _ in means], [m for _, m in means],
                         report.path("sweep.png"),
                         title=f"Sweep of {result.scenario.name}: mean over "
                         f"{len(result.seeds)} seed(s)", errors=errors if many else None)
        lines += ["", "![sweep](sweep.png)"]
    text = "\n".join(lines) + "\n"
    report.write_bytes("sweep.md", text.encode())
    return text


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _point_json(result: PlanResult, x: float, values: dict[str, float], ok: bool
                ) -> dict[str, Any]:
    point: dict[str, Any] = {"x": x, "values": {k: _finite(v) for k, v in values.items()},
                             "meets": ok}
    detail = result.detail(x)
    if detail is not None:
        point["verdict"] = detail.verdict
        point["seeds"] = list(detail.seeds)
        point["intervals"] = {m: {"mean": _finite(iv.mean), "low": _finite(iv.low),
                                  "high": _finite(iv.high)}
                              for m, iv in detail.intervals.items()}
    return point


def _answer_ci(result: PlanResult) -> str:
    """`` (95% CI: rejection 0.004..0.008 <= 0.01; ...)`` at the answer, if decided on CIs."""
    detail = result.detail(result.answer)
    if detail is None or result.confidence is None:
        return ""
    parts = []
    for t in result.targets:
        iv = detail.intervals[t.metric]
        parts.append(f"{t.metric} {iv.low:.4g}..{iv.high:.4g} {t.op} {t.bound:g}")
    return (f" ({result.confidence:.0%} CI over {len(detail.seeds)} seeds: "
            + "; ".join(parts) + ")")


def plan_outputs(
    scenario: Scenario, result: PlanResult, report: ReportDir, *, charts: bool = True
) -> str:
    """Stage ``plan.json``, ``plan.md`` (and ``capacity.png``); return the recommendation."""
    targets = ", ".join(str(t) for t in result.targets)
    w = scenario.workload
    ci = _answer_ci(result)
    if result.answer is None:
        answer = f"no setting meets {targets}: {result.note}"
    elif result.vary == "traffic":
        extra = ""
        if w.kind in ("poisson", "diurnal"):
            extra = f" (about {w.rate * result.answer:.4g} requests/s)"
        elif w.kind == "closed":
            extra = f" (about {max(1, round(w.clients * result.answer))} clients)"
        answer = (f"largest traffic multiplier meeting {targets}: x{result.answer:.4g} of "
                  f"traffic{extra}{ci}; {result.note}")
    else:
        answer = f"smallest number of keys meeting {targets}: {int(result.answer)}{ci}"
        if result.details:
            answer += f"; {result.note}"
    ordered = sorted(result.points, key=lambda p: p[0])
    metrics = [t.metric for t in result.targets]
    if result.confidence is None:
        rule = f"Seeds {', '.join(map(str, result.seeds))} (the worst seed decides)."
    else:
        rule = (f"Each point is decided on {result.confidence:.0%} Student-t intervals over "
                f"independent seeds, added one at a time from {len(result.seeds)} until every "
                "interval clears its target (or the cap is reached: undecided, counted as "
                "not meeting). Cells: mean (low .. high).")
    lines = [
        f"# Capacity plan for `{scenario.name}`",
        "",
        f"**{answer}**",
        "",
        f"{rule} Every evaluated point:",
        "",
        f"| {'multiplier' if result.vary == 'traffic' else 'keys'} | "
        + " | ".join(metrics) + " | seeds | meets |",
        "|---|" + "---|" * len(metrics) + "---|---|",
    ]
    for x, values, ok in ordered:
        detail = result.detail(x)
        if detail is None:
            cells = [_fmt(values[m]) for m in metrics]
            lines.append(f"| {x:.4g} | " + " | ".join(cells)
                         + f" | {len(result.seeds)} | {'yes' if ok else 'no'} |")
            continue
        cells = [f"{_fmt(detail.intervals[m].mean)} ({_fmt(detail.intervals[m].low)} .. "
                 f"{_fmt(detail.intervals[m].high)})" for m in metrics]
        lines.append(f"| {x:.4g} | " + " | ".join(cells)
                     + f" | {len(detail.seeds)} | {detail.verdict} |")
    if charts:
        from omnillm_sim.report import plots

        plots.plot_capacity(
            ordered, [(t.metric, t.op, t.bound) for t in result.targets],
            report.path("capacity.png"),
            xlabel="traffic multiplier (x scenario traffic)" if result.vary == "traffic"
            else "number of keys",
            title=f"Capacity curve — {scenario.name} ({scenario.gateway.policy})",
            answer=result.answer,
            intervals={d.x: d.intervals for d in result.details} or None,
        )
        lines += ["", "![capacity curve](capacity.png)"]
    text = "\n".join(lines) + "\n"
    report.write_bytes("plan.md", text.encode())
    report.write_bytes("plan.json", to_json_bytes({
        "scenario": scenario.name,
        "vary": result.vary,
        "answer": result.answer,
        "note": result.note,
        "targets": [str(t) for t in result.targets],
        "seeds": list(result.seeds),
        "points": [_point_json(result, x, values, ok) for x, values, ok in ordered],
        "confidence": result.confidence,
    }))
    return answer
