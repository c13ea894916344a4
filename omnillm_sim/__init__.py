"""omnillm-sim: make LLM spending testable and predictable.

The core (this package's top level) is pure Python and never reads a clock: exact money
(`usd_to_micro`), the reference `BudgetTracker`, price tables and estimators. The simulator
lives in ``omnillm_sim.sim``, the verification tools in ``omnillm_sim.verify``, and the pytest
plugin in the ``pytest_omnillm`` package.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnillm_sim.budget import BudgetStats, BudgetTracker, Reservation
    from omnillm_sim.errors import (
        BudgetExceeded,
        ConfigError,
        InvalidValueError,
        InvariantViolation,
        OmniLLMError,
        ReservationStateError,
        ScenarioError,
        TraceError,
        UnknownModelError,
    )
    from omnillm_sim.estimate import Estimate, EstimateRequest, get_estimator
    from omnillm_sim.money import MicroDollar, format_usd, micro_to_usd, usd_to_micro
    from omnillm_sim.pricing import ModelPrice, PriceTable, Usage, catalogue

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "BudgetStats",
    "BudgetTracker",
    "ConfigError",
    "Estimate",
    "EstimateRequest",
    "InvalidValueError",
    "InvariantViolation",
    "MicroDollar",
    "ModelPrice",
    "OmniLLMError",
    "PriceTable",
    "Reservation",
    "ReservationStateError",
    "ScenarioError",
    "TraceError",
    "UnknownModelError",
    "Usage",
    "__version__",
    "catalogue",
    "format_usd",
    "get_estimator",
    "micro_to_usd",
    "usd_to_micro",
]

# Every pytest run imports this package (the pytest plugin uses its money and error types), so
# its public names load on first use: ``from omnillm_sim import X`` works as usual.
_HOMES = {
    "BudgetStats": "budget",
    "BudgetTracker": "budget",
    "Reservation": "budget",
    "Estimate": "estimate",
    "EstimateRequest": "estimate",
    "get_estimator": "estimate",
    "MicroDollar": "money",
    "format_usd": "money",
    "micro_to_usd": "money",
    "usd_to_micro": "money",
    "ModelPrice": "pricing",
    "PriceTable": "pricing",
    "Usage": "pricing",
    "catalogue": "pricing",
}


def __getattr__(name: str) -> Any:
    import importlib

    home = _HOMES.get(name, "errors" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"omnillm_sim.{home}"), name)
    globals()[name] = value
    return value
