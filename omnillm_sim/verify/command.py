"""``omnillm-sim verify``: the interleaving explorer and the linearizability checker.

`add_arguments` and `run` are the pair registered in ``omnillm_sim.cli.SUBCOMMANDS``. This
module imports only argparse at import time; the tools load when a command runs.
"""

from __future__ import annotations

import argparse
import shlex
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omnillm_sim.verify.explore import Execution
    from omnillm_sim.verify.linearizability import History

__all__ = ["HELP", "add_arguments", "run"]

HELP = """\
Verify budget trackers under concurrency: explore interleavings, check histories.

examples:
  omnillm-sim verify explore --model cas --clients 3 --preemptions 2
  omnillm-sim verify explore --model check-then-act --clients 2
  omnillm-sim verify explore --model check-then-act --clients 2 --schedule 0,1*2,0
  omnillm-sim verify explore --model locked --clients 6 --random 2000 --seed 7
  omnillm-sim verify explore --model double-settle --clients 2 --pct 500 --depth 3
  omnillm-sim verify explore --model mypkg.models:my_tracker --clients 3
  omnillm-sim verify history run.history.jsonl

exit status: 0 when nothing was found, 1 when a violation or a non-linearizable history was
found, 2 on bad input.
"""

_EXPLORE_HELP = """\
Run a tracker model's clients under many schedules and report any violation.

Models: cas (omnillm 0.1.1's lock-free tracker), check-then-act, locked, double-settle
(omnillm's stream settling twice after a cancel; --clients counts the streams, a canceller
thread is added), or package.module:factory for your own (see omnillm_sim.verify.explore).
Without --schedule/--random/--pct the search is exhaustive up to --preemptions. Every failing
run is minimised and printed with the command that replays it.

examples:
  omnillm-sim verify explore --model cas --clients 3 --preemptions 2
  omnillm-sim verify explore --model check-then-act --clients 2 --schedule 0,1*2,0
  omnillm-sim verify explore --model locked --clients 6 --random 2000 --seed 7
"""

_HISTORY_HELP = """\
Check that a recorded history of reserve/settle/release calls is linearizable.

The file format (JSON lines) is documented in omnillm_sim.verify.linearizability.

example:
  omnillm-sim verify history run.history.jsonl
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``explore`` and ``history`` sub-subcommands."""
    formatter = parser.formatter_class
    sub = parser.add_subparsers(dest="verify_command", metavar="TOOL", required=True)
    ex = sub.add_parser(
        "explore",
        help="explore interleavings of a tracker model",
        description=_EXPLORE_HELP,
        formatter_class=formatter,
    )
    ex.add_argument("--model", required=True, help="cas, check-then-act, locked, double-settle")
    ex.add_argument("--clients", type=int, default=2, help="number of client threads")
    ex.add_argument("--preemptions", type=int, default=2, help="exhaustive search bound")
    ex.add_argument(
        "--unbounded", action="store_true", help="exhaustive search with no preemption bound"
    )
    ex.add_argument("--schedule", metavar="STRING", help="replay one schedule, e.g. 0,1*2,0")
    ex.add_argument("--random", type=int, metavar="RUNS", help="seeded random schedules")
    ex.add_argument("--pct", type=int, metavar="RUNS", help="PCT schedules")
    ex.add_argument("--depth", type=int, default=3, help="PCT bug depth")
    ex.add_argument("--seed", type=int, default=0, help="seed of --random and --pct")
    ex.add_argument("--limit", type=int, help="budget limit (micro-dollars; model default)")
    ex.add_argument("--estimate", type=int, help="each client's estimate (model default)")
    ex.add_argument("--actual", type=int, help="each client's actual cost (model default)")
    ex.add_argument("--requests", type=int, help="requests per client (default 1)")
    ex.add_argument("--first", action="store_true", help="stop at the first violation")
    ex.add_argument(
        "-v", "--verbose", action="store_true", help="print every run's schedule and trace"
    )
    hi = sub.add_parser(
        "history",
        help="check a recorded history for linearizability",
        description=_HISTORY_HELP,
        formatter_class=formatter,
    )
    hi.add_argument("file", metavar="FILE", help="history file (JSON lines)")
    hi.add_argument("-v", "--verbose", action="store_true", help="print a witness order")


def run(args: argparse.Namespace) -> int:
    """Run ``verify explore`` or ``verify history``; 1 when something was found."""
    if args.verify_command == "explore":
        return _explore(args)
    return _history(args)


def _replay_command(args: argparse.Namespace, schedule: str) -> str:
    parts = ["omnillm-sim", "verify", "explore", "--model", args.model]
    parts += ["--clients", str(args.clients)]
    for name in ("limit", "estimate", "actual", "requests"):
        value = getattr(args, name)
        if value is not None:
            parts += [f"--{name}", str(value)]
    parts += ["--schedule", schedule]
    return " ".join(shlex.quote(p) for p in parts)


