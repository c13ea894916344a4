"""The plugin's settings: one frozen record, resolved once per test, every value validated once.

Precedence for the per-test budget: ``@pytest.mark.llm_budget`` > ``--llm-budget`` >
``PYTEST_LLM_BUDGET`` > ini ``llm_budget`` > none (report spend only). The other settings
come from their option, else their ini key, else the default. Every value goes through one
parser that names where it came from, so a bad value fails the run at configuration time:
``--llm-budget option: llm_budget(='abc') must be an amount of USD like "0.05"``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from omnillm_sim.errors import ConfigError, InvalidValueError
from omnillm_sim.money import MicroDollar, format_usd, usd_to_micro

__all__ = [
    "ENV_BUDGET",
    "MARKER",
    "OPTIONS",
    "Budget",
    "Option",
    "Settings",
    "add_options",
    "budget_from_marker",
    "budget_of_marker",
    "check_report_path",
    "closest_marker",
    "parse_budget",
    "parse_model_map",
    "resolve",
]

ENV_BUDGET = "PYTEST_LLM_BUDGET"
DEFAULT_MAX_OUTPUT = 4096
DEFAULT_SUMMARY = 10
MARKER = "llm_budget"


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its command-line flag, ini key, help text (shared by both) and metavar."""

    flag: str
    ini: str | None
    help: str
    metavar: str
    switch: bool = False  # a flag without a value (its ini key takes true/false)
    repeat: bool = False  # a flag given any number of times (its ini key takes lines)


OPTIONS: dict[str, Option] = {
    "budget": Option(
        "--llm-budget",
        "llm_budget",
        "per-test LLM budget in USD (e.g. 0.05); a request that would exceed it is refused "
        f"before it is sent. Precedence: marker > option > {ENV_BUDGET} > ini. "
        "Without any budget the plugin only reports spend.",
        "USD",
    ),
    "session_budget": Option(
        "--llm-session-budget",
        "llm_session_budget",
        "LLM budget in USD for the whole session (shared by pytest-xdist workers)",
        "USD",
    ),
    "prices": Option(
        "--llm-prices",
        "llm_prices",
        "TOML file of model prices (USD per million tokens) overriding the 'current' catalogue",
        "FILE",
    ),
    "report": Option("--llm-report", None, "write per-test and per-request spend as JSON", "FILE"),
    "summary": Option(
        "--llm-summary",
        "llm_summary",
        f"show at most N lines in each list of the terminal summary (top tests, models, "
        f"refusals, ...; 0 hides the summary; default {DEFAULT_SUMMARY})",
        "N",
    ),
    "budget_replays": Option(
        "--llm-budget-replays",
        "llm_budget_replays",
        "charge responses replayed by mocks or cassettes (no network connection) to the "
        "budgets as if they were live (default: report their would-be cost only)",
        "",
        switch=True,
    ),
    "default_max_output": Option(
        "--llm-default-max-output",
        "llm_default_max_output",
        f"output tokens assumed for a request without max_tokens (default {DEFAULT_MAX_OUTPUT}); "
        "such estimates are not true upper bounds",
        "N",
    ),
    "fallback_model": Option(
        "--llm-fallback-model",
        "llm_fallback_model",
        "price models missing from the catalogue, and unmapped Azure OpenAI deployments, as "
        "this model (default: refuse them when any budget is in force, a test's "
        "@pytest.mark.llm_budget included; report them as unpriced otherwise)",
        "MODEL",
    ),
    "model_map": Option(
        "--llm-model-map",
        "llm_model_map",
        "price requests to Azure OpenAI deployment DEPLOYMENT (or naming model DEPLOYMENT) as "
        "MODEL; repeatable (ini: one DEPLOYMENT=MODEL per line). An unmapped deployment is "
        "priced by --llm-fallback-model, else refused under a budget and unpriced without one",
        "DEPLOYMENT=MODEL",
        repeat=True,
    ),
}


