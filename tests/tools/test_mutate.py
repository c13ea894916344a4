"""tools/mutate.py (`make mutate`): its session runner on a tiny module of its own, in a
subprocess (the runner forks and runs pytest; nothing of this session leaks into it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"

MODULE = "def add(a, b):\n    return a + b\n"

DRIVER = """
import json, os, sys
from pathlib import Path
sys.path[:0] = [{tools!r}, {here!r}]
import mutate
mutate.REPORT_DIR = Path({here!r})
mutants = [("add", compile(src, {path!r}, "exec")) for src in {mutants!r}]
try:
    baseline, statuses = mutate.run_in_session(
        "fakecore", [{test!r}], mutants, 10.0, 1, lambda s: None)
except SystemExit as exc:
    print(json.dumps({{"exit": str(exc)}}))
else:
    print(json.dumps({{"statuses": statuses}}))
"""


def run_session(tmp_path: Path, test_source: str, mutants: list[str]) -> dict[str, object]:
    (tmp_path / "fakecore.py").write_text(MODULE)
    test = tmp_path / "test_fakecore.py"
    test.write_text(test_source)
    driver = DRIVER.format(
        tools=str(TOOLS), here=str(tmp_path), path=str(tmp_path / "fakecore.py"),
        mutants=mutants, test=str(test),
    )  # fmt: skip
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [sys.executable, "-c", driver], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_mutant_a_test_notices_is_killed_and_an_equivalent_one_survives(
    tmp_path: Path,
) -> None:
    result = run_session(
        tmp_path,
        "from fakecore import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        [MODULE.replace("a + b", "a - b"), MODULE.replace("a + b", "b + a")],
    )
    assert result == {"statuses": ["killed", "survived"]}


def test_a_failing_baseline_names_the_test_and_its_error(tmp_path: Path) -> None:
    """The unmutated tests fail: the run stops and says which test failed and why (it used to
    say only "its tests fail without any mutant (killed)")."""
    result = run_session(
        tmp_path,
        "from fakecore import add\n\ndef test_ok():\n    assert add(1, 1) == 2\n\n"
        "def test_add_wrong():\n    assert add(2, 2) == 5\n",
        [MODULE.replace("a + b", "a - b")],
    )
    message = str(result["exit"])
    assert message.startswith("fakecore: its tests fail without any mutant (killed)")
    assert "test_fakecore.py::test_add_wrong (call)" in message
    assert "assert 4 == 5" in message
    assert "test_ok" not in message


PROPERTY = """
class Box:
    def __init__(self):
        self._v = 0

    @property
    def v(self):
        return self._v

    @v.setter
    def v(self, value):
        self._v = value
"""


def test_a_mutant_in_a_property_setter_is_patched_into_the_setter() -> None:
    """A property's getter and setter share one qualified name: the mutant of the setter
    must reach the setter (it used to patch the getter, unchanged, and stop)."""
    sys.path.insert(0, str(TOOLS))
    try:
        import mutate
    finally:
        sys.path.remove(str(TOOLS))
    module = types.ModuleType("box")
    exec(compile(PROPERTY, "box.py", "exec"), module.__dict__)
    mutant = compile(PROPERTY.replace("self._v = value", "self._v = -value"), "box.py", "exec")
    assert mutate.patch_function(module, "Box.v", mutant)
    box = module.Box()
    box.v = 3
    assert box.v == -3
