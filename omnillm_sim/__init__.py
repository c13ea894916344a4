"""omnillm-sim: make LLM spending testable and predictable.

The core (this package's top level) is pure Python and never reads a clock: exact money
(`usd_to_micro`), the reference `BudgetTracker`, price tables and estimators. The simulator
lives in ``omnillm_sim.sim``, the verification tools in ``omnillm_sim.verify``, and the pytest
plugin in the ``pytest_omnillm`` package.
"""

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
