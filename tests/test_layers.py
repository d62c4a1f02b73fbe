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
    drawing = ROOT / "bot" / "render" / "timeline.py"  # a matplotlib picture: its numbers are inches and dpi
    texts = ("bot.blocks", "bot.render", "bot.runs.runbook")
    builders = [p for pkg in texts for p in _files(pkg) if p not in (limits, drawing)]
    assert [hit for p in builders for hit in _limit_literals(p)] == []


# The whole product, top to bottom. A module may import from its own layer or any layer below it, never above:
# the front (server, app, listeners) calls the engine; the engine calls what runs, shows and stores; the store
# and the configuration build on actions' types; actions (WinRM, PowerShell, the database) knows none of the bot.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sandbox",),  # the simulated platform, the Slack stand-in, the demo: above the product, never below it
    ("bot.__main__", "bot.cli"),
    ("bot.server", "bot.supervisor"),
    ("bot.runtime",),  # wires the parts of one process (web, worker or both)
    ("bot.app",),
    ("bot.listeners",),
    ("bot.engine",),  # the one front door
    ("bot.scheduling", "bot.readiness", "bot.reporting"),
    ("bot.presenter",),
    ("bot.report", "bot.render", "bot.blocks", "bot.hub"),
    ("bot.runs",),
    ("bot.store", "bot.config", "bot.slack_ids"),
    ("bot.errors", "bot.times"),
    ("actions",),
)
# The one way up: `failover-bot simulate` and `failover-bot demo` start the sandbox, imported only when asked.
UPWARD_ALLOWED = {("bot.cli", "sandbox")}


def _layer_of(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if _within(module, prefixes):
            return rank
    return None


def _product_modules() -> list[tuple[Path, str]]:
    return [(path, _module_name(path)) for top in ("bot", "actions", "sandbox") for path in _files(top)]


def test_every_product_module_has_a_layer() -> None:
    assert [name for _, name in _product_modules() if name not in ("bot",) and _layer_of(name) is None] == []


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for path, name in _product_modules():
        mine = _layer_of(name)
        if mine is None:
            continue
        for line, module in _runtime_imports(path):
            theirs = _layer_of(module)
            if theirs is None or theirs >= mine:
                continue
            owner = next(p for p in LAYERS[mine] if _within(name, (p,)))
            target = next(p for p in LAYERS[theirs] if _within(module, (p,)))
            if (owner, target) not in UPWARD_ALLOWED:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module} (a layer above)")
    assert upward == []


def test_the_cli_starts_the_sandbox_only_inside_the_commands_that_ask_for_it() -> None:
    tree = ast.parse((ROOT / "bot" / "cli.py").read_text(encoding="utf-8"))
    top_level = [node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom) and not node.level] + [
        alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    ]
    assert [m for m in top_level if _within(m, ("sandbox",))] == []


def _group(module: str) -> str | None:
    for prefixes in LAYERS:
        for prefix in prefixes:
            if _within(module, (prefix,)):
                return prefix
    return None


def test_no_import_cycle_between_parts_of_the_product() -> None:
    edges: dict[str, set[str]] = {}
    for path, name in _product_modules():
        mine = _group(name)
        for _, module in _runtime_imports(path):
            theirs = _group(module)
            if mine and theirs and theirs != mine:
                edges.setdefault(mine, set()).add(theirs)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            for nxt in edges.get(here, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and reaches(b, a))
    assert cycles == []


def test_the_contract_catches_an_import_from_above(tmp_path: Path) -> None:
    """The layer check is not vacuous: a store module importing the engine is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("from bot.engine import RunEngine\n", encoding="utf-8")
    found = [module for _, module in _runtime_imports(probe, "bot.store.probe")]
    layer_of_probe = _layer_of("bot.store.probe")
    assert layer_of_probe is not None
    assert any((_layer_of(m) or 99) < layer_of_probe for m in found)
