"""actions is the product's execution layer on its own: it imports nothing from bot, has no import cycle and no
import hidden in a function, never reads the environment, and each rule it owns has one home the bot uses."""

from __future__ import annotations

import ast
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions import guid, registry, settings_xml
from actions.backup_server import BackupServerRow, row_preview
from actions.hosts import WinRMCredentials
from bot.config import load_config
from bot.runs import runbook
from bot.store import audit
from tests.support.platform import write_config

ROOT = Path(__file__).resolve().parents[1]
ACTIONS = ROOT / "actions"
GUID = "a40b132e-b8b1-4316-b1f2-c27d301ad2e5"
MASKED = "********-****-****-****-c27d301ad2e5"


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(ACTIONS.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against the importing package
        base = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
        return [".".join([*base, node.module] if node.module else base)]
    return [node.module or ""]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (types only, never run)."""
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return lines


def test_no_module_under_actions_imports_bot() -> None:
    found = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found += [f"{module}:{node.lineno} imports {name}" for name in _imported(node, module)
                          if name == "bot" or name.startswith("bot.")]  # fmt: skip
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module",
                "__import__",
            ):
                found.append(f"{module}:{node.lineno} imports dynamically")
    assert found == []


def test_actions_loads_in_an_interpreter_without_bot() -> None:
    modules = sorted(name for name, _ in _modules())
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print(sorted(m for m in sys.modules if m == 'bot' or m.startswith('bot.')))\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_imports_are_at_module_level_and_form_no_cycle() -> None:
    """A function-level import once hid the preflight <-> registry cycle; neither may come back."""
    graph: dict[str, set[str]] = {}
    hidden = []
    for module, tree in _modules():
        typing_only = _type_checking_only(tree)
        top = {id(n) for n in tree.body}
        edges = graph.setdefault(module, set())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno in typing_only:
                continue
            if id(node) not in top:
                hidden.append(f"{module}:{node.lineno}")
            names = _imported(node, module)
            if isinstance(node, ast.ImportFrom) and node.module == "actions":  # from actions import remote
                names = [f"actions.{alias.name}" for alias in node.names]
            edges |= {n for n in names if n.startswith("actions.")}
    assert hidden == []

    def cycle_from(start: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                return (*path, nxt)
            if nxt not in path:
                found = cycle_from(start, (*path, nxt))
                if found:
                    return found
        return None

    cycles = [c for m in graph if (c := cycle_from(m, (m,)))]
    assert cycles == []


def test_actions_never_read_the_environment() -> None:
    """Credentials arrive resolved from the configuration (bot.config reads os.environ once, at load)."""
    found = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                found.append(f"{module}:{node.lineno} {node.attr}")
    assert found == []


def test_credentials_are_resolved_at_load_and_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILOVER_WINRM_USER", "bot-user")
    monkeypatch.setenv("FAILOVER_WINRM_PASSWORD", "pw-that-must-not-show")
    monkeypatch.setenv("FAILOVER_ODBC_SITE_A", "Driver=SQLite3;Database=/x.db;PWD=odbc-secret")
    config = load_config(write_config(tmp_path / "cfg"))
    monkeypatch.setenv("FAILOVER_WINRM_PASSWORD", "changed-later")  # read once: later changes are not seen
    host = config.host("as-a")
    assert host.winrm.credentials == WinRMCredentials("bot-user", "pw-that-must-not-show")
    assert config.sites["site-a"].odbc_connection_string.endswith("PWD=odbc-secret")
    shown = repr(config) + repr(host) + repr(config.sites["site-a"])
    assert "pw-that-must-not-show" not in shown and "odbc-secret" not in shown and "changed-later" not in shown


# --------------------------------------------------------------------------- one home for each rule


def _definitions(root: Path, names: set[str]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # a migration keeps what it wrote when it was written
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in names:
                where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names:
                    where.setdefault(target.id, []).append(str(path.relative_to(ROOT)))
    return where


def test_guid_masking_task_file_and_the_registry_are_defined_once_in_the_product() -> None:
    """The simulated AccountServer (sandbox) keeps its own TASK_FILE: it stands for Redstor, not for the bot."""
    rules = {"mask_guid", "mask_guids", "TASK_FILE", "REGISTRY"}
    where = _definitions(ACTIONS, rules)
    for name, files in _definitions(ROOT / "bot", rules).items():
        where.setdefault(name, []).extend(files)
    assert where == {
        "mask_guid": ["actions/guid.py"],
        "mask_guids": ["actions/guid.py"],
        "TASK_FILE": ["actions/remote.py"],
        "REGISTRY": ["actions/registry.py"],
    }


def test_every_masked_guid_the_bot_shows_is_the_one_form() -> None:
    braced = "{" + GUID.upper() + "}"
    for written in (GUID, braced, uuid.UUID(GUID)):
        assert guid.mask_guid(written) == MASKED
    # the audit log, the plan text, a Settings.xml change and the database row preview all show MASKED
    assert audit.scrub({"detail": f"read {braced} and {GUID}"}) == {"detail": f"read {MASKED} and {MASKED}"}
    old = f"<Settings><ServerGuid>{braced}</ServerGuid><IsSlave>False</IsSlave></Settings>".encode()
    change = settings_xml.settings_change(old, old.replace(b"False", b"True"), filename="as-a:Settings.xml")
    assert f"ServerGuid {MASKED};" in change and GUID not in change.lower()
    row = BackupServerRow(guid=braced, ip="10.0.0.1", online=False, role="SlaveAccountServer", raw={})
    assert row_preview(row, None).splitlines()[1].split() == ["ServerGUID", MASKED]
    # never part of a longer hexadecimal run (a SHA-256 stays whole); anything not a GUID is masked entirely
    digest = "ab" * 32
    assert guid.mask_guids(digest) == digest
    assert guid.mask_guid("not a guid") == "*** * ****"


def test_the_runbook_lists_exactly_the_registry_s_actions() -> None:
    assert dict(runbook.ACTIONS) == {name: (row.kinds, row.targets) for name, row in registry.REGISTRY.items()}
    for name in runbook.ACTIONS:
        assert registry.action_for(name) is registry.REGISTRY[name].action
