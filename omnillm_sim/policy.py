"""Gateway policies: every behaviour where omnillm 0.1.5 and the safe gateway differ.

A `Policy` is a frozen record of switches the `Gateway` obeys; `POLICIES` names the two
complete ones. Each switch of ``omnillm-0.1.5`` reproduces a behaviour of the real gateway
(reference sections in brackets); ``safe`` fixes it:

=========================  ===============================  ==================================
switch                     ``omnillm-0.1.5``                ``safe``
=========================  ===============================  ==================================
estimator                  bytes/4 + max_output at the      prompt tokens x input rate +
                           input rate, not a bound [2]      max_output x output rate (bound)
default_strategy           ``omnillm``: random start, first ``least-loaded``: sees every key
                           fit, attempt cap 5 [3]
rate_in_selection          RPM checked after the budget,    a key whose RPM window (or token
                           on the chosen key only; a full   bucket) is full is skipped while
                           window rejects locally [2, 8.5]  choosing
token_buckets              no per-minute token limit [8.6]  ``tokens_per_minute`` enforced
breaker                    count / cooldown, no half-open   closed/open/half-open, bounded
                           [4]                              probes
forbidden_kills_key        403 kills the key forever [4]    only 401 kills; 403 is a failure
client_errors_count        400/404/... feed the breaker [4] only 408, 5xx, timeouts, drops do
integer_retry_after        ``retry-after`` read as whole    fractional seconds honoured;
                           seconds (``"2.0"``, ``"1e1"``,   60 s if none or unreadable
                           ``"-1"`` -> 60 s) [2, 8.8]
wall_clock_ms              429 deadlines on omnillm's       exact (integer microseconds)
                           millisecond wall clock,
                           truncated [4]
seed_budget_limit          limit built as ``(usd * 1e6) as  the exact limit
                           u64``: $0.0157 -> 15,699 µ$ [5]
stream_quirks              a dropped stream is never        every stream settles exactly once
                           settled; a cancel after
                           ``Completed`` settles twice
                           [8.1, 8.2]
unknown_usage              cancelled/timed-out calls refund the estimate is charged: the
                           fully; streams charge the prompt provider may have billed up to it
                           heuristic [2, 8.10]
return_slot_on_429         a 429 keeps its RPM slot [3]     the refused request's slot is
                                                            given back
handles                    seed ``try_reserve``/``settle``  exactly-once ``Reservation``
                           (RPM refusal = settle(est, 0))   handles; nothing reserved on a
                                                            refusal
=========================  ===============================  ==================================

Both settle with no limit guard (a call that happened cost what it cost); the gateway
reports each settlement's ``underestimate`` and the budget's ``overshoot``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from omnillm_sim.breaker import BREAKERS
from omnillm_sim.errors import ConfigError
from omnillm_sim.estimate import ESTIMATORS
from omnillm_sim.keypool import STRATEGIES
from omnillm_sim.money import MICROS_PER_USD, MicroDollar, seed_usd_to_micro

__all__ = ["OMNILLM_0_1_5", "POLICIES", "SAFE", "Policy", "get_policy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The switches of a gateway policy (see the module docstring's table).

    Raises:
        ConfigError: an unknown estimator, strategy or breaker name.
    """

    name: str
    estimator: str
    default_strategy: str
    breaker: str
    rate_in_selection: bool
    token_buckets: bool
    forbidden_kills_key: bool
    client_errors_count: bool
    integer_retry_after: bool
    unknown_usage: Literal["omnillm", "estimate"]
    return_slot_on_429: bool
    handles: bool
    description: str = ""
    wall_clock_ms: bool = False
    seed_budget_limit: bool = False
    stream_quirks: bool = False

    def budget_limit(self, limit: MicroDollar) -> MicroDollar:
        """The limit a gateway of this policy enforces for a configured ``limit`` (µ$).

        ``seed_budget_limit``: omnillm's ``(usd * 1e6) as u64`` of the limit as an ``f64`` of
        USD, so $0.0157 is 15,699 µ$ ("the limit as omnillm sees it"); otherwise exact.
        """
        if self.seed_budget_limit:
            return seed_usd_to_micro(limit / MICROS_PER_USD)
        return limit

    def __post_init__(self) -> None:
        for field, value, known in (
            ("estimator", self.estimator, ESTIMATORS),
            ("default_strategy", self.default_strategy, STRATEGIES),
            ("breaker", self.breaker, BREAKERS),
        ):
            if value not in known:
                raise ConfigError(field, value, f"must be one of {', '.join(sorted(known))}")
        if self.unknown_usage not in ("omnillm", "estimate"):
            raise ConfigError("unknown_usage", self.unknown_usage, "must be omnillm or estimate")


OMNILLM_0_1_5 = Policy(
    name="omnillm-0.1.5",
    estimator="omnillm",
    default_strategy="omnillm",
    breaker="faithful",
    rate_in_selection=False,
    token_buckets=False,
    forbidden_kills_key=True,
    client_errors_count=True,
    integer_retry_after=True,
    unknown_usage="omnillm",
    return_slot_on_429=False,
    handles=False,
    description="omnillm 0.1.5 as it is, quirks included",
    wall_clock_ms=True,
    seed_budget_limit=True,
    stream_quirks=True,
)

SAFE = Policy(
    name="safe",
    estimator="upper-bound",
    default_strategy="least-loaded",
    breaker="safe",
    rate_in_selection=True,
    token_buckets=True,
    forbidden_kills_key=False,
    client_errors_count=False,
    integer_retry_after=False,
    unknown_usage="estimate",
    return_slot_on_429=True,
    handles=True,
    description="upper-bound estimates, rate-aware selection, half-open breaker",
)

POLICIES: dict[str, Policy] = {OMNILLM_0_1_5.name: OMNILLM_0_1_5, SAFE.name: SAFE}
"""The complete policies by name."""


def get_policy(policy: str | Policy) -> Policy:
    """A policy by name (a `Policy` passes through, for ablations with ``replace``).

    Raises:
        ConfigError: unknown policy name.
    """
    if isinstance(policy, Policy):
        return policy
    try:
        return POLICIES[policy]
    except (KeyError, TypeError):
        raise ConfigError(
            "policy", policy, f"must be one of {', '.join(sorted(POLICIES))}"
        ) from None
