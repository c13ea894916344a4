"""The ``omnillm-sim`` command line.

Each subcommand is a pair in `SUBCOMMANDS`: a function that adds its arguments to a parser and
a function that runs it and returns the exit status. ``omnillm-sim COMMAND --help`` shows an
example for every command.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omnillm_sim.errors import OmniLLMError
from omnillm_sim.verify import command as _verify  # argparse only; the tools load on use

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
Adder = Callable[[argparse.ArgumentParser], None]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples keep their layout; defaults are shown unless the help already says them."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


# -- prices -----------------------------------------------------------------------------------

_PRICES_HELP = """\
Print a model's prices (USD per million tokens) from a price catalogue.

examples:
  omnillm-sim prices gpt-4o
  omnillm-sim prices claude-sonnet-4-5 --catalogue omnillm-0.1.5
  omnillm-sim prices my-finetune --prices my-prices.toml
  omnillm-sim prices --catalogue omnillm-0.1.5        # list the whole omnillm table
"""


def _add_prices(parser: argparse.ArgumentParser) -> None:
    from omnillm_sim.pricing import CATALOGUES

    parser.add_argument("models", nargs="*", metavar="MODEL", help="model names to look up")
    parser.add_argument(
        "--catalogue",
        "--catalog",
        default="current",
        choices=sorted(CATALOGUES),
        help="price catalogue: 'current' (genai-prices, offline) or the faithful omnillm table",
    )
    parser.add_argument("--prices", metavar="FILE", help="TOML file of price overrides")
    parser.add_argument(
        "--fallback", metavar="MODEL", help="price unknown models as this model instead of failing"
    )


def _run_prices(args: argparse.Namespace) -> int:
    from omnillm_sim.pricing import Rates, catalogue

    table = catalogue(args.catalogue, overrides=args.prices, fallback=args.fallback)
    models = args.models or table.known_models()
    if not models:
        print(f"the {table.name!r} catalogue resolves models on demand; name one, e.g. gpt-4o")
        return 0

    def usd(rate: int | None) -> str:
        return "-" if rate is None else f"{rate / 1_000_000:g}"

    header = f"{'model':<28} {'input':>8} {'output':>8} {'c.read':>8} {'c.write':>8} {'c.w.1h':>8}"
    print(f"catalogue {table.name} (USD per million tokens)")
    print(header)
    for model in models:
        price = table.price(model)
        rows: list[tuple[str, Rates]] = [(model, price.rates)]
        rows += [(f"  prompt > {t.start:,} tok", t.rates) for t in price.tiers]
        for label, r in rows:
            print(
                f"{label:<28} {usd(r.input):>8} {usd(r.output):>8} {usd(r.cache_read):>8}"
                f" {usd(r.cache_write):>8} {usd(r.cache_write_1h):>8}"
            )
        if price.source:
            print(f"  source: {price.source}")
    return 0


# -- shared helpers for the simulator commands -------------------------------------------

_EPILOG_OUT = "Reports go to reports/<scenario name>/ unless --out is given."


def _add_run_options(parser: argparse.ArgumentParser, *, out: bool = True) -> None:
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: the scenario's `seed`)")
    if out:
        parser.add_argument("--out", metavar="DIR", default=None,
                            help="report folder (default: reports/<name>)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the invariant checker after every event (faster)")
    parser.add_argument("--no-records", action="store_true",
                        help="keep no per-request records (memory stays flat on long runs; "
                        "same metrics; like records = false in the scenario)")
    parser.add_argument("--no-charts", action="store_true", help="write no PNG charts")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario key (dotted path, e.g. workload.rate=10/s)")


def _overrides(args: argparse.Namespace, **extra: object) -> dict[str, object]:
    from omnillm_sim.errors import ConfigError
    from omnillm_sim.sim.scenario import coerce_literal

    out: dict[str, object] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "must look like KEY=VALUE (e.g. duration=2m)")
        out[key.strip()] = coerce_literal(value.strip())
    out.update({k.replace("__", "."): v for k, v in extra.items() if v is not None})
    return out


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    """The report folder, checked before any simulation (a run must not end in a traceback)."""
    from omnillm_sim.report.writer import check_out_dir

    out = Path(args.out) if args.out else Path("reports") / name
    check_out_dir(out, option="--out" if args.out else "output folder")
    return out


def _progress(label: str) -> Any:
    from omnillm_sim.sim.progress import ProgressBar

    return ProgressBar(label)


def _run_one(scenario: Any, args: argparse.Namespace) -> Any:
    from omnillm_sim.sim.engine import run

    with _progress(f"{scenario.name} [{scenario.gateway.policy}]") as bar:
        return run(scenario, args.seed, check=not args.no_check,
                   keep_records=False if args.no_records else None, progress=bar)


def _print_result(result: Any) -> None:
    from omnillm_sim.money import format_usd

    m = result.metrics
    reasons = ", ".join(f"{k} {v:,}" for k, v in m.rejections_by_reason) or "none"
    limit = result.scenario.budget.limit
    budget = "no limit" if limit is None else f"of {format_usd(limit)}"

    def p(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    print(f"{result.scenario.name} [{result.policy}, seed {result.seed}]: "
          f"{m.arrivals:,} requests, {m.ok:,} ok, rejected {m.rejection:.2%} ({reasons}), "
          f"errors {m.error:.2%}")
    print(f"  latency p50 {p(m.p50)}, p99 {p(m.p99)}; spent {format_usd(m.spent)} {budget}; "
          f"overshoot {format_usd(m.overshoot)}")
    if result.checked:
        print(f"  invariants checked after each of {result.events:,} events: no violation")
    for finding in result.findings:
        print(f"  finding: {finding}")


def _print_written(paths: list[Path]) -> None:
    md = next((p for p in paths if p.name.endswith(".md")), paths[0])
    charts = sum(1 for p in paths if p.suffix == ".png")
    print(f"report: {md}" + (f" (+ {charts} charts)" if charts else ""))


# -- run --------------------------------------------------------------------------------------

_RUN_HELP = """\
Run a scenario file and write its report (summary.json, summary.md, charts).