def add_options(parser: pytest.Parser) -> None:
    """Register every option and ini key (help texts shared), and the marker's ini line."""
    group = parser.getgroup("omnillm", "LLM budgets (pytest-omnillm)")
    for key, option in OPTIONS.items():
        if option.switch:
            group.addoption(
                option.flag, dest=f"llm_{key}", action="store_true", default=None, help=option.help
            )
        elif option.repeat:
            group.addoption(
                option.flag,
                dest=f"llm_{key}",
                action="append",
                default=None,
                metavar=option.metavar,
                help=option.help,
            )
        else:
            group.addoption(
                option.flag, dest=f"llm_{key}", metavar=option.metavar, help=option.help
            )
        if option.ini is not None and option.repeat:
            parser.addini(option.ini, option.help, type="linelist", default=[])
        elif option.ini is not None:
            parser.addini(option.ini, option.help, default=None)


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit in micro-dollars (``None``: no limit) and where it came from."""

    micros: MicroDollar | None
    source: str

    def __str__(self) -> str:
        if self.micros is None:
            return "unlimited"
        return f"{format_usd(self.micros)} (from {self.source})"


NO_BUDGET = Budget(None, "no budget configured")


def parse_budget(value: object, source: str, *, name: str = "llm_budget") -> Budget:
    """Validate a budget in USD (``"0.05"``, ``0.05``, ``"$1"``); ``None`` means no limit.

    Raises:
        ConfigError: garbage, negative, NaN or infinite values, naming the value and source.
    """
    if value is None:
        return Budget(None, source)
    try:
        return Budget(usd_to_micro(value, name=name), source)  # type: ignore[arg-type]
    except InvalidValueError as exc:
        raise ConfigError(
            name, value, f'must be an amount of USD like "0.05" ({exc.rule})', source=source
        ) from None


def _int_setting(value: object, source: str, name: str, *, minimum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(name, value, "must be an integer", source=source) from None
    if number < minimum:
        raise ConfigError(name, value, f"must be >= {minimum}", source=source)
    return number


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the plugin needs, resolved and validated; `for_test` adds the marker."""

    budget: Budget = NO_BUDGET
    session_budget: Budget = NO_BUDGET
    prices: str | None = None
    report: str | None = None
    summary: int = DEFAULT_SUMMARY
    default_max_output: int = DEFAULT_MAX_OUTPUT
    fallback_model: str | None = None
    budget_replays: bool = False
    model_map: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def for_test(self, item: pytest.Item) -> Settings:
        """These settings with the test's ``llm_budget`` marker (if any) applied.

        Raises:
            ConfigError: the marker's value is malformed.
        """
        marked = budget_from_marker(item)
        return self if marked is None else dataclasses.replace(self, budget=marked)


def _lookup(config: pytest.Config, key: str) -> tuple[Any, str] | None:
    option = OPTIONS[key]
    value = config.getoption(f"llm_{key}")
    if value is not None:
        return value, f"{option.flag} option"
    if key == "budget":
        env = os.environ.get(ENV_BUDGET)
        if env is not None and env.strip():
            return env, f"{ENV_BUDGET} environment variable"
    if option.ini is not None:
        ini = config.getini(option.ini)
        if ini not in (None, "", []):
            return ini, f"{option.ini} ini key"
    return None


def resolve(config: pytest.Config) -> Settings:
    """Read and validate options, environment and ini keys.

    Raises:
        ConfigError: any malformed value, naming the value and its source.
    """
    values: dict[str, Any] = {}
    for key in ("budget", "session_budget"):
        found = _lookup(config, key)
        if found is not None:
            values[key] = parse_budget(
                found[0], found[1], name=OPTIONS[key].flag[2:].replace("-", "_")
            )
    for key, minimum in (("summary", 0), ("default_max_output", 1)):
        found = _lookup(config, key)
        if found is not None:
            values[key] = _int_setting(found[0], found[1], f"llm_{key}", minimum=minimum)
    found = _lookup(config, "model_map")
    if found is not None:
        values["model_map"] = parse_model_map(found[0], found[1])
    found = _lookup(config, "budget_replays")
    if found is not None:
        values["budget_replays"] = _bool_setting(found[0], found[1], "llm_budget_replays")
    for key in ("prices", "report", "fallback_model"):
        found = _lookup(config, key)
        if found is not None:
            text = str(found[0]).strip()
            if not text:
                raise ConfigError(f"llm_{key}", found[0], "must not be empty", source=found[1])
            if key == "report":
                check_report_path(text, found[1])
            values[key] = text
    return Settings(**values)


