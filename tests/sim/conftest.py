"""Fixtures of the simulator tests: small scenarios from dicts, traces written on the spot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from simhelpers import merge

from omnillm_sim.sim.scenario import Scenario, scenario_from_dict


@pytest.fixture
def make_scenario(tmp_path: Path) -> Callable[..., Scenario]:
    """Build a checked `Scenario` from a dict (relative paths resolve against tmp_path)."""

    def build(data: dict[str, Any], **extra: Any) -> Scenario:
        return scenario_from_dict(merge(data, extra), source="test.toml", base=tmp_path)

    return build


@pytest.fixture
def csv_trace(tmp_path: Path) -> Callable[..., Path]:
    """Write a generic CSV trace (time s, prompt tokens, output tokens) and return its path."""

    def write(rows: Sequence[tuple[float, int, int]], name: str = "trace.csv") -> Path:
        path = tmp_path / name
        lines = ["t,prompt,output"] + [f"{t!r},{p},{o}" for t, p, o in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write