examples:
  omnillm-sim run scenarios/steady.toml
  omnillm-sim run scenarios/burst.toml --seed 7 --out /tmp/burst
  omnillm-sim run scenarios/key-outage.toml --policy safe --no-check
  omnillm-sim run scenarios/steady.toml --set workload.rate=10/s --set keys.0.count=6
  omnillm-sim run scenarios/steady.toml --seeds 10      # means with 95% intervals
"""


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file")
    parser.add_argument("--policy", default=None,
                        help="gateway policy instead of the scenario's (omnillm-0.1.5 or safe)")
    _add_run_options(parser)
    _add_replication_options(parser)


_SEEDS_HELP = ("independent replications: run seeds SEED .. SEED+N-1 and report every "
               "metric's mean with its Student-t confidence interval")


def _add_replication_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=1, metavar="N", help=_SEEDS_HELP)
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence level of the intervals")


def _seed_list(args: argparse.Namespace, scenario: Any) -> list[int]:
    from omnillm_sim.errors import ConfigError

    if args.seeds < 1:
        raise ConfigError("--seeds", args.seeds, "must be >= 1")
    if not 0 < args.confidence < 1:
        raise ConfigError("--confidence", args.confidence, "must be in (0, 1), e.g. 0.95")
    first = args.seed if args.seed is not None else scenario.seed
    return list(range(first, first + args.seeds))


def _replicas(scenario: Any, args: argparse.Namespace, seeds: list[int]) -> list[Any]:
    """The runs of ``scenario`` on every seed after the first (quietly, records off)."""
    from omnillm_sim.sim.engine import run

    return [run(scenario, seed, check=not args.no_check, keep_records=False)
            for seed in seeds[1:]]


def _print_intervals(label: str, intervals: dict[str, Any]) -> None:
    shown = ("rejection", "error", "p99", "spent")
    print(f"  {label}: " + "; ".join(f"{name} {intervals[name]}" for name in shown))


def _run_run(args: argparse.Namespace) -> int:
    from omnillm_sim.report.writer import write_run_report
    from omnillm_sim.sim.scenario import load_scenario
    from omnillm_sim.sim.stats import metric_intervals

    scenario = load_scenario(args.scenario, _overrides(args, gateway__policy=args.policy))
    seeds = _seed_list(args, scenario)
    args.seed = seeds[0]
    out = _out_dir(args, scenario.name)
    result = _run_one(scenario, args)
    _print_result(result)
    replicas = _replicas(scenario, args, seeds)
    if replicas:
        _print_intervals(f"over {len(seeds)} seeds", metric_intervals(
            [r.metrics for r in (result, *replicas)], args.confidence))
    _print_written(write_run_report(result, out,
                                    charts=not args.no_charts, replicas=replicas,
                                    confidence=args.confidence))
    return 0


# -- compare ----------------------------------------------------------------------------------

_COMPARE_HELP = """\
Run one scenario under several gateway policies on the same arrivals; one side-by-side report.

