"""The import contract between the bot's layers, read from the source (AST): server → app → listeners → engine
→ (blocks, store, actions); listeners never reach around the engine; the Block Kit builders stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import a module executes (at module level or inside functions), ``if TYPE_CHECKING:`` excluded."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.found: list[tuple[int, str]] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(node.lineno, alias.name) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, node.module] if node.module else base)
        else:
            module = node.module or ""
        self.found.append((node.lineno, module))
        self.found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]  # `from bot import store`


def _runtime_imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every import executed when the module at ``path`` runs."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    reader = _Imports(package)
    reader.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return reader.found


def _files(package: str) -> list[Path]:
    folder = ROOT.joinpath(*package.split("."))
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _breaches(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _files(package)
        for line, module in _runtime_imports(path)
        if _within(module, forbidden)
    ]


LISTENERS_NEVER = ("bot.store", "bot.runs.worker", "bot.runs.service", "actions", "sqlalchemy", "pyodbc")
# What listeners may use of the bot: the engine (the one front door), the Block Kit builders, Slack's ids, errors.
BLOCKS_NEVER = ("sqlalchemy", "pyodbc", "bot.store", "bot.runs.worker", "bot.runs.service", "actions", "slack_sdk")
LISTENERS_MAY = ("bot.engine", "bot.blocks", "bot.slack_ids", "bot.errors", "bot.listeners")


def test_the_contract_reader_sees_imports_inside_functions_and_skips_type_checking_blocks(tmp_path: Path) -> None:
    sample = tmp_path / "probe.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bot.store.db import Store\n"
        "def f():\n    from bot.runs import worker\n    import actions.winrm\n"
        "from . import common\n",
        encoding="utf-8",
    )
    found = {module for _, module in _runtime_imports(sample, "bot.listeners.probe")}
    assert "bot.store.db" not in found
    assert {"bot.runs.worker", "actions.winrm", "bot.listeners.common"} <= found


def test_listeners_never_reach_around_the_engine() -> None:
    assert _breaches("bot.listeners", LISTENERS_NEVER) == []


def test_listeners_use_only_the_engine_blocks_slack_ids_and_errors_of_the_bot() -> None:
    others = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _files("bot.listeners")
        for line, module in _runtime_imports(path)
        if _within(module, ("bot",)) and not _within(module, LISTENERS_MAY)
    ]
    assert others == []


def test_the_command_line_reads_runs_through_the_engine() -> None:
    assert _breaches("bot.cli", ("bot.store", "bot.runs.service", "bot.runs.worker", "sqlalchemy")) == []


def test_no_module_is_named_like_a_top_level_package_it_would_shadow() -> None:
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    shadows = [str(p.relative_to(ROOT)) for p in ROOT.joinpath("bot").rglob("*.py") if p.stem in top]
    assert shadows == []


@pytest.mark.parametrize("module", ["bot.blocks"])
def test_block_kit_builders_are_pure(module: str) -> None:
    assert _breaches(module, BLOCKS_NEVER) == []


SLACK_LIMITS = {3000, 2900, 2000, 150, 100, 75, 50, 30, 25, 24, 10}  # as bot/blocks/limits.py names them


def _limit_literals(path: Path) -> list[str]:
    """Slack limits written as numbers where a builder cuts text or lists (slices and call arguments)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        bounds: list[ast.expr | None] = []
        if isinstance(node, ast.Slice):
            bounds = [node.upper]
        elif isinstance(node, ast.Call):
            bounds = [*node.args, *(k.value for k in node.keywords)]
        for bound in bounds:
            if isinstance(bound, ast.Constant) and type(bound.value) is int and bound.value in SLACK_LIMITS:
                found.append(f"{path.relative_to(ROOT)}:{bound.lineno} uses {bound.value}")
    return found


def test_block_kit_limits_live_once_in_the_bot() -> None:
    limits = ROOT / "bot" / "blocks" / "limits.py"
    assert limits.exists()
    builders = [p for p in _files("bot.blocks") if p != limits]
    assert [hit for p in builders for hit in _limit_literals(p)] == []
