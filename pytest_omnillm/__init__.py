"""pytest-omnillm: hard LLM budgets for tests (registered through the ``pytest11`` entry point).

Mark a test with ``@pytest.mark.llm_budget("0.05")`` (or pass ``--llm-budget 0.05``) and every
OpenAI/Anthropic request it makes through ``httpx``/``httpx2`` is estimated, reserved and
refused before it would overspend. `check_tracker` property-checks any budget tracker with
the seed API against invariants I1-I5.
"""

from typing import TYPE_CHECKING, Any

from pytest_omnillm.session import LLMBudgetExceeded, LLMUnknownModel

if TYPE_CHECKING:
    from omnillm_sim.verify.seed_api import check_tracker

__all__ = ["LLMBudgetExceeded", "LLMUnknownModel", "check_tracker"]


def __getattr__(name: str) -> Any:
    # check_tracker needs Hypothesis's stateful machinery: import it when it is asked for, not
    # at every pytest start-up (the plugin is loaded by every run).
    if name == "check_tracker":
        from omnillm_sim.verify.seed_api import check_tracker

        return check_tracker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
