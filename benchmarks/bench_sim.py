"""Simulator speed: throughput against a minimal SimPy model, and a million-request run.

Throughput is simulated requests per CPU second of this process (``time.process_time``: on a
shared machine, time spent descheduled by other jobs would otherwise dominate the noise; both
sides are measured the same way, and the process is single-threaded). The baseline is the
least a SimPy model of the same traffic can do: the same Poisson arrival times (same rate,
horizon and random stream as the scenario's), and per request one process that takes a
`simpy.Resource` slot, holds it for one `timeout` and releases it. Its capacity is large
enough that nothing queues, as in the scenario (the provider has no concurrency limit there).

On an M/M/c queue (one key with no binding limits, ``[provider] concurrency = c``,
exponential service) the baseline is **ciw**, a pure-Python queueing DES, on the same
arrival rate, service rate, servers and horizon; both report the mean wait, which must agree
with Erlang C (tests/sim/test_closed_form.py checks ours).

Key count: the marginal CPU cost of a request (the time of an N-request run minus that of a
100-request run, over N - 100: per-run costs such as building 1,000 keys cancel out) with
1,000 keys against 1 key, for every strategy in `omnillm_sim.keypool.STRATEGIES`, under both
policies and with the checker on and off (the full product, 4 combinations per strategy);
each strategy's figure is its worst combination, and its note gives every combination's
median ratio with its spread, and the per-run cost of a short run at 1,000 keys and at 1.

The million-request figure is the whole user command, ``omnillm-sim run SCENARIO --no-records
--no-check --no-charts`` on a scenario file of one million requests, measured from outside
(`benchmarks.harness.run_child`): wall time and the peak RSS the kernel reports for the
exited process, so the metrics, the summary and the report files are included.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ciw
import simpy

from benchmarks.harness import Figure, Paired, Size, run_child, side_by_side
from omnillm_sim.keypool import STRATEGIES
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import Scenario, scenario_from_dict

RATE = 40.0  # requests/s: 8 keys at 500 rpm carry 66/s, so most requests are admitted
MEAN_SERVICE = 0.6 + 300 / 60  # the scenario's mean time to first token + output / speed
ROOT = Path(__file__).resolve().parents[1]


def throughput_scenario(duration: float, *, records: bool = True) -> Scenario:
    """8 keys, the omnillm-0.1.5 policy, a budget that never runs out, Poisson arrivals."""
    return scenario_from_dict(
        {
            "seed": 7,
            "duration": f"{duration}s",
            "records": records,
            "gateway": {"policy": "omnillm-0.1.5"},
            "keys": [{"label": "key", "count": 8, "rpm": 500, "tpm": 90_000}],
            "budget": {"limit": "1000000.00"},
            "requests": {
                "model": "gpt-4o",
                "prompt_tokens": {"dist": "lognormal", "mean": 1200, "cv": 1.0},
                "output_tokens": {"dist": "lognormal", "mean": 300, "cv": 0.8},
                "max_output_tokens": 1024,
            },
            "workload": {"kind": "poisson", "rate": f"{RATE}/s"},
            "provider": {
                "ttft": {"dist": "lognormal", "mean": "0.6s", "cv": 0.5},
                "tokens_per_second": 60,
                "jitter": 0.2,
            },
        },
        source="benchmarks/bench_sim.py",
        name="throughput",
    )


def minimal_simpy(seed: int, rate: float, horizon: float) -> int:
    """The baseline: same arrivals, one Resource request + one timeout each; returns the count."""
    env = simpy.Environment()
    slots = simpy.Resource(env, capacity=1_000_000)
    arrivals = random.Random(f"{seed}/arrivals")  # the engine's arrival stream for this seed
    services = random.Random(f"{seed}/services")
    count = 0

    def serve(duration: float) -> Any:
        with slots.request() as slot:
            yield slot
            yield env.timeout(duration)

    def source() -> Any:
        nonlocal count
        t = 0.0
        while True:
            t += arrivals.expovariate(rate)
            if t >= horizon:
                return
            yield env.timeout(t - env.now)
            count += 1
            env.process(serve(services.expovariate(1.0 / MEAN_SERVICE)))

    env.process(source())
    env.run()
    return count


def _throughput(size: Size, check: bool) -> tuple[Paired, int, int]:
    duration, reps = (5.0, 1) if size == "smoke" else (250.0, 7)
    scenario = throughput_scenario(duration)
    counts: dict[str, int] = {}

    def ours() -> float:
        start = time.process_time()
        result = run(scenario, check=check)
        elapsed = time.process_time() - start
        counts["ours"] = result.metrics.arrivals
        return result.metrics.arrivals / elapsed

    def baseline() -> float:
        start = time.process_time()
        n = minimal_simpy(scenario.seed, RATE, duration)
        elapsed = time.process_time() - start
        counts["baseline"] = n
        return n / elapsed

    pair = side_by_side(ours, baseline, reps)
    return pair, counts["ours"], reps


def sim_throughput(size: Size) -> Figure:
    pair, n, reps = _throughput(size, check=False)
    return Figure(
        "simulator throughput, checker off (req/s)",
        pair.ours,
        pair.baseline,
        "/s",
        "ratio>=",
        0.5,
        reps,
        note=f"{n:,} requests per repetition, 8 keys, omnillm-0.1.5, Poisson {RATE:g}/s; "
        "baseline: SimPy Resource + timeout per request",
        spread=pair.spread,
    )


def sim_throughput_checked(size: Size) -> Figure:
    pair, n, reps = _throughput(size, check=True)
    return Figure(
        "simulator throughput, checker on (req/s)",
        pair.ours,
        pair.baseline,
        "/s",
        "ratio>=",
        0.25,
        reps,
        note=f"{n:,} requests per repetition; the invariant checker runs after every event",
        spread=pair.spread,
    )


MILLION_SCENARIO = """\
# bench_sim million run: {requests:,} Poisson requests through 8 keys, records off
seed = 7
duration = "{duration}s"
records = false

