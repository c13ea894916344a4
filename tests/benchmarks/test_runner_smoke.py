"""The benchmark runner works end to end at tiny sizes (speed itself is never asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_runner_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert "figure" in proc.stdout and "ratio" in proc.stdout
    data = json.loads(out.read_text())
    assert data["size"] == "smoke" and data["machine"]["cores"] >= 1
    names = [f["name"] for f in data["figures"]]
    assert len(names) == len(set(names)) >= 2
    # The load average is printed at the start and the end, and kept with the figures.
    assert "load average at start" in proc.stdout
    assert "at end" in proc.stdout.splitlines()[-1]
    assert set(data["load_average"]) == {"start", "end"}
    # Nothing is skipped quietly: the ingest figure runs on a generated trace everywhere.
    assert any(f["name"].startswith("trace ingest") and not f["skipped"] for f in data["figures"])
    for figure in data["figures"]:
        if figure["skipped"]:  # only the plugin figures may skip, without an SDK
            assert figure["name"].startswith("pytest plugin") and figure["note"]
            continue
        assert figure["ours"] > 0
        if figure["ratio"] is not None and figure["reps"] > 1:  # a ratio comes with its spread
            low, high = figure["spread"]
            assert 0 < low <= high
        assert isinstance(figure["passed"], bool)
        if figure["baseline"] is not None:
            assert abs(figure["ratio"] - figure["ours"] / figure["baseline"]) < 1e-9
        # Each figure's name appears in the printed table.
        assert figure["name"] in proc.stdout
