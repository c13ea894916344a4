"""Fixtures of the plugin suite: pytester, a fake OpenAI/Anthropic server, a price file.

The SDKs and HTTP stacks are imported (and their lazy parts loaded) here, once: in-process
pytester runs drop the modules first imported during the run, and a module imported again
later has new exception classes that the already-imported clients do not catch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpcore  # noqa: F401
import httpcore2  # noqa: F401
import httpx
import httpx2
import openai
import pytest
from fakellm import FakeLLM
from harness import Harness

for _client in (
    httpx.Client(),
    httpx2.Client(),
    openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9"),
    anthropic.Anthropic(api_key="k", base_url="http://127.0.0.1:9"),
):
    _client.close()

# Closed-form prices for assertions: $1 per million input tokens, $2 per million output
# tokens, cache reads $0.10 (so 1 token = 1, 2 and 0.1 micro-dollars).
PRICES_TOML = """\
[models."test-model"]
input = "1.00"
output = "2.00"
cache_read = "0.10"

[models."free-input"]
input = "0"
output = "1.00"

[models."test-embed"]
input = "0.50"
output = "0"
"""


# Plugins of the dev extra, known to run well inside in-process pytester runs.
_IN_PROCESS_SAFE = frozenset(
    {"omnillm-sim", "pytest-xdist", "pytest-cov", "pytest-httpx", "respx", "anyio", "hypothesis"}
)


def _foreign_plugins(config: pytest.Config) -> set[str]:
    names = set()
    for _plugin, dist in config.pluginmanager.list_plugin_distinfo():
        names.add(str(dist.metadata["name"]).lower())
    return names - _IN_PROCESS_SAFE


@pytest.fixture
def pytester(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> pytest.Pytester:
    """pytester whose ``runpytest`` leaves pytest-randomly out, and runs in a subprocess as soon
    as a plugin outside the dev extra is installed.

    In-process runs share ``sys.modules`` with this session, and break as soon as another
    installed plugin imports a module during the run (pytest-randomly reseeding numpy: "cannot
    load module more than once"). A subprocess costs about a second of start-up per run, so
    the dev environment (only plugins known to be safe) keeps in-process runs. The inner runs'
    outcomes depend on test order (a session budget refuses the later test), so
    pytest-randomly, if installed, is kept out of them either way.
    """
    inner = (
        pytester.runpytest_subprocess
        if _foreign_plugins(request.config)
        else pytester.runpytest_inprocess
    )

    def run(*args: str | os.PathLike[str], **kwargs: Any) -> pytest.RunResult:
        return inner("-p", "no:randomly", *args, **kwargs)

    monkeypatch.setattr(pytester, "runpytest", run)
    return pytester


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    """The fake server, reset for this test."""
    fake_llm.reset()
    return fake_llm


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES_TOML)
    return path


@pytest.fixture
def harness(prices_file: Path) -> Iterator[Harness]:
    from pytest_omnillm import intercept

    h = Harness(prices_file)
    h.begin()
    intercept.push_handler(h.session)
    try:
        yield h
    finally:
        intercept.pop_handler(h.session)
