"""Scenario loading: notation parsers, the one loader, its error messages, overrides."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from simhelpers import SCENARIOS

from omnillm_sim.errors import ScenarioError
from omnillm_sim.sim.distributions import Distribution
from omnillm_sim.sim.scenario import coerce_literal, load_scenario
from omnillm_sim.sim.units import parse_duration, parse_money, parse_rate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("10m", 600.0), ("1.5h", 5400.0), ("250ms", 0.25), ("2d", 172800.0),
     ("0s", 0.0), (12, 12.0), (0.5, 0.5), (" 7 min ", 420.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["fast", "10", "-3s", "3 parsecs", True, None, float("nan"), -1])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(str(bad))):  # the message names the value
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("20/s", 20.0), ("500/min", 500 / 60), ("3/h", 3 / 3600), ("1.5/s", 1.5), ("0/s", 0.0)],
)
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second, rel=1e-15)


@pytest.mark.parametrize("bad", ["fast", "20", 20, "20/fortnight", "-1/s"])
def test_bad_rates(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        parse_rate(bad)


def test_money_is_exact_and_unlimited_is_none() -> None:
    assert parse_money("50.00") == 50_000_000
    assert parse_money("2.01") == 2_010_000
    assert parse_money(5) == 5_000_000
    assert parse_money("unlimited") is None
    for bad in (2.5, True, "lots", "-1"):
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            parse_money(bad)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> ScenarioError:
    if "[workload]" not in text and "durration" not in text:
        text += "\n[workload]\nrate = '1/s'\n"
    with pytest.raises(ScenarioError) as info:
        load_scenario(_write(tmp_path, text))
    return info.value


def test_error_names_file_key_expected_and_got(tmp_path: Path) -> None:
    err = _error(tmp_path, '[workload]\nkind = "poisson"\nrate = "fast"\n')
    assert str(err) == (
        f'{tmp_path / "x.toml"}: workload.rate: expected a rate like "20/s" or "500/min", '
        "got 'fast'"
    )
    assert (err.key, err.got) == ("workload.rate", "fast")


@pytest.mark.parametrize(
    ("text", "key", "expected_part"),
    [
        ("durration = '10m'\n", "durration", "a typo?"),
        ("[workload]\nkind = 'poisson'\nrtae = '1/s'\n", "workload.rtae", "a typo?"),
        ("[[keys]]\nlabel = 'a'\nrpm = -5\n", "keys[0].rpm", "a positive integer"),
        ("[[keys]]\nlabel = 'a'\nrmp = 5\n", "keys[0].rmp", "a typo?"),
        ("[budget]\nlimit = 'lots'\n", "budget.limit", 'USD like "50.00"'),
        ("[gateway]\npolicy = 'yolo'\n", "gateway.policy", "one of"),
        ("[workload]\nkind = 'closed'\n", "workload.clients", "missing"),
        ("[workload]\nkind = 'bursty'\nrate = '1/s'\n", "workload.burst_rate", "missing"),
        ("[workload]\nkind = 'poisson'\n", "workload.rate", "missing"),
        ("[requests]\noutput_tokens = { dist = 'gamma', mean = 3 }\n",
         "requests.output_tokens.dist", "one of"),
        ("[requests]\noutput_tokens = { dist = 'uniform', low = 9 }\n",
         "requests.output_tokens.high", "missing"),
        ("[[faults]]\nkey = 'nope'\nstatus = 503\n", "faults[0].key", "a key label"),
        ("[[faults]]\nkey = 'key'\nstatus = 503\nstart = '5m'\nend = '1m'\n", "faults[0].end",
         "a time after start"),
        ("[[keys]]\nlabel = 'a'\n[[keys]]\nlabel = 'a'\n", "keys", "unique key labels"),
        ("[workload]\nkind = 'trace'\n[workload.trace]\nformat = 'azure'\n",
         "workload.trace.path", "missing"),
        ("duration = 'soon'\n", "duration", "a duration"),
        ("[provider]\nconcurrency = 1.5\n", "provider.concurrency", "an integer >= 0"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, text: str, key: str, expected_part: str) -> None:
    err = _error(tmp_path, text)
    assert err.key == key
    assert expected_part in str(err)
    assert str(tmp_path / "x.toml") in str(err)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert _error(tmp_path, "this is = = not toml").key == "<toml>"
    with pytest.raises(ScenarioError, match="readable scenario file"):
        load_scenario(tmp_path / "absent.toml")


def test_defaults_are_omnillm_defaults(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, "[workload]\nrate = '2/s'\n"))
    assert sc.name == "x"
    assert (sc.gateway.policy, sc.gateway.attempt_cap, sc.gateway.breaker_threshold) == (
        "omnillm-0.1.5", 5, 5)
    assert (sc.gateway.breaker_cooldown, sc.gateway.request_timeout) == (30.0, 120.0)
    assert (sc.keys[0].rpm, sc.keys[0].tpm) == (500, 90_000)
    assert sc.budget.limit is None
    assert (sc.prices.catalogue, sc.prices.fallback) == ("omnillm-0.1.5", "gpt-4o")


def test_key_count_expands_labels_and_faults_use_them(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, (
        "[workload]\nrate = '1/s'\n[[keys]]\nlabel = 'k'\ncount = 3\n[[keys]]\nlabel = 'spare'\n"
        "[[faults]]\nkey = 'k-2'\nstatus = 429\nretry_after = '7s'\n"
    )))
    assert sc.key_labels() == ["k-1", "k-2", "k-3", "spare"]
    assert sc.faults[0].retry_after == 7.0 and sc.faults[0].end == math.inf
    assert sc.with_key_count(5).key_labels()[:5] == ["k-1", "k-2", "k-3", "k-4", "k-5"]


def test_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[workload]\nrate = '2/s'\n[[keys]]\nlabel = 'k'\n")
    sc = load_scenario(path, {"workload.rate": "40/s", "keys.0.count": 4,
                              "gateway.policy": "safe"})
    assert (sc.workload.rate, len(sc.key_labels()), sc.gateway.policy) == (40.0, 4, "safe")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, {"workload.rate": "fast"})
    assert info.value.key == "workload.rate"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, {"keys.3.count": 2})
    assert info.value.key == "keys.3"
    with pytest.raises(ScenarioError, match="a typo"):
        load_scenario(path, {"gateway.polcy": "safe"})
    with pytest.raises(ScenarioError, match="a typo"):
        load_scenario(path, {"requests.max_output": 5})


def test_coerce_literal_reads_values_like_toml() -> None:
    assert coerce_literal("4") == 4
    assert coerce_literal("0.5") == 0.5
    assert coerce_literal("true") is True
    assert coerce_literal("10/s") == "10/s"
    assert coerce_literal('"quoted"') == "quoted"


def test_scaled_multiplies_the_traffic(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, "[workload]\nkind = 'bursty'\nrate = '2/s'\n"
                              "burst_rate = '10/s'\n"))
    doubled = sc.scaled(2.0).workload
    assert (doubled.rate, doubled.burst_rate) == (4.0, 20.0)
    closed = load_scenario(_write(tmp_path, "[workload]\nkind = 'closed'\nclients = 3\n"))
    assert closed.scaled(2.0).workload.clients == 6


def test_distributions() -> None:
    import random

    rng = random.Random(1)
    assert Distribution.constant(3).sample(rng) == 3
    uni = Distribution(kind="uniform", low=2, high=4)
    assert all(2 <= uni.sample(rng) <= 4 for _ in range(100))
    logn = Distribution(kind="lognormal", mean=100, cv=0.5)
    n = 40_000
    mean = sum(logn.sample(rng) for _ in range(n)) / n
    # standard error of the mean = 0.5 * 100 / sqrt(n) = 0.25; allow 5 standard errors
    assert abs(mean - 100) < 1.25
    with pytest.raises(ValueError, match=r"^low\(=5\) must be <= high\(=1\)$"):
        Distribution(kind="uniform", low=5, high=1)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_explains_itself(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert "Question:" in sc.question, "each scenario's header says what question it answers"


def test_readme_scenario_example_is_a_valid_scenario() -> None:
    from simhelpers import PROJECT

    from omnillm_sim.sim.scenario import scenario_from_text

    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## Simulator", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    sc = scenario_from_text(example, source="README.md")
    assert sc.key_labels() == ["key-1", "key-2", "key-3", "key-4"]
    assert sc.faults[0].key == "key-2" and sc.budget.limit == 50_000_000


def test_sim_public_api_is_pinned() -> None:
    import omnillm_sim.sim as sim

    assert sim.__all__ == sorted(sim.__all__)
    assert sim.__all__ == ["Metrics", "RequestRecord", "RunResult", "Sample", "Scenario",
                           "TraceRow", "load_scenario", "read_trace", "run",
                           "scenario_from_dict"]
    assert all(hasattr(sim, name) for name in sim.__all__)