[gateway]
policy = "omnillm-0.1.5"

[[keys]]
label = "key"
count = 8
rpm = 500
tpm = 90000

[budget]
limit = "1000000.00"

[requests]
model = "gpt-4o"
prompt_tokens = {{ dist = "lognormal", mean = 1200, cv = 1.0 }}
output_tokens = {{ dist = "lognormal", mean = 300, cv = 0.8 }}
max_output_tokens = 1024

[workload]
kind = "poisson"
rate = "{rate}/s"

[provider]
ttft = {{ dist = "lognormal", mean = "0.6s", cv = 0.5 }}
tokens_per_second = 60
jitter = 0.2
"""


def million_run(size: Size) -> Figure:
    requests = 20_000 if size == "smoke" else 1_000_000
    cli = Path(sys.executable).with_name("omnillm-sim")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "million.toml"
        text = MILLION_SCENARIO.format(requests=requests, duration=requests / RATE, rate=RATE)
        path.write_text(text, encoding="utf-8")
        command = [str(cli), "run", str(path), "--no-records", "--no-check", "--no-charts",
                   "--out", str(Path(tmp) / "report")]
        child = run_child(command, cwd=ROOT)
        summary = json.loads((Path(tmp) / "report" / "summary.json").read_text("utf-8"))
    arrivals = _arrivals(summary)
    return Figure(
        f"{requests:,}-request run, records off: peak RSS (MB)",
        child.peak_rss_mb,
        None,
        "MB",
        "value<=",
        300.0,
        1,
        note=f"whole command `omnillm-sim run SCENARIO --no-records --no-check --no-charts`: "
        f"{arrivals:,} requests in {child.seconds:.1f} s wall ({child.cpu_seconds:.1f} s CPU, "
        f"{arrivals / child.seconds:,.0f} req/s incl. start-up and report); peak RSS of the "
        "exited process (kernel ru_maxrss)",
        extra={"seconds": child.seconds, "cpu_seconds": child.cpu_seconds,
               "requests": float(arrivals)},
    )


MMC_SERVERS, MMC_RATE, MMC_SERVICE_RATE = 2, 1.2, 1.0  # rho = 0.6, Wq = 0.5625 s


def mmc_scenario(requests: int) -> Scenario:
    """M/M/2: one key without binding limits, 2 provider slots, exponential service."""
    return scenario_from_dict(
        {
            "seed": 2,
            "duration": f"{requests / MMC_RATE}s",
            "records": False,
            "keys": [{"label": "k", "rpm": 10**9, "tpm": 10**12}],
            "gateway": {"request_timeout": "1000h"},
            "workload": {"kind": "poisson", "rate": f"{MMC_RATE}/s"},
            "provider": {
                "concurrency": MMC_SERVERS,
                "service": {"dist": "exponential", "mean": 1 / MMC_SERVICE_RATE},
            },
        },
        source="benchmarks/bench_sim.py",
        name="mmc",
    )


def ciw_mmc(seed: int, horizon: float) -> tuple[int, float]:
    """The baseline: ciw's M/M/c over ``horizon``; returns (customers served, mean wait)."""
    ciw.seed(seed)
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(MMC_RATE)],
        service_distributions=[ciw.dists.Exponential(MMC_SERVICE_RATE)],
        number_of_servers=[MMC_SERVERS],
    )
    simulation = ciw.Simulation(network)
    simulation.simulate_until_max_time(horizon)
    records = simulation.get_all_records()
    return len(records), sum(r.waiting_time for r in records) / max(len(records), 1)