A what-if (--what-if 'keys.0.count=3,budget.limit=200') is a column of its own: the scenario
with those keys changed. When the scenario replays a log with observed timing (a
[workload.trace] of format pytest-omnillm, otel-genai, litellm-spend, or csv/jsonl with an end
or duration column), the log's own totals come first, "as it happened".

examples:
  omnillm-sim compare scenarios/underestimate.toml
  omnillm-sim compare scenarios/burst.toml --policy omnillm-0.1.5 --policy safe --seed 3
  omnillm-sim compare scenarios/burst.toml --seeds 10   # paired differences with intervals
  omnillm-sim compare my-log.toml --policy safe --what-if keys.0.count=3 \
      --what-if budget.limit=200
"""

_WHAT_IF_HELP = ("a what-if column: scenario keys to change, comma-separated KEY=VALUE "
                 "(e.g. keys.0.count=3,budget.limit=200); repeatable")


def _what_ifs(items: list[str]) -> list[tuple[str, dict[str, object]]]:
    from omnillm_sim.errors import ConfigError
    from omnillm_sim.sim.scenario import coerce_literal

    out = []
    for item in items:
        changes: dict[str, object] = {}
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError("--what-if", item,
                                  "must look like KEY=VALUE[,KEY=VALUE] (e.g. keys.0.count=3)")
            changes[key.strip()] = coerce_literal(value.strip())
        out.append((item, changes))
    return out


def _observed_totals(scenario: Any) -> Any:
    """A replayed log's own totals ("as it happened"), or None for other workloads."""
    from omnillm_sim.pricing import catalogue
    from omnillm_sim.sim.importers import (
        in_start_order,
        is_observed,
        observed_totals,
        read_observed,
    )

    spec = scenario.workload.trace
    if spec is None or not is_observed(spec.format, dict(spec.columns)):
        return None
    rows = in_start_order(read_observed(spec.path, spec.format, columns=dict(spec.columns),
                                        time_unit=spec.time_unit), str(spec.path))
    if spec.limit is not None:
        rows = (row for _, row in zip(range(spec.limit), rows, strict=False))
    p = scenario.prices
    prices = catalogue(p.catalogue, overrides=p.overrides, fallback=p.fallback)
    return observed_totals(rows, prices, dict(spec.models), scenario.requests.model)


def _labelled(result: Any, label: str) -> Any:
    import dataclasses

    return result if label == result.policy else dataclasses.replace(result, policy=label)


def _add_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file")
    parser.add_argument("--policy", action="append", default=None,
                        help="a policy to compare (repeat; default: omnillm-0.1.5 and safe, "
                        "or none when --what-if is given)")
    parser.add_argument("--what-if", action="append", default=[], metavar="KEY=VALUE,...",
                        help=_WHAT_IF_HELP)
    _add_run_options(parser)
    _add_replication_options(parser)


def _run_compare(args: argparse.Namespace) -> int:
    from omnillm_sim.report.writer import write_compare_report
    from omnillm_sim.sim.scenario import load_scenario

    what_ifs = _what_ifs(args.what_if)
    policies = args.policy or ([] if what_ifs else ["omnillm-0.1.5", "safe"])
    variants = [(p, {"gateway.policy": p}) for p in policies] + what_ifs
    scenarios = [load_scenario(args.scenario, {**_overrides(args), **changes})
                 for _, changes in variants]
    out = _out_dir(args, f"{scenarios[0].name}-compare")  # checked before any run
    results, replicas = [], []
    seeds: list[int] = []
    for (label, _), scenario in zip(variants, scenarios, strict=True):
        seeds = seeds or _seed_list(args, scenario)
        args.seed = seeds[0]
        results.append(_labelled(_run_one(scenario, args), label))
        _print_result(results[-1])
        # Common random numbers: every column runs on the same seeds, hence the same draws.
        replicas.append([_labelled(r, label) for r in _replicas(scenario, args, seeds)])
    if len(seeds) > 1:
        from omnillm_sim.sim.stats import paired_intervals

        base = [r.metrics for r in (results[0], *replicas[0])]
        for result, more in zip(results[1:], replicas[1:], strict=True):
            diff = paired_intervals([r.metrics for r in (result, *more)], base,
                                    args.confidence)
            _print_intervals(f"{result.policy} - {results[0].policy} (paired, "
                             f"{len(seeds)} seeds)", diff)
    observed = _observed_totals(results[0].scenario)
    _print_written(write_compare_report(results, out, charts=not args.no_charts,
                                        observed=observed,
                                        replicas=replicas if len(seeds) > 1 else (),
                                        confidence=args.confidence))
    return 0


