"""The run's rules live once (bot/runs/rules.py) and the Block Kit builders import no database, Slack or WinRM code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# actions' light modules (errors, hosts, guid, the registry's table) are what bot.errors and bot.config build on;
# the ones that open WinRM or ODBC connections are heavy.
HEAVY = (
    "sqlalchemy",
    "pyodbc",
    "winrm",
    "requests",
    "slack_sdk",
    "actions.winrm",
    "actions.preflight",
    "actions.storage_platform_db",
    "bot.runs.worker",
    "bot.runs.service",
)


def _loaded_after(modules: list[str]) -> list[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"heavy = {HEAVY!r}\n"
        + "print('\\n'.join(sorted(k for k in sys.modules if any(k == h or k.startswith(h + '.') for h in heavy))))\n"
    )
    command = [sys.executable, "-c", code]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.split()


@pytest.mark.parametrize(
    "module",
    [
        "bot.blocks.cards",
        "bot.blocks.modals",
        "bot.blocks.home",
        "bot.blocks.render",
        "bot.blocks.text",
        "bot.runs.rules",
        "bot.runs.snapshot",
    ],
)
def test_pure_modules_import_no_database_slack_or_winrm(module: str) -> None:
    assert _loaded_after([module]) == []


def _defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


RULES = {"bot_executes", "waits_on_people", "waits_on_approvers", "_waits_on_approvers", "approvers_who_can_act"}


def test_each_rule_is_written_once() -> None:
    """The predicates are defined in bot/runs/rules.py and nowhere else in the product."""
    where: dict[str, list[str]] = {}
    for path in sorted((ROOT / "bot").rglob("*.py")):
        for name in _defined_functions(path) & (RULES | {"mentions"}):
            where.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert where.pop("mentions", []) == ["bot/runs/rules.py"]
    for name, files in where.items():
        assert files == ["bot/runs/rules.py"], (name, files)


def test_rules_agree_with_the_state_table() -> None:
    from bot.runs.machine import StepState
    from bot.runs.rules import waits_on_people

    class Step:
        def __init__(self, kind: str, action: str = "") -> None:
            self.kind, self.action = kind, action

    class View:
        def __init__(self, state: str, step: Step) -> None:
            self.state, self.step = state, step

    bot_step, manual = Step("host", "stop_service"), Step("manual", "")
    for state in StepState:
        people = state in (StepState.AWAITING_APPROVAL, StepState.FAILED, StepState.UNKNOWN)
        assert waits_on_people(View(state, bot_step)) is people  # type: ignore[arg-type]
        expected = people or state == StepState.APPROVED
        assert waits_on_people(View(state, manual)) is expected  # type: ignore[arg-type]
