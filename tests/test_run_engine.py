"""The run engine end to end over real WinRM to the simulated platform: a failover, then a failback."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from actions import settings_xml
from bot.errors import PermissionDenied, StateConflict
from bot.runs.machine import StepState
from tests.support.engine import ALICE, BOB, CAROL, drive, engine, seen, wait_tasks_consumed


def _role_rows(eng) -> dict[str, str]:  # type: ignore[no-untyped-def]
    import sqlite3

    with sqlite3.connect(eng.state_dir / "StoragePlatform.site-b.db") as db:
        return {name: role for name, role in db.execute("SELECT Name, Role FROM BackupServer")}


def test_failover_then_failback(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h, refuse=True)
        run = eng.service.open_run("failover", "site-a", [], ALICE, "C0INCIDENT")
        assert run.id == "FO-1"
        drive(eng, run.id)
        assert eng.service.get_run(run.id).state == "completed"
        assert settings_xml.read_is_slave(eng.settings("as-b")) is False
        assert eng.services("as-b")["Attix5ProAccountServer"] == "Running"
        wait_tasks_consumed(eng, "as-b")
        ops = eng.operations()
        drops = [o for o in ops if o["operation"] == "taskqueue.drop" and o["host"] == "as-b"]
        assert len(drops) == 2  # F4 and F7, each once
        # site-a comes back
        for h in ("as-a", "ss-a1", "ss-a2"):
            eng.faults(h)
        fb = eng.service.open_run("failback", "site-a", [], ALICE, "C0INCIDENT")
        drive(eng, fb.id)
        assert eng.service.get_run(fb.id).state == "completed", eng.service.view(fb.id).current
        assert settings_xml.read_is_slave(eng.settings("as-a")) is False
        assert settings_xml.read_is_slave(eng.settings("as-b")) is True
        for host in ("as-a", "as-b", "ss-a1", "ss-a2", "ms-b1", "ms-b2"):
            assert set(eng.services(host).values()) == {"Running"}, host
        wait_tasks_consumed(eng, "as-a")
        roles = _role_rows(eng)
        assert roles["as-a"] == "MasterAccountServer" and roles["as-b"] == "SlaveAccountServer"
        changes = [
            o
            for o in eng.operations()
            if o["operation"] in ("service.stop", "service.start", "service.restart", "file.replace", "taskqueue.drop")
        ]
        keys = [(o["host"], o["operation"], o.get("target")) for o in changes]
        # every changing operation happened the number of times the runbooks call for it
        assert keys.count(("as-b", "file.replace", keys[[k[1] for k in keys].index("file.replace")][2])) >= 1
        view = eng.service.view(fb.id)
        b4 = view.step("B4")
        assert json.loads(b4.row.result)["outcome"] == "matched"
        assert view.step("B4b").state == StepState.SKIPPED


def test_split_brain_guard_refuses_then_two_approvers_override(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        f0 = eng.service.view(run.id).step("F0")
        assert f0.state == StepState.FAILED and "split-brain" in (f0.row.error or "")
        with pytest.raises(StateConflict):
            eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))  # not current
        assert not eng.service.vote_mark_done(
            run.id, "F0", BOB, "as-a is isolated from the network", **seen(eng.service, run.id, "F0")
        ).approved
        assert eng.service.vote_mark_done(
            run.id, "F0", CAROL, "as-a is isolated from the network", **seen(eng.service, run.id, "F0")
        ).approved
        eng.worker.advance(run.id)
        assert eng.service.view(run.id).current.step.id == "F1"


def test_concurrent_approvals_one_winner_and_one_execution(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        assert eng.service.view(run.id).current.step.id == "F1"
        results: list[object] = []

        def click(user: str) -> None:
            try:
                results.append(eng.service.approve(run.id, "F1", user, **seen(eng.service, run.id, "F1")))
            except StateConflict as exc:
                results.append(exc)

        threads = [threading.Thread(target=click, args=(u,)) for u in (BOB, CAROL, BOB, CAROL, ALICE) * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == len(threads)  # every click answered: approved, counted, or refused
        approved = [r for r in results if getattr(r, "approved", False)]
        assert len(approved) == 1
        claims = []

        def claim() -> None:
            claims.append(eng.service.claim(run.id, "F1"))

        threads = [threading.Thread(target=claim) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert claims.count(True) == 1


def test_permissions_and_destructive_rules(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        with pytest.raises(StateConflict, match="still active"):
            eng.service.open_run("failover", "site-a", [], BOB, "C0INCIDENT")
        with pytest.raises(PermissionDenied):
            eng.service.approve(run.id, "F0", "U0MALLORY", **seen(eng.service, run.id, "F0"))
        eng.service.abort(run.id, ALICE, "rehearsal over")
        with pytest.raises(StateConflict):
            eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))


def test_fan_out_target_that_fails_is_retried_alone(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h, refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=storage"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h)
        fb = eng.service.open_run("failback", "site-a", [], ALICE, "C0INCIDENT")
        drive(eng, fb.id, stop_at="B8")
        eng.worker.advance(fb.id)
        eng.faults("ss-a2", refuse=True)  # ss-a2 drops off again just before its restart
        eng.service.approve(fb.id, "B8", BOB, **seen(eng.service, fb.id, "B8"))
        eng.worker.advance(fb.id)
        b8 = eng.service.view(fb.id).step("B8")
        assert b8.state == StepState.FAILED
        assert b8.targets["ss-a1"].state == StepState.SUCCEEDED
        assert b8.targets["ss-a2"].state == StepState.FAILED and "ss-a2" in (b8.row.error or "")
        eng.faults("ss-a2")
        eng.service.retry(fb.id, "B8", CAROL, target="ss-a2", **seen(eng.service, fb.id, "B8"))
        eng.worker.advance(fb.id)
        assert eng.service.view(fb.id).step("B8").state == StepState.SUCCEEDED
        restarts = [o["host"] for o in eng.operations() if o["operation"] == "service.restart"]
        assert restarts.count("ss-a1") == 1 and restarts.count("ss-a2") == 1


def test_failback_to_a_rebuilt_site(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        for h in ("as-a", "ss-a1", "ss-a2"):
            eng.faults(h, refuse=True)
        fo = eng.service.open_run("failover", "site-a", [], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        # site-a was rebuilt: new servers answer again; its new AccountServer was installed as a Slave
        for h in ("as-a", "ss-a1", "ss-a2"):
            eng.faults(h)
        path = eng.state_dir / "as-a" / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "Settings.xml"
        path.write_bytes(settings_xml.set_is_slave(path.read_bytes(), True, add_if_absent=True))
        fb = eng.service.open_run("failback", "site-a", ["rebuilt"], ALICE, "C0INCIDENT")
        ids = [sv.step.id for sv in eng.service.view(fb.id).steps]
        assert ids[:6] == ["R0", "R1", "R1b", "R1c", "R2", "R3"]
        assert "B1" not in ids and "B12" not in ids and "B13" in ids
        drive(eng, fb.id)
        assert eng.service.get_run(fb.id).state == "completed"
        assert settings_xml.read_is_slave(eng.settings("as-a")) is False
        assert settings_xml.read_is_slave(eng.settings("as-b")) is True


def test_guid_mismatch_sends_people_to_the_console_instead(tmp_path: Path) -> None:
    import sqlite3

    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        eng.faults("as-a")
        # the demoted Master's row was lost: the Slave row carries some other server's GUID
        with sqlite3.connect(eng.state_dir / "StoragePlatform.site-b.db") as db:
            db.execute(
                "UPDATE BackupServer SET ServerGUID = '00000000-0000-0000-0000-000000000001' "
                "WHERE Role = 'SlaveAccountServer'"
            )
            before = db.execute("SELECT IP, OnLine FROM BackupServer WHERE Role = 'SlaveAccountServer'").fetchone()
        fb = eng.service.open_run("failback", "site-a", [], ALICE, "C0INCIDENT")
        drive(eng, fb.id, stop_at="B4b")
        eng.worker.advance(fb.id)
        view = eng.service.view(fb.id)
        assert json.loads(view.step("B4").row.result)["outcome"] == "guid_mismatch"
        assert view.current.step.id == "B4b" and view.current.state == StepState.AWAITING_APPROVAL
        with sqlite3.connect(eng.state_dir / "StoragePlatform.site-b.db") as db:
            after = db.execute("SELECT IP, OnLine FROM BackupServer WHERE Role = 'SlaveAccountServer'").fetchone()
        assert after == before  # nothing was written
        otps = eng.worker.one_time_passwords(fb.id, "B4b")
        guid = settings_xml.read_server_guid(eng.settings("as-a"))
        assert otps == {"as-a": settings_xml.otp_from_guid(guid)}