# -- replay -----------------------------------------------------------------------------------

_REPLAY_HELP = """\
Replay a request trace through the gateway of a scenario (or the default one).

Formats: azure (TIMESTAMP,ContextTokens,GeneratedTokens), burstgpt, and generic csv/jsonl
with named columns (--column time=ts --column prompt_tokens=in --column output_tokens=out).

Logs with both ends of each call replay with their observed timing: each call is admitted at
its start and ends at its observed end with its observed outcome and bill (rows the what-if
gateway refuses are counted refused). Log formats: pytest-omnillm (this project's --llm-report
JSON), otel-genai (OTLP/JSON or flattened GenAI spans, one a line), litellm-spend (LiteLLM
SpendLogs as CSV, JSON or JSON lines), and csv/jsonl with an end or duration column (optional
status, cost in USD and key columns). The report puts the log "as it happened" beside the
replay; several --policy / --what-if give one column each.

examples:
  omnillm-sim replay ../shared/data/AzureLLMInferenceTrace_conv.csv --format azure
  omnillm-sim replay trace.csv --format azure --scenario scenarios/steady.toml --speed 4
  omnillm-sim replay calls.jsonl --format jsonl --column time=ts --column prompt_tokens=in \\
      --column output_tokens=out --time-unit ms --limit 5000
  omnillm-sim replay spend.csv --format litellm-spend --scenario gw.toml \\
      --policy omnillm-0.1.5 --policy safe --what-if keys.0.count=3
  omnillm-sim replay report.json --format pytest-omnillm --set 'budget.limit="5.00"'
"""


def _add_replay(parser: argparse.ArgumentParser) -> None:
    from omnillm_sim.sim.scenario import TRACE_FORMATS

    parser.add_argument("trace", metavar="TRACE", help="trace file")
    parser.add_argument("--format", required=True, choices=TRACE_FORMATS, help="trace format")
    parser.add_argument("--scenario", metavar="BASE", default=None,
                        help="scenario whose gateway, keys, budget and provider to use")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="replay speed: 2 plays the trace twice as fast")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N rows")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=NAME",
                        help="csv/jsonl column for time, prompt_tokens, output_tokens, model, "
                        "and for logs end or duration, status, cost, key")
    parser.add_argument("--time-unit", default="s", choices=("s", "ms", "iso"),
                        help="unit of the csv/jsonl time (and end, duration) columns")
    parser.add_argument("--policy", action="append", default=None,
                        help="gateway policy instead of the base's (repeat to compare)")
    parser.add_argument("--what-if", action="append", default=[], metavar="KEY=VALUE,...",
                        help=_WHAT_IF_HELP)
    _add_run_options(parser)


