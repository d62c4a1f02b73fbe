"""The run engine's structure holds: run changes go through RUN_TRANSITIONS, audit events are written by the
service only, every lock id lives in bot/store/locks.py, and no module of the engine is over ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.config import load_config
from bot.runs import machine
from bot.runs.machine import RunEvent, RunState, StepState
from bot.runs.service import RunService
from bot.store.db import Store
from bot.store.models import AuditEvent, StepRun
from tests.support.platform import write_config

ROOT = Path(__file__).resolve().parents[1]
ALICE = "U0ALICE"


def _finished_run(tmp_path: Path, store: Store) -> tuple[RunService, str]:
    """A run whose every step is finished (skipped in the database), waiting to be completed."""
    service = RunService(store, load_config(write_config(tmp_path / "cfg")))
    run = service.open_run("failover", "site-a", [], ALICE, "C0INCIDENT")
    with store.session() as s:
        s.execute(sa.update(StepRun).where(StepRun.run_id == run.id).values(state=StepState.SKIPPED))
    return service, run.id


def test_complete_if_done_goes_through_the_run_transition_table(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, run_id = _finished_run(tmp_path, store)
    monkeypatch.delitem(machine.RUN_TRANSITIONS, (RunState.ACTIVE, RunEvent.COMPLETE))
    assert service.complete_if_done(run_id) is False  # the table no longer allows it: nothing changes
    assert service.get_run(run_id).state == RunState.ACTIVE
    assert service.active_run() is not None
    monkeypatch.undo()
    assert service.complete_if_done(run_id) is True
    assert service.get_run(run_id).state == RunState.COMPLETED
    assert service.active_run() is None
    with store.read_session() as s:
        events = list(s.scalars(sa.select(AuditEvent.event).where(AuditEvent.run_id == run_id)))
    assert events.count("run.completed") == 1
    assert service.complete_if_done(run_id) is False  # completed once


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


NOT_AUDITING = ["bot/scheduling", "bot/runs/worker.py", "bot/runs/fanout.py", "bot/runs/restart.py"]


@pytest.mark.parametrize("where", NOT_AUDITING)
def test_scheduler_and_worker_write_no_audit_events(where: str) -> None:
    """The service writes audit events, in the transaction of the change; the scheduler and worker ask it to."""
    base = ROOT / where
    paths = sorted(base.rglob("*.py")) if base.is_dir() else [base]
    assert paths
    for path in paths:
        source = path.read_text(encoding="utf-8")
        assert "bot.store.audit" not in _imports(path), path
        assert "audit.record(" not in source and "audit.append(" not in source, path
        assert "AuditEvent" not in source, path


def test_every_lock_id_lives_in_the_store_locks_module() -> None:
    for path in sorted((ROOT / "bot").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel == "bot/store/locks.py":
            continue
        source = path.read_text(encoding="utf-8")
        assert "advisory" not in source.replace("advisory lock", ""), rel
        assert "7_411" not in source and "flock(" not in source, rel


ENGINE = ["bot/runs", "bot/store", "bot/scheduling"]
OWNED_ELSEWHERE = ("bot/runs/runbook",)  # the runbook package is kept by its own change


def test_engine_modules_are_readable_in_one_sitting() -> None:
    for base in ENGINE:
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel.startswith(OWNED_ELSEWHERE) or "/migrations/" in rel:
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= 400, f"{rel} has {lines} lines"