def _explore(args: argparse.Namespace) -> int:
    from omnillm_sim.validate import positive_int
    from omnillm_sim.verify.explore import (
        Exploration,
        explore_exhaustive,
        explore_pct,
        explore_random,
        render_trace,
        replay,
    )
    from omnillm_sim.verify.tracker_models import load_model

    positive_int("clients", args.clients, source="--clients")
    if args.schedule is not None:
        _check_schedule_size(args.schedule)
    model = load_model(
        args.model,
        args.clients,
        limit=args.limit,
        estimate=args.estimate,
        actual=args.actual,
        requests=args.requests,
    )
    print(f"model {model.name}: {model.description}")
    print(f"  {model.clients} threads; {model.parameters}")

    if args.schedule is not None:
        execution = replay(model, args.schedule)
        print(f"replay of schedule {args.schedule}:")
        print(render_trace(model, execution))
        _print_outcome(model.counter, execution)
        return 0 if execution.ok else 1

    def on_run(number: int, execution: Execution) -> None:
        verdict = "ok" if execution.violation is None else execution.violation.kind
        print(f"run {number}: {execution.schedule_string} -> {verdict}")
        if args.verbose:
            print(render_trace(model, execution))

    per_run = on_run if (args.verbose or args.random or args.pct) else None
    started = time.perf_counter()
    result: Exploration
    if args.random:
        result = explore_random(
            model, runs=args.random, seed=args.seed, stop_at_first=args.first, on_run=per_run
        )
    elif args.pct:
        result = explore_pct(
            model,
            runs=args.pct,
            seed=args.seed,
            depth=args.depth,
            stop_at_first=args.first,
            on_run=per_run,
        )
    else:
        bound = None if args.unbounded else args.preemptions
        result = explore_exhaustive(
            model, preemptions=bound, stop_at_first=args.first, on_run=per_run
        )
    elapsed = time.perf_counter() - started
    print(f"search: {result.strategy}")
    finals = ", ".join(
        f"{value} ({count} runs)" for value, count in sorted(result.counter_values.items())
    )
    print(
        f"runs: {result.runs} in {elapsed:.2f} s; longest {result.max_steps} steps; "
        f"at most {result.max_preemptions} preemptions; final {model.counter}: {finals or '-'}"
    )
    if result.ok:
        print(f"result: no violation in {result.runs} runs")
        if result.last is not None:
            print(f"last run: {_replay_command(args, result.last.schedule_string)}")
        return 0
    for kind, count in result.failure_counts.items():
        first = result.failures[kind]
        small = result.minimised.get(kind, first)
        print(f"VIOLATION {kind} in {count} of {result.runs} runs; first: {first.schedule_string}")
        print(
            f"minimised to {len(small.schedule)} steps, {small.preemptions} preemption(s): "
            f"{small.schedule_string}"
        )
        print(render_trace(model, small))
        print(f"replay: {_replay_command(args, small.schedule_string)}")
    return 1


def _check_schedule_size(text: str) -> None:
    """Refuse a schedule longer than a run can be, before expanding it (``0*99999999999``)."""
    import re

    from omnillm_sim.errors import ConfigError
    from omnillm_sim.verify.explore import DEFAULT_MAX_STEPS

    total = 0
    for part in text.replace(" ", "").strip(",").split(","):
        match = re.fullmatch(r"[0-9]{1,6}(?:\*([0-9]{1,12}))?", part, re.ASCII)
        if match is None:
            continue  # the schedule parser words the error
        total += int(match.group(1) or 1)
    if total > DEFAULT_MAX_STEPS:
        raise ConfigError("--schedule", text, f"must have at most {DEFAULT_MAX_STEPS:,} steps "
                          f"(a run stops there), not {total:,}")


def _print_outcome(counter: str, execution: Execution) -> None:
    from omnillm_sim.verify.steps import show_u64

    final = show_u64(execution.memory[counter])
    if execution.violation is None:
        print(f"result: ok; {execution.preemptions} preemption(s); final {counter} = {final}")
    else:
        print(f"result: VIOLATION {execution.violation.kind}; final {counter} = {final}")


def _read_history(path: str) -> History:
    """`read_history`, with unreadable files worded as errors of ours."""
    from omnillm_sim.errors import ConfigError, OmniLLMError
    from omnillm_sim.verify.linearizability import read_history

    try:
        return read_history(path)
    except OmniLLMError:
        raise
    except OSError as exc:
        raise ConfigError("history", path, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("history", path, f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}"
                          f" at offset {exc.start}; binary?)") from None
    except RecursionError:
        raise ConfigError("history", path, "has JSON nested too deeply to read") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError("history", path, f"holds a value that cannot be read: {exc}"
                          ) from None


def _history(args: argparse.Namespace) -> int:
    from omnillm_sim.verify.linearizability import check_history

    history = _read_history(args.file)
    started = time.perf_counter()
    result = check_history(history)
    elapsed = time.perf_counter() - started
    print(
        f"history {args.file}: {result.operations} operations on {len(result.partitions)} "
        f"budget(s), checked in {elapsed:.2f} s"
    )
    for part in result.partitions:
        verdict = "linearizable" if part.linearizable else "NOT linearizable"
        print(
            f"  {part.budget} (limit {part.limit}): {part.operations} operations, {verdict} "
            f"({part.states} states explored)"
        )
        if args.verbose and part.linearizable:
            for number, op in enumerate(part.order, start=1):
                print(f"    {number}. {op.describe()}")
    if result.ok:
        print("result: linearizable")
        return 0
    print("result: NOT linearizable")
    print(result.reason)
    return 1
