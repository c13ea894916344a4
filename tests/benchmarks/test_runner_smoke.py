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
    for figure in data["figures"]:
        if figure["skipped"]:  # only a figure whose data file is absent may skip
            assert "absent" in figure["note"]
            continue
        assert figure["ours"] > 0
        assert isinstance(figure["passed"], bool)
        if figure["baseline"] is not None:
            assert abs(figure["ratio"] - figure["ours"] / figure["baseline"]) < 1e-9
        # Each figure's name appears in the printed table.
        assert figure["name"] in proc.stdout
