"""pytest-omnillm: hard LLM budgets for tests (registered through the ``pytest11`` entry point).

Mark a test with ``@pytest.mark.llm_budget("0.05")`` (or pass ``--llm-budget 0.05``) and every
OpenAI/Anthropic request it makes through ``httpx``/``httpx2`` is estimated, reserved and
refused before it would overspend. `check_tracker` property-checks any budget tracker with
the seed API against invariants I1-I5.
"""

from omnillm_sim.verify.seed_api import check_tracker
from pytest_omnillm.session import LLMBudgetExceeded, LLMUnknownModel

__all__ = ["LLMBudgetExceeded", "LLMUnknownModel", "check_tracker"]
