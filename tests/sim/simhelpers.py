"""Shared constants and helpers of the simulator tests (imported as ``simhelpers``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
SCENARIOS = PROJECT / "scenarios"
AZURE_TRACE = PROJECT.parent / "shared" / "data" / "AzureLLMInferenceTrace_conv.csv"

# A gateway with no binding limit: one key, huge RPM and in-flight caps, no budget limit.
UNLIMITED: dict[str, Any] = {
    "keys": [{"label": "k", "rpm": 10**9, "tpm": 10**12}],
    "gateway": {"request_timeout": "1000h"},
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base`` (tables merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def trace_workload(path: Path) -> dict[str, Any]:
    """A ``[workload]`` table replaying the generic CSV written by the ``csv_trace`` fixture."""
    return {
        "kind": "trace",
        "trace": {
            "path": str(path),
            "format": "csv",
            "columns": {"time": "t", "prompt_tokens": "prompt", "output_tokens": "output"},
        },
    }
