"""`SeedBudgetTracker` against an independent model of the seed's ``AtomicU64`` (issue 12/13).

The model is the Rust code read literally, with ``& (2**64 - 1)`` for every wrapping add: a
``try_reserve`` admits iff the wrapped ``used + est`` is ``<= limit``; ``settle`` and the
faithful second settle move ``used`` by ``actual - est``, wrapping. Counters are tallied here
independently of the tracker's own bookkeeping.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from omnillm_sim.budget import SeedBudgetTracker
from omnillm_sim.money import micro_to_usd

MASK = 2**64 - 1

amounts = st.integers(min_value=0, max_value=3_000)
ops = st.lists(
    st.tuples(st.sampled_from(["reserve", "settle", "again"]), amounts, amounts), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(min_value=0, max_value=10_000), script=ops)
def test_seed_tracker_matches_the_wrapping_u64_model(
    limit: int, script: list[tuple[str, int, int]]
) -> None:
    t = SeedBudgetTracker.from_micros(limit)
    used = 0  # the model's u64 counter
    open_estimates: list[int] = []
    settled_log: list[int] = []  # estimates of settled reservations (for second settles)
    spent = drift = resettles = rejected = settled = underestimated = peak = overshoot = 0
    for op, a, b in script:
        if op == "reserve":
            admitted = (used + a) & MASK <= limit
            assert t.try_reserve(a) is admitted
            if admitted:
                used = (used + a) & MASK
                open_estimates.append(a)
            else:
                rejected += 1
        elif op == "settle" and open_estimates:
            est = open_estimates.pop(a % len(open_estimates))
            t.settle(est, b)
            used = (used + b - est) & MASK
            spent += b
            settled += 1
            underestimated += max(b - est, 0)
            settled_log.append(est)
        elif op == "again" and settled_log:
            est = settled_log[a % len(settled_log)]
            t.settle_again(est, b)
            used = (used + b - est) & MASK
            drift += b - est
            resettles += 1
        else:
            continue
        peak = max(peak, used)
        overshoot = max(overshoot, used - limit)
        assert t.used == used
        assert t.remaining() == max(limit - used, 0)
        assert t.used_usd() == micro_to_usd(used)
    s = t.stats()
    assert (s.limit, s.used, s.spent, s.open_count) == (limit, used, spent, len(open_estimates))
    assert s.open_reserved == sum(open_estimates)
    assert (s.rejected, s.settled, s.released) == (rejected, settled, 0)
    assert s.admitted == settled + len(open_estimates)
    assert (s.underestimated, s.peak_used, s.overshoot) == (underestimated, peak, overshoot)
    assert (t.drift, t.resettles) == (drift, resettles)
    assert t.wrapped is (spent + sum(open_estimates) + drift < 0)
    assert ("WRAPPED" in repr(t)) is t.wrapped