def _run_replay(args: argparse.Namespace) -> int:
    import copy

    from omnillm_sim.errors import ConfigError
    from omnillm_sim.report.writer import write_compare_report, write_run_report
    from omnillm_sim.sim.importers import in_start_order, is_observed, read_observed
    from omnillm_sim.sim.scenario import (
        SPEED_RANGE,
        _leading_comment,
        _set_path,
        parse_toml,
        read_text_file,
        scenario_from_dict,
    )
    from omnillm_sim.sim.traces import read_trace

    low, high = SPEED_RANGE
    if not low <= args.speed <= high:
        raise ConfigError("--speed", args.speed, f"must be in [{low:g}, {high:g}]")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit", args.limit, "must be >= 1")
    columns = {}
    for item in args.column:
        field, sep, name = item.partition("=")
        if not sep or not name:
            raise ConfigError("--column", item, "must look like FIELD=NAME (e.g. time=ts)")
        columns[field] = name
    trace = Path(args.trace).resolve()
    last = 0.0
    if is_observed(args.format, columns):
        origin = None
        rows = in_start_order(read_observed(trace, args.format, columns=columns,
                                            time_unit=args.time_unit), str(trace))
        for count, observed_row in enumerate(rows, start=1):
            origin = observed_row.start if origin is None else origin
            last = observed_row.start - origin
            if args.limit is not None and count >= args.limit:
                break
    else:
        for count, row in enumerate(read_trace(trace, args.format, columns=columns,
                                               time_unit=args.time_unit), start=1):
            last = row.time
            if args.limit is not None and count >= args.limit:
                break
    data: dict[str, Any] = {}
    base, source, question = Path.cwd(), "<replay>", ""
    if args.scenario:
        path = Path(args.scenario)
        text = read_text_file(path, "a readable scenario file")
        data = parse_toml(text, str(path))
        base, source, question = path.parent.resolve(), str(path), _leading_comment(text)
    spec: dict[str, Any] = {"path": str(trace), "format": args.format, "speed": args.speed,
                            "time_unit": args.time_unit}
    if columns:
        spec["columns"] = columns
    if args.limit is not None:
        spec["limit"] = args.limit
    data["workload"] = {"kind": "trace", "trace": spec}
    data["duration"] = last / args.speed + 1.0
    data["name"] = trace.stem
    data.pop("max_requests", None)
    for key, value in _overrides(args).items():
        _set_path(data, key, value, "--set")
    what_ifs = _what_ifs(args.what_if)
    variants = [(p, {"gateway.policy": p}) for p in args.policy or []] + what_ifs
    out_name = trace.stem if len(variants) <= 1 else f"{trace.stem}-compare"
    out = _out_dir(args, out_name)  # checked before any run
    results = []
    for label, changes in variants or [("", {})]:
        variant = copy.deepcopy(data)
        for key, value in changes.items():
            _set_path(variant, key, value, "--what-if")
        scenario = scenario_from_dict(variant, source=source, base=base, name=trace.stem,
                                      question=question or f"Replay of {trace.name}.")
        result = _run_one(scenario, args)
        results.append(_labelled(result, label) if label else result)
        _print_result(results[-1])
    observed = _observed_totals(results[0].scenario)
    if len(results) == 1:
        paths = write_run_report(results[0], out,
                                 charts=not args.no_charts, observed=observed)
    else:
        paths = write_compare_report(results, out,
                                     charts=not args.no_charts, observed=observed)
    if observed is not None:
        from omnillm_sim.money import format_usd

        print(f"as it happened: {observed.requests:,} requests, {observed.ok:,} ok, "
              f"spent {format_usd(observed.spent)}")
    _print_written(paths)
    return 0


# -- sweep ------------------------------------------------------------------------------------

_SWEEP_HELP = """\
Run a scenario over a grid of settings x seeds, in parallel, and tabulate the metrics.

--grid takes a dotted scenario key and comma-separated values; repeat it for more axes.
--dask local runs on a dask.distributed LocalCluster, --dask tcp://host:8786 on an existing
cluster (pip install 'omnillm-sim[dask]'); results equal the local run's for the same seeds.

examples:
  omnillm-sim sweep scenarios/steady.toml --grid workload.rate=4/s,8/s,12/s --seeds 3
  omnillm-sim sweep scenarios/burst.toml --grid gateway.policy=omnillm-0.1.5,safe \\
      --grid keys.0.count=2,4,8 --dask local
"""


def _add_sweep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file")
    parser.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                        help="a scenario key and the values to try (repeatable)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per grid point")
    parser.add_argument("--seed", type=int, default=None,
                        help="first seed (default: the scenario's seed)")
    parser.add_argument("--workers", type=int, default=None, help="local processes")
    parser.add_argument("--dask", metavar="ADDRESS", default=None,
                        help="'local' or a scheduler address like tcp://host:8786")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: reports/<name>-sweep)")
    parser.add_argument("--no-check", action="store_true", help="skip the invariant checker")
    parser.add_argument("--no-charts", action="store_true", help="write no PNG chart")


