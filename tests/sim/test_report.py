"""Reports: files, charts, deterministic JSON, atomic writes, lazy matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from simhelpers import PROJECT, SCENARIOS

from omnillm_sim.report import plots
from omnillm_sim.report.writer import atomic_write, write_compare_report, write_run_report
from omnillm_sim.sim.engine import run
from omnillm_sim.sim.scenario import load_scenario

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_run():  # type: ignore[no-untyped-def]
    return run(load_scenario(SCENARIOS / "budget-exhaustion.toml", {"duration": "3m",
                                                                      "budget.limit": "6.00"}))


def test_run_report_has_summaries_and_titled_charts(small_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = write_run_report(small_run, tmp_path / "r")
    names = sorted(p.name for p in paths)
    assert names == ["keys.png", "latency_cdf.png", "rejections.png", "spend.png",
                     "summary.json", "summary.md"]
    for p in paths:
        if p.suffix == ".png":
            data = p.read_bytes()
            assert data.startswith(PNG) and len(data) > 10_000
    md = (tmp_path / "r" / "summary.md").read_text()
    for chart in ("spend.png", "rejections.png", "latency_cdf.png", "keys.png"):
        assert f"]({chart})" in md
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["budget"]["limit"] == {"micros": 6_000_000, "usd": "$6.000000"}
    assert summary["requests"]["rejections_by_reason"]["BUDGET"] > 0
    assert summary["requests"]["arrivals"] == len(small_run.records)
    assert summary["invariants"]["checked"] is True
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]  # no staging left


def test_charts_have_titles_axis_labels_and_units(small_run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_save = plots._save

    def spy(fig, path):  # type: ignore[no-untyped-def]
        for ax in fig.axes:
            if ax.get_images() or ax.lines or ax.patches or ax.collections:
                seen.append((path.name, ax.get_xlabel(), ax.get_ylabel()))
        seen.append((path.name, "title", fig._suptitle.get_text() if fig._suptitle else
                     " ".join(ax.get_title() for ax in fig.axes)))
        real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    write_run_report(small_run, tmp_path / "r")
    titles = {name: text for name, kind, text in seen if kind == "title"}
    assert set(titles) == {"spend.png", "rejections.png", "latency_cdf.png", "keys.png"}
    assert all(titles.values())
    labelled = [(n, x, y) for n, x, y in seen if x != "title"]
    assert labelled and all(y for _, _, y in labelled)
    assert all("(s)" in x for _, x, _ in labelled if x), "time axes state their unit"
    assert any("(USD)" in y for _, _, y in labelled)


def test_interrupted_report_leaves_the_previous_one_intact(small_run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r"
    write_run_report(small_run, out, charts=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_keys", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_run_report(small_run, out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # no partial file, no staging folder, old report unchanged


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.txt"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_compare_report_puts_policies_side_by_side(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "underestimate.toml", {"duration": "2m"})
    results = [run(scenario.with_policy(p)) for p in ("omnillm-0.1.5", "safe")]
    write_compare_report(results, tmp_path / "c")
    md = (tmp_path / "c" / "summary.md").read_text()
    assert "| metric | `omnillm-0.1.5` | `safe` |" in md
    assert "finding: budget overshoot" in md
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert "keys-omnillm-0.1.5.png" in names and "keys-safe.png" in names
    data = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert data["runs"]["omnillm-0.1.5"]["budget"]["overshoot"]["micros"] > 0
    assert data["runs"]["safe"]["budget"]["overshoot"]["micros"] == 0


def test_only_plots_imports_matplotlib() -> None:
    offenders = []
    for path in (PROJECT / "omnillm_sim").rglob("*.py"):
        if path.name != "plots.py" and "import matplotlib" in path.read_text():
            offenders.append(path)
    assert offenders == []
    code = ("import sys, omnillm_sim.cli, omnillm_sim.sim, omnillm_sim.report, "
            "omnillm_sim.report.plots; assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT)
