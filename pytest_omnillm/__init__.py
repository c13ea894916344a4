"""pytest-omnillm: hard LLM budgets for tests (registered through the ``pytest11`` entry point)."""

__all__: list[str] = []