def _parse_grid(items: list[str]) -> dict[str, list[object]]:
    from omnillm_sim.errors import ConfigError
    from omnillm_sim.sim.scenario import coerce_literal

    grid: dict[str, list[object]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError("--grid", item,
                              "must look like KEY=V1,V2 (e.g. workload.rate=4/s,8/s)")
        grid[key.strip()] = [coerce_literal(v.strip()) for v in values.split(",") if v.strip()]
    return grid


def _run_sweep(args: argparse.Namespace) -> int:
    from omnillm_sim.errors import ConfigError
    from omnillm_sim.report.tables import sweep_outputs
    from omnillm_sim.report.writer import ReportDir
    from omnillm_sim.sim.scenario import load_scenario
    from omnillm_sim.sim.sweep import sweep

    if args.seeds < 1:
        raise ConfigError("--seeds", args.seeds, "must be >= 1")
    grid = _parse_grid(args.grid)
    scenario = load_scenario(args.scenario)
    out = _out_dir(args, f"{scenario.name}-sweep")
    first = args.seed if args.seed is not None else scenario.seed
    seeds = range(first, first + args.seeds)
    result = sweep(args.scenario, grid, seeds, workers=args.workers, dask=args.dask,
                   check=not args.no_check)
    with ReportDir(out) as report:
        text = sweep_outputs(result, report, charts=not args.no_charts)
        paths = report.commit()
    print(text)
    _print_written(paths)
    return 0


# -- plan -------------------------------------------------------------------------------------

_PLAN_HELP = """\
Find the largest traffic (or the fewest keys) that meets targets, and draw the capacity curve.

Targets: METRIC<=BOUND or METRIC>=BOUND with metrics rejection, error, p50, p95, p99,
mean_latency, mean_wait, throughput, spent, overshoot; latencies accept durations (20s),
fractions accept percentages (1%).

examples:
  omnillm-sim plan scenarios/steady.toml --target 'rejection<=0.01' --target 'p99<=20s'
  omnillm-sim plan scenarios/burst.toml --vary keys --target 'rejection<=0.001' --seeds 3
  omnillm-sim plan scenarios/steady.toml --policy safe --target 'rejection<=0.01'
  omnillm-sim plan scenarios/steady.toml --target 'p99<=20s' --confidence 0.99 --max-seeds 20

Each point is decided on confidence intervals over independent seeds (sequential
replications: seeds are added until every interval clears its target or --max-seeds is
reached; an undecided point counts as not meeting the targets). --worst-seed restores the
old rule: the worst of --seeds seeds decides.
"""


def _add_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file")
    parser.add_argument("--target", action="append", required=True, metavar="METRIC<=BOUND",
                        help="a target to meet (repeatable)")
    parser.add_argument("--vary", choices=("traffic", "keys"), default="traffic",
                        help="search the traffic multiplier or the key count")
    parser.add_argument("--policy", default=None,
                        help="gateway policy instead of the scenario's (omnillm-0.1.5 or safe)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per point to start with (default 3; with --worst-seed 1)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="decide each point on Student-t intervals at this level: a "
                        "target is met when the interval clears it")
    parser.add_argument("--max-seeds", type=int, default=10,
                        help="add seeds at a point until its intervals clear the targets, up "
                        "to this many; then the point is undecided (counted as not meeting)")
    parser.add_argument("--worst-seed", action="store_true",
                        help="decide on the worst of --seeds seeds instead of intervals")
    parser.add_argument("--seed", type=int, default=None, help="first seed")
    parser.add_argument("--max-factor", type=float, default=64.0,
                        help="largest traffic multiplier tried")
    parser.add_argument("--max-keys", type=int, default=256,
                        help="largest key count tried (at most the scenario's limits.keys, "
                        "100,000 unless raised)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="relative precision of the traffic multiplier")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: reports/<name>-plan)")
    parser.add_argument("--no-check", action="store_true", help="skip the invariant checker")
    parser.add_argument("--no-charts", action="store_true", help="draw no capacity curve")


def _run_plan(args: argparse.Namespace) -> int:
    import math

    from omnillm_sim.errors import ConfigError
    from omnillm_sim.report.tables import plan_outputs
    from omnillm_sim.report.writer import ReportDir
    from omnillm_sim.sim.plan import parse_target, plan
    from omnillm_sim.sim.scenario import expected_arrivals, load_scenario

    if args.seeds is None:
        args.seeds = 1 if args.worst_seed else 3
    if args.seeds < 1:
        raise ConfigError("--seeds", args.seeds, "must be >= 1")
    if not (math.isfinite(args.tolerance) and 0 < args.tolerance < 1):
        raise ConfigError("--tolerance", args.tolerance, "must be a fraction in (0, 1)")
    if not (math.isfinite(args.max_factor) and args.max_factor >= 1):
        raise ConfigError("--max-factor", args.max_factor, "must be a finite number >= 1")
    scenario = load_scenario(args.scenario,
                             {"gateway.policy": args.policy} if args.policy else None)
    biggest = expected_arrivals(scenario) * (args.max_factor if args.vary == "traffic" else 1)
    if biggest > scenario.limits.arrivals:
        raise ConfigError("--max-factor", args.max_factor,
                          f"would simulate about {biggest:,.0f} requests at the largest factor, "
                          f"over the scenario's limits.arrivals ({scenario.limits.arrivals:,})")
    if not 1 <= args.max_keys <= scenario.limits.keys:
        raise ConfigError("--max-keys", args.max_keys, f"must be in [1, {scenario.limits.keys:,}]"
                          " (the scenario's limits.keys)")
    targets = [parse_target(t) for t in args.target]
    out = _out_dir(args, f"{scenario.name}-plan")
    first = args.seed if args.seed is not None else scenario.seed
    word = "x" if args.vary == "traffic" else "keys="

    def show(x: float, values: dict[str, float], ok: bool) -> None:
        if not args.worst_seed:
            return  # `detail` prints the intervals
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"  {word}{x:.4g}: {shown} -> {'meets' if ok else 'misses'} targets", flush=True)

    def detail(d: Any) -> None:
        shown = ", ".join(f"{k} {iv.mean:.4g} ({iv.low:.4g}..{iv.high:.4g})"
                          for k, iv in d.intervals.items())
        print(f"  {word}{d.x:.4g}: {shown} over {len(d.seeds)} seeds -> {d.verdict}",
              flush=True)

    result = plan(scenario, targets, vary=args.vary, seeds=range(first, first + args.seeds),
                  max_factor=args.max_factor, max_keys=args.max_keys, tolerance=args.tolerance,
                  check=not args.no_check, on_point=show,
                  confidence=None if args.worst_seed else args.confidence,
                  max_seeds=max(args.max_seeds, args.seeds), on_detail=detail)
    with ReportDir(out) as report:
        text = plan_outputs(scenario, result, report, charts=not args.no_charts)
        paths = report.commit()
    print(text)
    _print_written(paths)
    return 0 if result.answer is not None else 1