def parse_model_map(entries: Iterable[object], source: str) -> dict[str, str]:
    """``DEPLOYMENT=MODEL`` entries as a dict; blank entries are skipped.

    Raises:
        ConfigError: an entry without ``=``, with an empty side, or a deployment mapped twice
            to different models, naming the entry and its source.
    """
    result: dict[str, str] = {}
    for entry in entries:
        text = str(entry).strip()
        if not text:
            continue
        deployment, eq, model = (part.strip() for part in text.partition("="))
        if not eq or not deployment or not model:
            raise ConfigError(
                "llm_model_map", entry, "must be DEPLOYMENT=MODEL, like prod-chat=gpt-4o",
                source=source,
            )
        if result.get(deployment, model) != model:
            raise ConfigError(
                "llm_model_map",
                entry,
                f"maps {deployment!r} again (already to {result[deployment]!r})",
                source=source,
            )
        result[deployment] = model
    return result


def _bool_setting(value: object, source: str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, value, "must be true or false", source=source)


def check_report_path(path: str, source: str) -> None:
    """Fail now, before any test runs, if the JSON report could not be written at the end.

    Raises:
        ConfigError: the directory is missing or not writable, or the path is a directory.
    """
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    if os.path.isdir(target):
        raise ConfigError("llm_report", path, "is a directory, expected a file", source=source)
    if not os.path.isdir(parent):
        raise ConfigError(
            "llm_report", path, f"cannot be written: no directory {parent}", source=source
        )
    writable = os.access(target, os.W_OK) if os.path.exists(target) else os.access(parent, os.W_OK)
    if not writable:
        raise ConfigError("llm_report", path, "cannot be written: permission denied", source=source)


def budget_from_marker(item: pytest.Item) -> Budget | None:
    """The closest ``llm_budget`` marker's budget, or ``None`` without a marker.

    ``@pytest.mark.llm_budget("0.05")`` (or ``usd="0.05"``); ``llm_budget(None)`` lifts the
    per-test limit for that test.

    Raises:
        ConfigError: a malformed value or wrong arguments, naming the test.
    """
    marker = item.get_closest_marker(MARKER)
    return None if marker is None else budget_of_marker(item, marker)


def budget_of_marker(item: pytest.Item, marker: pytest.Mark) -> Budget:
    """The budget an ``llm_budget`` ``marker`` gives ``item`` (see `budget_from_marker`).

    Raises:
        ConfigError: a malformed value or wrong arguments, naming the test.
    """
    source = f"@pytest.mark.llm_budget on {item.nodeid}"
    args = list(marker.args)
    if "usd" in marker.kwargs:
        args.append(marker.kwargs["usd"])
    extra = set(marker.kwargs) - {"usd"}
    if len(args) != 1 or extra:
        raise ConfigError(
            "llm_budget",
            marker.args or marker.kwargs,
            'takes one amount of USD like "0.05"',
            source=source,
        )
    return parse_budget(args[0], source)


def closest_marker(
    item: pytest.Item, name: str, above: dict[Any, pytest.Mark | None]
) -> pytest.Mark | None:
    """``item.get_closest_marker(name)``, sharing the look-up above ``item`` between items.

    ``above`` maps a node already looked at to the closest ``name`` marker on it or its
    parents: the items of one module or class look at their common parents once, not once
    each. Valid while no marker is added (one pass over the collected items).
    """
    for mark in item.own_markers:
        if mark.name == name:
            return mark
    parent = item.parent
    if parent is None:
        return None
    if parent in above:
        return above[parent]
    chain: list[Any] = []  # nodes from the parent up to the first one looked at before
    found: pytest.Mark | None = None
    node: Any = parent
    while node is not None:
        if node in above:
            found = above[node]
            break
        chain.append(node)
        found = next((m for m in node.own_markers if m.name == name), None)
        if found is not None:
            break
        node = node.parent
    # Every node of the chain below the one that decided shares its answer.
    for seen in chain:
        above[seen] = found
    return found
