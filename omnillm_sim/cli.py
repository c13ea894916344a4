"""The ``omnillm-sim`` command line.

Each subcommand is a pair in `SUBCOMMANDS`: a function that adds its arguments to a parser and
a function that runs it and returns the exit status. ``omnillm-sim COMMAND --help`` shows an
example for every command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from omnillm_sim.errors import OmniLLMError
from omnillm_sim.verify import command as _verify  # argparse only; the tools load on use

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
Adder = Callable[[argparse.ArgumentParser], None]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


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


# -- demo -------------------------------------------------------------------------------------

_DEMO_HELP = """\
Run the default demonstration.

example:
  omnillm-sim demo
"""


def _add_demo(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def _run_demo(args: argparse.Namespace) -> int:
    from omnillm_sim.budget import BudgetTracker
    from omnillm_sim.errors import BudgetExceeded
    from omnillm_sim.money import format_usd
    from omnillm_sim.pricing import Usage, catalogue

    prices = catalogue("current")
    tracker = BudgetTracker("0.05", name="demo budget")
    usage = Usage(input_tokens=1_200, output_tokens=400)
    print(f"budget {format_usd(tracker.limit)}; each call reserves a worst case, then settles")
    for i in range(1, 100):
        try:
            with tracker.reserve(20_000, label=f"call {i}") as r:
                r.settle(prices.cost("gpt-4o", usage))
        except BudgetExceeded as exc:
            print(f"call {i}: refused before sending: {exc}")
            break
    stats = tracker.stats()
    print(f"spent {format_usd(stats.spent)} in {stats.settled} calls; overshoot {stats.overshoot}")
    return 0


SUBCOMMANDS: dict[str, tuple[str, Adder, Handler]] = {
    "prices": (_PRICES_HELP, _add_prices, _run_prices),
    "demo": (_DEMO_HELP, _add_demo, _run_demo),
    "verify": (_verify.HELP, _verify.add_arguments, _verify.run),
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omnillm-sim`` console script; returns the exit status.

    Errors of ours (bad scenario, unknown model, ...) print one line to stderr and exit 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = SUBCOMMANDS[args.command][2]
    try:
        return handler(args)
    except OmniLLMError as exc:
        print(f"omnillm-sim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"omnillm-sim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the reader left: not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
