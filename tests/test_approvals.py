"""Approval rules at the run service, on SQLite and PostgreSQL: races, fingerprints, groups, two-person rules."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bot.errors import PermissionDenied, StateConflict
from bot.runs.machine import StepState
from bot.store.db import Store
from tests.support.engine import ALICE, BOB, CAROL, drive, engine, seen


def _to_step(eng, run_id: str, step_id: str) -> None:  # type: ignore[no-untyped-def]
    drive(eng, run_id, stop_at=step_id)
    eng.worker.advance(run_id)
    assert eng.service.view(run_id).current.step.id == step_id


def test_many_threads_one_winner_on_each_database(tmp_path: Path, store: Store) -> None:
    with engine(tmp_path, store) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        _to_step(eng, run.id, "F1")
        outcomes: list[object] = []
        barrier = threading.Barrier(12)

        def approve(user: str) -> None:
            barrier.wait(5)
            try:
                outcomes.append(eng.service.approve(run.id, "F1", user, **seen(eng.service, run.id, "F1")))
            except StateConflict as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=approve, args=(u,)) for u in [BOB, CAROL, ALICE] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(outcomes) == 12
        assert sum(1 for o in outcomes if getattr(o, "approved", False)) == 1
        claims: list[bool] = []
        barrier2 = threading.Barrier(8)

        def claim() -> None:
            barrier2.wait(5)
            claims.append(eng.service.claim(run.id, "F1"))

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert claims.count(True) == 1
        assert eng.service.view(run.id).step("F1").state == StepState.RUNNING


def test_one_active_run_per_platform_under_concurrency(tmp_path: Path, store: Store) -> None:
    with engine(tmp_path, store) as eng:
        opened: list[object] = []
        barrier = threading.Barrier(6)

        def start() -> None:
            barrier.wait(5)
            try:
                opened.append(eng.service.open_run("failover", "site-a", [], ALICE, "C0INCIDENT"))
            except StateConflict as exc:
                opened.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        runs = [o for o in opened if not isinstance(o, StateConflict)]
        assert len(runs) == 1 and len(opened) == 6


def test_approval_is_void_when_what_was_approved_changes(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        _to_step(eng, run.id, "F2")
        before = eng.service.view(run.id).step("F2")
        assert "-" in (before.row.preview or "") and "IsSlave" in before.row.preview
        # someone edits Settings.xml by hand after the diff was shown (adds a comment)
        path = eng.state_dir / "as-b" / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "Settings.xml"
        original = path.read_bytes()
        path.write_bytes(original.replace(b"<ServerName>", b"<!-- edited by hand -->\r\n  <ServerName>"))
        eng.service.approve(run.id, "F2", BOB, **seen(eng.service, run.id, "F2"))
        eng.worker.advance(run.id)
        after = eng.service.view(run.id).step("F2")
        assert after.state == StepState.AWAITING_APPROVAL  # asks again
        assert after.row.attempt == before.row.attempt + 1 and after.approvers == []
        assert after.row.fingerprint != before.row.fingerprint
        assert b"<IsSlave" in path.read_bytes() and b"True</IsSlave>" in path.read_bytes()  # nothing written
        assert eng.service.claim(run.id, "F2") is False  # the old approval cannot be used
        eng.service.approve(run.id, "F2", BOB, **seen(eng.service, run.id, "F2"))
        eng.worker.advance(run.id)
        assert eng.service.view(run.id).step("F2").state == StepState.SUCCEEDED
        assert b"<!-- edited by hand -->" in path.read_bytes()  # the person's edit is kept


def test_approvers_from_user_groups(tmp_path: Path) -> None:
    with engine(tmp_path, slack={"approvers": [], "approver_groups": ["S0ONCALL"]}) as eng:
        eng.service.group_members = lambda group: {"U0DAVE"} if group == "S0ONCALL" else set()
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        with pytest.raises(PermissionDenied):
            eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))
        assert eng.service.approve(run.id, "F1", "U0DAVE", **seen(eng.service, run.id, "F1")).approved


def test_destructive_two_people_not_the_initiator_and_skip_rules(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h, refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=storage"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h)
        fb = eng.service.open_run("failback", "site-a", [], ALICE, "C0INCIDENT")
        _to_step(eng, fb.id, "B11")
        with pytest.raises(PermissionDenied, match="You started this run"):
            eng.service.approve(fb.id, "B11", ALICE, **seen(eng.service, fb.id, "B11"))
        with pytest.raises(StateConflict, match="needs 2 approvals"):
            eng.service.done(fb.id, "B11", BOB, **seen(eng.service, fb.id, "B11"))
        assert not eng.service.approve(fb.id, "B11", BOB, **seen(eng.service, fb.id, "B11")).approved
        again = eng.service.approve(fb.id, "B11", BOB, **seen(eng.service, fb.id, "B11"))
        assert again.already and again.have == 1
        assert eng.service.approve(fb.id, "B11", CAROL, **seen(eng.service, fb.id, "B11")).approved
        with pytest.raises(PermissionDenied, match="required and cannot be skipped"):
            eng.service.skip(fb.id, "B11", BOB, "no time", **seen(eng.service, fb.id, "B11"))
        eng.service.done(fb.id, "B11", CAROL, **seen(eng.service, fb.id, "B11"))
        assert eng.service.view(fb.id).step("B11").state == StepState.SUCCEEDED
