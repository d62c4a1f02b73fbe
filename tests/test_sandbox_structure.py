"""The sandbox's shape: the Slack stand-in stands for Slack alone, its modules read in one sitting, and the
tests find ../shared through one definition."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT

MAX_LINES = 400
PATH_NAMES = {"SHARED", "SPEC", "EXAMPLE_CONFIG", "KB_FILE"}  # ../shared and what is in it
EXEMPT = (ROOT / "tests" / "support" / "paths.py", Path(__file__).resolve())  # the definition, and this check


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if ".venv" not in p.parts)


def _imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


SANDBOX = _modules(ROOT / "sandbox")
STAND_IN = [p for p in SANDBOX if "slack_api" in p.parts or p.stem == "slack_api"]
# Still longer than one sitting; each must leave this list once it is split (the test below says when).
TOO_LONG = {"sandbox/simulator/wsman.py"}


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("path", STAND_IN, ids=lambda p: p.name)
def test_the_slack_stand_in_imports_nothing_of_the_bot(path: Path) -> None:
    """It keeps its own copy of Slack's limits: importing the bot's would check the bot against itself."""
    product = [m for m in _imported_modules(path) if m.split(".")[0] in ("bot", "actions")]
    assert not product, f"{path.relative_to(ROOT)} imports {product}"


@pytest.mark.parametrize("path", SANDBOX, ids=lambda p: str(p.relative_to(ROOT)))
def test_sandbox_modules_read_in_one_sitting(path: Path) -> None:
    name = path.relative_to(ROOT).as_posix()
    if name in TOO_LONG:
        assert _lines(path) > MAX_LINES, f"{name} is short enough now: take it off TOO_LONG"
    else:
        assert _lines(path) <= MAX_LINES, f"{name} has {_lines(path)} lines (more than {MAX_LINES})"


@pytest.mark.parametrize("path", [p for p in _modules(ROOT / "tests") if p not in EXEMPT], ids=lambda p: p.name)
def test_the_tests_find_shared_through_one_definition(path: Path) -> None:
    """../shared, the spec, the example config and the KB come from tests/support/paths.py, never recomputed."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value != "shared" and not node.value.startswith("shared/"), (
                f"{path.name}:{node.lineno} builds a path to shared: import it from tests.support.paths"
            )
        elif isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            assert not names & PATH_NAMES, f"{path.name}:{node.lineno} defines {names & PATH_NAMES} again"
        elif isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("tests")):
            names = {a.name for a in node.names} & PATH_NAMES
            assert not names or node.module == "tests.support.paths", (
                f"{path.name}:{node.lineno} imports {names} from {node.module}, not tests.support.paths"
            )