def mmc_throughput(size: Size) -> Figure:
    requests, reps = (2_000, 1) if size == "smoke" else (30_000, 5)
    scenario = mmc_scenario(requests)
    waits: dict[str, float] = {}

    def ours() -> float:
        start = time.process_time()
        result = run(scenario, check=False)
        elapsed = time.process_time() - start
        waits["ours"] = result.metrics.mean_wait or 0.0
        return result.metrics.arrivals / elapsed

    def baseline() -> float:
        start = time.process_time()
        n, wait = ciw_mmc(scenario.seed, scenario.duration)
        elapsed = time.process_time() - start
        waits["ciw"] = wait
        return n / elapsed

    pair = side_by_side(ours, baseline, reps)
    a, b = pair
    return Figure(
        "M/M/c simulator throughput vs ciw (req/s)",
        a,
        b,
        "/s",
        "ratio>=",
        1.0,
        reps,
        note=f"M/M/{MMC_SERVERS}, lambda {MMC_RATE}/s, mu {MMC_SERVICE_RATE}/s, {requests:,} "
        f"requests, checker off; mean wait ours {waits['ours']:.3f} s, ciw {waits['ciw']:.3f} "
        "s, Erlang C 0.5625 s",
        extra={"wait_ours": waits["ours"], "wait_ciw": waits["ciw"]},
        spread=pair.spread,
    )


def keys_scenario(keys: int, strategy: str, policy: str, requests: int) -> Scenario:
    """Poisson 40/s on ``keys`` keys whose limits never bind, exponential 0.5 s service."""
    return scenario_from_dict(
        {
            "seed": 3,
            "duration": f"{requests / RATE}s",
            "records": False,
            "gateway": {"policy": policy, "strategy": strategy, "request_timeout": "1000h"},
            "keys": [{"label": "k", "count": keys, "rpm": 10**9, "tpm": 10**12}],
            "workload": {"kind": "poisson", "rate": f"{RATE}/s"},
            "provider": {"service": {"dist": "exponential", "mean": 0.5}},
        },
        source="benchmarks/bench_sim.py",
        name="keys",
    )


KEY_COUNT_SHORT = 100
"""Requests of the short run whose CPU time `_marginal_cost` subtracts (the per-run costs)."""


def _run_cost(keys: int, strategy: str, policy: str, check: bool, requests: int) -> float:
    """CPU seconds of one run of `keys_scenario` (the last run's garbage collected first, so
    freeing its 1,000 keys is not charged to this one)."""
    scenario = keys_scenario(keys, strategy, policy, requests)
    gc.collect()
    start = time.process_time()
    run(scenario, check=check)
    return time.process_time() - start


