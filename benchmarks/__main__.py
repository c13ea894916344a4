"""``python -m benchmarks``: run every benchmark, print one table, write benchmarks/results.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import bench_io, bench_plugin, bench_sim, bench_tracker, bench_verify
from benchmarks.harness import Figure, Size, load_average, machine

MODULES = [bench_tracker, bench_sim, bench_io, bench_plugin, bench_verify]


def all_benchmarks() -> list[Callable[[Size], Figure]]:
    return [bench for module in MODULES for bench in module.BENCHMARKS]


def render(figures: Sequence[Figure]) -> str:
    """The table: each ratio with its spread (lowest-highest over the repetitions)."""
    head = (
        f"{'figure':<48} {'ours':>11} {'baseline':>11} {'ratio':>7} {'spread':>13} "
        f"{'target':>13} result"
    )
    lines = [head, "-" * len(head)]
    for f in figures:
        base = "-" if f.baseline is None else f"{f.baseline:.4g}"
        ratio = "-" if f.ratio is None else f"{f.ratio:.3f}"
        spread = "-" if f.spread is None else f"{f.spread[0]:.3f}-{f.spread[1]:.3f}"
        target = f"{f.direction} {f.target:g}"
        lines.append(
            f"{f.name:<48} {f.ours:>9.4g}{f.unit:>2} {base:>11} {ratio:>7} {spread:>13} "
            f"{target:>13} {'SKIP' if f.skipped else 'PASS' if f.passed else 'MISS'}"
        )
        if f.note:
            lines.append(f"    {f.note}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, object]) -> None:
    """Write atomically: a crash never leaves a half-written results file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the runner only")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only benchmarks whose function name contains NAME",
    )
    parser.add_argument(
        "--out",
        default=str(Path(__file__).with_name("results.json")),
        help="where to write the JSON results",
    )
    args = parser.parse_args(argv)
    size: Size = "smoke" if args.smoke else "full"
    info = machine()
    print(f"machine: {info['cores']} cores, Python {info['python']} ({info['platform']})")
    load_start = load_average()
    print(f"load average at start: {load_start:.2f}", flush=True)
    figures: list[Figure] = []
    for bench in all_benchmarks():
        if args.only and not any(part in bench.__name__ for part in args.only):
            continue
        print(
            f"running {bench.__module__.split('.')[-1]}.{bench.__name__} ...",
            file=sys.stderr,
            flush=True,
        )
        figures.append(bench(size))
    load_end = load_average()
    print(render(figures))
    print(f"load average (1 min) at start {load_start:.2f}, at end {load_end:.2f} "
          f"({info['cores']} cores; other jobs on the machine move every figure)")
    payload = {
        "machine": info,
        "size": size,
        "load_average": {"start": load_start, "end": load_end},
        "figures": [f.as_dict() for f in figures],
    }
    write_json(Path(args.out), payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
