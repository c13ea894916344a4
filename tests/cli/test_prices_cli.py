import subprocess
import sys

import pytest

from omnillm_sim.cli import main


def test_prices_from_both_catalogues(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "gpt-4o"]) == 0
    out = capsys.readouterr().out
    assert "gpt-4o" in out and "2.5" in out and "10" in out
    assert main(["prices", "gpt-4o", "--catalogue", "omnillm-0.1.5"]) == 0
    out = capsys.readouterr().out
    assert "omnillm-0.1.5" in out and " 5 " in out and " 15 " in out


def test_prices_unknown_model_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "no-such-model-xyz"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model-xyz" in err and "fallback" in err


def test_console_script_help_has_examples() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "omnillm_sim.cli", "prices", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "omnillm-sim prices gpt-4o" in out