def _marginal_cost(keys: int, strategy: str, policy: str, check: bool, requests: int) -> float:
    """CPU seconds per request beyond a short run's: ``(t(N) - t(100)) / (N - 100)``.

    The short run carries the per-run costs (building the keys, the sampler's first reading
    of every key, the per-key report) and little of the machine's noise, which is roughly
    proportional to a run's length: its noise adds about 1/40 to the long run's instead of
    the 1/2 a run of N/2 requests would (the figure used to be ``t(2N) - t(N)``).
    """
    short = _run_cost(keys, strategy, policy, check, KEY_COUNT_SHORT)
    full = _run_cost(keys, strategy, policy, check, requests)
    return max(full - short, 1e-9) / (requests - KEY_COUNT_SHORT)


KEY_COUNT_COMBOS = [(p, c) for p in ("omnillm-0.1.5", "safe") for c in (False, True)]
"""Every policy with the checker off and on: each strategy's figure covers all four."""


def key_count(strategy: str) -> Callable[[Size], Figure]:
    """Per-request cost with 1,000 keys against 1 key, for ``strategy`` under every policy,
    checker off and on; the figure is the worst combination's ratio (median over paired,
    interleaved repetitions), and the note lists each one's median and spread."""

    def bench(size: Size) -> Figure:
        requests, reps = (300, 1) if size == "smoke" else (4_000, 5)
        pairs: dict[str, Paired] = {}
        for policy, check in KEY_COUNT_COMBOS:
            label = f"{policy}{'+check' if check else ''}"
            many: list[float] = []
            one: list[float] = []
            for rep in range(reps):  # alternate which key count runs first
                order = (1_000, 1) if rep % 2 == 0 else (1, 1_000)
                for keys in order:
                    cost = _marginal_cost(keys, strategy, policy, check, requests)
                    (many if keys == 1_000 else one).append(cost)
            pairs[label] = Paired(tuple(many), tuple(one))
        fixed = {  # the per-run cost: a short run, best of 3
            keys: min(_run_cost(keys, strategy, "omnillm-0.1.5", True, KEY_COUNT_SHORT)
                      for _ in range(3))
            for keys in (1, 1_000)
        }
        ratios = {k: p.ours / p.baseline for k, p in pairs.items()}
        worst = max(ratios, key=lambda k: ratios[k])
        a, b = pairs[worst]

        def shown(k: str) -> str:
            lo, hi = pairs[k].spread or (ratios[k], ratios[k])
            return f"{k} {ratios[k]:.2f}x ({lo:.2f}-{hi:.2f})"

        return Figure(
            f"per-request cost, 1,000 keys vs 1, {strategy} (us)",
            a * 1e6,
            b * 1e6,
            "us",
            "ratio<=",
            1.5,
            reps,
            note="worst of " + ", ".join(shown(k) for k in pairs)
            + f"; marginal CPU per request, {requests:,}-request runs less "
            f"{KEY_COUNT_SHORT}-request ones; a {KEY_COUNT_SHORT}-request run takes "
            f"{fixed[1_000] * 1e3:.0f} ms with 1,000 keys, {fixed[1] * 1e3:.0f} ms with 1",
            extra={**{f"ratio {k}": v for k, v in ratios.items()},
                   "fixed_seconds_1000_keys": fixed[1_000], "fixed_seconds_1_key": fixed[1]},
            spread=pairs[worst].spread,
        )

    bench.__name__ = f"key_count_{strategy.replace('-', '_')}"
    return bench


def _arrivals(summary: dict[str, Any]) -> int:
    """The request count in a run's summary.json (searched, so the layout may evolve)."""
    stack: list[Any] = [summary]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in ("arrivals", "requests"):
                if isinstance(item.get(key), int):
                    return int(item[key])
            stack.extend(item.values())
    raise ValueError("summary.json has no request count")


BENCHMARKS = [
    sim_throughput,
    sim_throughput_checked,
    mmc_throughput,
    *(key_count(s) for s in STRATEGIES),  # every registered strategy
    million_run,
]

