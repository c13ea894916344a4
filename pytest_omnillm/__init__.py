"""pytest-omnillm: hard LLM budgets for tests (registered through the ``pytest11`` entry point).

Mark a test with ``@pytest.mark.llm_budget("0.05")`` (or pass ``--llm-budget 0.05``) and every
OpenAI/Anthropic request it makes through ``httpx``/``httpx2`` is estimated, reserved and
refused before it would overspend. `check_tracker` property-checks any budget tracker with
the seed API against invariants I1-I5.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnillm_sim.verify.seed_api import check_tracker
    from pytest_omnillm.session import LLMBudgetExceeded, LLMUnknownModel

__all__ = ["LLMBudgetExceeded", "LLMUnknownModel", "check_tracker"]


def __getattr__(name: str) -> Any:
    # Every pytest run imports this package (the plugin lives in it): its public names load
    # when first asked for. check_tracker needs Hypothesis's stateful machinery; the errors
    # need the budget session and its price tables.
    if name == "check_tracker":
        from omnillm_sim.verify.seed_api import check_tracker

        return check_tracker
    if name in ("LLMBudgetExceeded", "LLMUnknownModel"):
        from pytest_omnillm import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