# -- validate ---------------------------------------------------------------------------------

_VALIDATE_HELP = """\
Check scenario files without running them: every key, value and limit, the gateway and price
settings, every model a request could name, and every row of a trace (values and order).

examples:
  omnillm-sim validate scenarios/*.toml
  omnillm-sim validate my-scenario.toml
"""


def _add_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario TOML files")


def _run_validate(args: argparse.Namespace) -> int:
    from omnillm_sim.money import format_usd
    from omnillm_sim.sim.preflight import preflight
    from omnillm_sim.sim.scenario import load_scenario

    failed = 0
    for path in args.scenarios:
        try:
            sc = load_scenario(path)
            found = preflight(sc)
        except OmniLLMError as exc:
            failed += 1
            print(f"FAIL {exc}")
            continue
        limit = "unlimited" if sc.budget.limit is None else format_usd(sc.budget.limit)
        rows = "" if found.trace_rows is None else (
            f", trace of {found.trace_rows:,} rows ({found.replayed_rows:,} within the run)")
        print(f"ok   {path}: {sc.workload.kind} workload, {len(sc.key_labels())} keys, "
              f"policy {sc.gateway.policy}, budget {limit}, models {', '.join(found.models)}"
              f"{rows}")
    return 2 if failed else 0


# -- ledger -------------------------------------------------------------------------------------

