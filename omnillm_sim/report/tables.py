"""Renderings of sweeps and capacity plans: JSON, CSV, Markdown tables and their charts.

Each ``*_outputs`` function stages its files in a `ReportDir` and returns the text to print.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any

from omnillm_sim.report.summary import to_json_bytes
from omnillm_sim.report.writer import ReportDir
from omnillm_sim.sim.metrics import METRIC_NAMES
from omnillm_sim.sim.plan import PlanResult
from omnillm_sim.sim.scenario import Scenario
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
    lines = [
        f"# Sweep of `{result.scenario.name}`",
        "",
        f"{len(result.rows)} runs: {len(grouped)} grid points x {len(result.seeds)} seeds "
        f"({', '.join(map(str, result.seeds))}); means over seeds. Latencies in seconds, "
        "money in micro-dollars.",
        "",
        "| point | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    means: list[tuple[str, dict[str, float | None]]] = []
    for label, rows in grouped.items():
        m = {name: _mean([r[name] for r in rows]) for name in shown}
        means.append((label, m))
        lines.append(f"| {label} | " + " | ".join(_fmt(m[n]) for n in shown) + " |")
    if charts:
        from omnillm_sim.report import plots

        plots.plot_sweep([label for label, _ in means], [m for _, m in means],
                         report.path("sweep.png"),
                         title=f"Sweep of {result.scenario.name}: mean over "
                         f"{len(result.seeds)} seed(s)")
        lines += ["", "![sweep](sweep.png)"]
    text = "\n".join(lines) + "\n"
    report.write_bytes("sweep.md", text.encode())
    return text


def plan_outputs(
    scenario: Scenario, result: PlanResult, report: ReportDir, *, charts: bool = True
) -> str:
    """Stage ``plan.json``, ``plan.md`` (and ``capacity.png``); return the recommendation."""
    targets = ", ".join(str(t) for t in result.targets)
    w = scenario.workload
    if result.answer is None:
        answer = f"no setting meets {targets}: {result.note}"
    elif result.vary == "traffic":
        extra = ""
        if w.kind in ("poisson", "diurnal"):
            extra = f" (about {w.rate * result.answer:.4g} requests/s)"
        elif w.kind == "closed":
            extra = f" (about {max(1, round(w.clients * result.answer))} clients)"
        answer = (f"largest traffic multiplier meeting {targets}: x{result.answer:.4g}{extra}; "
                  f"{result.note}")
    else:
        answer = f"smallest number of keys meeting {targets}: {int(result.answer)}"
    ordered = sorted(result.points, key=lambda p: p[0])
    metrics = [t.metric for t in result.targets]
    lines = [
        f"# Capacity plan for `{scenario.name}`",
        "",
        f"**{answer}**",
        "",
        f"Seeds {', '.join(map(str, result.seeds))} (the worst seed decides). Every evaluated "
        "point:",
        "",
        f"| {'multiplier' if result.vary == 'traffic' else 'keys'} | "
        + " | ".join(metrics) + " | meets |",
        "|---|" + "---|" * len(metrics) + "---|",
    ]
    for x, values, ok in ordered:
        lines.append(f"| {x:.4g} | " + " | ".join(_fmt(values[m]) for m in metrics)
                     + f" | {'yes' if ok else 'no'} |")
    if charts:
        from omnillm_sim.report import plots

        plots.plot_capacity(
            ordered, [(t.metric, t.op, t.bound) for t in result.targets],
            report.path("capacity.png"),
            xlabel="traffic multiplier (x scenario traffic)" if result.vary == "traffic"
            else "number of keys",
            title=f"Capacity curve — {scenario.name} ({scenario.gateway.policy})",
            answer=result.answer,
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
        "points": [{"x": x, "values": values, "meets": ok} for x, values, ok in ordered],
    }))
    return answer