_LEDGER_HELP = """\
Show a budget ledger (the SQLite file pytest-xdist workers share) and reclaim reservations
left open by a process that died.

Open reservations stay charged at their estimate until they are settled or reclaimed.
--reclaim OWNER ends those of OWNER (the owner column, e.g. gw0:pid:4242; "all" for every
one): charged at their estimate by default, or refunded with --release.

examples:
  omnillm-sim ledger session-ledger.sqlite
  omnillm-sim ledger session-ledger.sqlite --reclaim gw1:pid:4242
  omnillm-sim ledger session-ledger.sqlite --reclaim all --release
"""


def _add_ledger(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="FILE", help="the ledger's SQLite file")
    parser.add_argument("--reclaim", metavar="OWNER", help='end OWNER\'s open reservations ("all")')
    parser.add_argument(
        "--release", action="store_true", help="refund reclaimed reservations instead of charging"
    )


def _run_ledger(args: argparse.Namespace) -> int:
    import sqlite3

    from omnillm_sim.errors import ConfigError
    from omnillm_sim.ledger import Ledger

    if not os.path.exists(args.path):
        raise ConfigError("ledger", args.path, "does not exist")
    if args.reclaim and not os.access(args.path, os.W_OK):
        raise ConfigError("--reclaim", args.path, "needs write access, and the file is read-only")
    try:
        return _show_ledger(args, Ledger(args.path, owner="omnillm-sim ledger"))
    except sqlite3.DatabaseError as exc:  # a damaged file: SQLite stops before our own checks
        raise ConfigError("ledger", args.path, f"cannot be read ({exc}); "
                          "it is damaged, or not a ledger") from None


def _show_ledger(args: argparse.Namespace, ledger: Any) -> int:
    from omnillm_sim.money import format_usd

    with ledger:
        if args.reclaim:
            owner = None if args.reclaim == "all" else args.reclaim
            ended = ledger.reclaim(owner=owner, charge=not args.release)
            verb = "released" if args.release else "charged"
            print(f"{verb} {len(ended)} reservation(s) of {args.reclaim}")
        ledger.check()
        s = ledger.stats()
        print(
            f"{args.path}: limit {format_usd(s.limit)}, used {format_usd(s.used)} "
            f"(spent {format_usd(s.spent)} + {s.open_count} open {format_usd(s.open_reserved)}); "
            f"{s.admitted} admitted, {s.rejected} rejected, overshoot {format_usd(s.overshoot)}"
        )
        for e in ledger.open_reservations():
            print(f"  open #{e.id}  {e.owner}  {format_usd(e.estimate)}  {e.label}")
    return 0


SUBCOMMANDS: dict[str, tuple[str, Adder, Handler]] = {
    "run": (_RUN_HELP, _add_run, _run_run),
    "compare": (_COMPARE_HELP, _add_compare, _run_compare),
    "replay": (_REPLAY_HELP, _add_replay, _run_replay),
    "sweep": (_SWEEP_HELP, _add_sweep, _run_sweep),
    "plan": (_PLAN_HELP, _add_plan, _run_plan),
    "validate": (_VALIDATE_HELP, _add_validate, _run_validate),
    "prices": (_PRICES_HELP, _add_prices, _run_prices),
    "verify": (_verify.HELP, _verify.add_arguments, _verify.run),
    "ledger": (_LEDGER_HELP, _add_ledger, _run_ledger),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``omnillm-sim`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="omnillm-sim",
        description="Make LLM spending testable and predictable: simulate an LLM gateway's "
        "keys, rate limits, breakers and budget; price models; plan capacity.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add, _) in SUBCOMMANDS.items():
        summary = help_text.splitlines()[0]
        child = sub.add_parser(
            name, help=summary, description=help_text, formatter_class=_Formatter
        )
        add(child)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every clean-up (staging folders, workers) runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omnillm-sim`` console script; returns the exit status.

    Errors of ours (bad scenario, unknown model, ...) print one line to stderr and exit 2.
    Ctrl-C exits 130 and SIGTERM 143 (128 + the signal), after the same clean-up: pending
    work cancelled, workers stopped, no half-written report.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = SUBCOMMANDS[args.command][2]
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return handler(args)
    except OmniLLMError as exc:
        print(f"omnillm-sim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        word = "terminated" if terminated else "interrupted"
        print(f"omnillm-sim {args.command}: {word}; no report was left half-written",
              file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # Output piped into `head` and the reader left: not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
