"""Issue 9: the bot never names the wrong server, stops the wrong Master or edits the wrong database.

Each test drives the real run engine (service, worker, WinRM executor) against the simulated platform.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from actions import settings_xml
from actions.connection_strings import db_identity
from actions.storage_platform_db import StoragePlatformDb
from bot.config import load_config
from bot.errors import StateConflict, UsageError
from bot.runs.machine import StepState
from tests.support.engine import ALICE, BOB, CAROL, drive, engine, seen

AS_SETTINGS = ("ProgramData", "Attix5 Pro", "AS_Service", "Settings.xml")


def _settings_path(eng, host: str) -> Path:  # type: ignore[no-untyped-def]
    return eng.state_dir.joinpath(host, "C", *AS_SETTINGS)


def _operations(eng, *ops: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(o["host"], o["operation"]) for o in eng.operations() if o["operation"] in ops]


def _rows(eng, site: str) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    with sqlite3.connect(eng.state_dir / f"StoragePlatform.{site}.db") as db:
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT Name, IP, OnLine FROM BackupServer")}


def _failover_then_failback_to(eng, stop_at: str, *, fo_args: tuple[str, ...] = ("scope=account",)) -> str:  # type: ignore[no-untyped-def]
    eng.faults("as-a", refuse=True)
    fo = eng.service.open_run("failover", "site-a", list(fo_args), ALICE, "C0INCIDENT")
    drive(eng, fo.id)
    assert eng.service.get_run(fo.id).state == "completed"
    eng.faults("as-a")
    fb = eng.service.open_run("failback", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
    drive(eng, fb.id, stop_at=stop_at)
    return fb.id


# --------------------------------------------------------------------------- item 3: wrong direction


def test_wrong_direction_is_refused_before_the_live_master_is_stopped(tmp_path: Path) -> None:
    """`start site-b` on a healthy platform whose Master is at site-a: F0 refuses; as-a keeps running."""
    with engine(tmp_path) as eng:
        run = eng.service.open_run("failover", "site-b", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        f0 = eng.service.view(run.id).step("F0")
        assert f0.state == StepState.FAILED
        assert "wrong direction" in (f0.row.error or "")
        assert "as-a at site-a is already the running Master" in (f0.row.error or "")
        assert "/failover start site-a" in (f0.row.error or "")
        assert eng.services("as-a") == {"Attix5ProAccountServer": "Running"}
        assert _operations(eng, "service.stop", "file.replace") == []


def test_f1_reads_isslave_again_and_never_stops_a_master(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, run.id, stop_at="F1")
        eng.worker.advance(run.id)
        f1 = eng.service.view(run.id).step("F1")
        assert "as-b is a Slave (IsSlave True) now" in (f1.row.preview or "")
        # someone promotes as-b by hand after F1 was posted: the approval is void, nothing is stopped
        path = _settings_path(eng, "as-b")
        path.write_bytes(settings_xml.set_is_slave(path.read_bytes(), False, add_if_absent=False))
        eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))
        eng.worker.advance(run.id)
        f1 = eng.service.view(run.id).step("F1")
        assert f1.state == StepState.AWAITING_APPROVAL and "NOT a Slave" in (f1.row.preview or "")
        assert _operations(eng, "service.stop") == []


def test_a_rerun_after_the_promotion_settles_f1_to_f3_by_their_checks(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        first = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, first.id, stop_at="F4")
        eng.service.abort(first.id, ALICE, "restart the run")
        again = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, again.id, stop_at="F4")
        view = eng.service.view(again.id)
        assert (
            "as-b already has IsSlave False and its service is Running"
            in json.loads(view.step("F0").row.result)["summary"]
        )
        assert [view.step(s).state for s in ("F1", "F2", "F3")] == [StepState.SKIPPED] * 3
        stops = _operations(eng, "service.stop")
        assert stops == [("as-b", "service.stop")]  # only the first run's F1


# --------------------------------------------------------------------------- items 5 and 9: the Master


def test_a_stopped_old_master_is_not_a_master(tmp_path: Path) -> None:
    """The operator stopped as-a as F0 advised: its file still says Master, but F4/F7 find as-b."""
    with engine(tmp_path) as eng:
        (eng.state_dir / "as-a" / "services.json").write_text(json.dumps({"Attix5ProAccountServer": "Stopped"}))
        run = eng.service.open_run("failover", "site-a", [], ALICE, "C0INCIDENT")
        drive(eng, run.id)
        view = eng.service.view(run.id)
        assert view.run.state == "completed"
        assert json.loads(view.step("F7").row.result)["host"] == "as-b"


def test_an_unreadable_role_at_the_failed_site_blocks_f0(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        _settings_path(eng, "as-a").write_bytes(b"\xef\xbb\xbf<Settings><ServerGuid>broken")
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        f0 = eng.service.view(run.id).step("F0")
        assert f0.state == StepState.FAILED
        assert "split-brain guard: as-a answers (service Running) but its role cannot be read" in (f0.row.error or "")


# --------------------------------------------------------------------------- item 6: task files


def test_a_task_file_must_be_consumed(tmp_path: Path) -> None:
    with engine(tmp_path, redstor={"account_server": {"task_queue_timeout_s": 1.5}}) as eng:
        eng.faults("as-a", refuse=True)
        eng.faults("as-b", consume=False)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, run.id, stop_at="F4")
        eng.service.approve(run.id, "F4", BOB, **seen(eng.service, run.id, "F4"))
        eng.worker.advance(run.id)
        f4 = eng.service.view(run.id).step("F4")
        assert f4.state == StepState.FAILED
        error = f4.row.error or ""
        assert r"C:\ProgramData\Attix5 Pro\AS_Service\TaskQueue\Failover.UpdateSettingsOnSS" in error
        assert "was not consumed within 1.5 s" in error and "Running as the Master" in error
        eng.faults("as-b", consume_delay_s=1.0)
        eng.service.retry(run.id, "F4", BOB, **seen(eng.service, run.id, "F4"))
        eng.worker.advance(run.id)
        f4 = eng.service.view(run.id).step("F4")
        assert f4.state == StepState.SUCCEEDED
        result = json.loads(f4.row.result)
        assert result["consumed"] is True  # the late AccountServer consumed it; the retry confirmed that


# --------------------------------------------------------------------------- items 4 and 7: the database


def test_b4_edits_the_promoted_masters_database_only(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        fb = _failover_then_failback_to(eng, "B5")
        view = eng.service.view(fb)
        assert json.loads(view.step("B4").row.result)["outcome"] == "matched"
        assert view.step("B4b").state == StepState.SKIPPED
        assert _rows(eng, "site-b")["as-a"][1] == 1
        assert "verified: no server (a file database), database" in (view.step("B4").row.preview or "")


def test_b4_refuses_a_database_that_is_not_the_one_the_master_uses(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        eng.faults("as-a")
        # site-b's variable now points at site-a's database (a copy-paste slip): B4 must not write there
        own = os.environ["FAILOVER_ODBC_SITE_B"]
        os.environ["FAILOVER_ODBC_SITE_B"] = eng.platform.database("site-a").odbc_connection_string()
        try:
            slipped = load_config(eng.config.path)  # the bot reads its variables when it loads the configuration
            eng.worker.database = lambda site: StoragePlatformDb.of_site(slipped.sites[site])
            before = (_rows(eng, "site-a"), _rows(eng, "site-b"))
            fb = eng.service.open_run("failback", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
            drive(eng, fb.id, stop_at="B4")
            eng.worker.advance(fb.id)
            b4 = eng.service.view(fb.id).step("B4")
            if b4.state == StepState.AWAITING_APPROVAL:
                eng.service.approve(fb.id, "B4", BOB, **seen(eng.service, fb.id, "B4"))
                eng.worker.advance(fb.id)
                b4 = eng.service.view(fb.id).step("B4")
        finally:
            os.environ["FAILOVER_ODBC_SITE_B"] = own
        assert b4.state == StepState.FAILED
        error = b4.row.error or ""
        assert "wrong database: as-b's Settings.xml names no server (a file database), database" in error
        assert "StoragePlatform.site-b.db" in error and "StoragePlatform.site-a.db" in error
        assert "Driver=" not in error  # names only, never the connection string
        assert (_rows(eng, "site-a"), _rows(eng, "site-b")) == before
        assert eng.service.view(fb.id).step("B4b").state == StepState.PENDING  # no B4b for a wrong database


def test_identity_of_sql_server_and_sqlite_connection_strings() -> None:
    a = db_identity("Driver={ODBC Driver 18 for SQL Server};Server=tcp:SQL-B,1433;Database=StoragePlatform;Encrypt=yes")
    b = db_identity("Data Source=sql-b;Initial Catalog=storageplatform;Integrated Security=SSPI")
    assert a.same_as(b) and a.shown() == "server tcp:SQL-B,1433, database StoragePlatform"
    assert not a.same_as(db_identity("Server=sql-a;Database=StoragePlatform;Trusted_Connection=True"))
    assert not a.same_as(db_identity("Server=sql-b,14330;Database=StoragePlatform"))
    assert not a.same_as(db_identity("Server=sql-b;Database=StoragePlatform_Old"))
    assert db_identity("Server=sql-b;Database={Storage;Platform};PWD={x;y}").database_shown == "Storage;Platform"
    assert "PWD" not in db_identity("Server=s;Database=d;PWD=secret").shown()
    lite = db_identity("Driver=SQLite3;Database=/tmp/x/StoragePlatform.site-b.db")
    assert lite.same_as(db_identity("Driver=SQLite3;Database=/TMP/x//StoragePlatform.site-b.db"))
    assert not lite.same_as(db_identity("Driver=SQLite3;Database=/tmp/x/StoragePlatform.site-a.db"))
    assert not db_identity("Server=sql-b").same_as(db_identity("Server=sql-b"))  # no database named


def test_b4_without_a_slave_row_needs_b4b(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        eng.faults("as-a")
        with sqlite3.connect(eng.state_dir / "StoragePlatform.site-b.db") as db:
            db.execute("DELETE FROM BackupServer WHERE Role = 'SlaveAccountServer'")
        fb = eng.service.open_run("failback", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fb.id, stop_at="B4b")
        eng.worker.advance(fb.id)
        view = eng.service.view(fb.id)
        assert json.loads(view.step("B4").row.result)["outcome"] == "no_slave_row"
        assert view.current.step.id == "B4b" and view.current.state == StepState.AWAITING_APPROVAL


@pytest.mark.parametrize(("choice", "b4b"), [("edited_by_hand", StepState.SKIPPED), ("not_done", "awaiting")])
def test_mark_done_on_b4_asks_whether_the_row_was_edited(tmp_path: Path, choice: str, b4b: str) -> None:
    """Issue 9 item 7 (service level; the Mark-done modal that asks is the thread helper's)."""
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        eng.faults("as-a")
        fb = eng.service.open_run("failback", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fb.id, stop_at="B4")
        eng.worker.advance(fb.id)
        with pytest.raises(UsageError, match="needs a choice: edited_by_hand or not_done"):
            eng.service.vote_mark_done(fb.id, "B4", BOB, "done in SSMS", **seen(eng.service, fb.id, "B4"))
        eng.service.vote_mark_done(fb.id, "B4", BOB, "done in SSMS", choice=choice, **seen(eng.service, fb.id, "B4"))
        other = "not_done" if choice == "edited_by_hand" else "edited_by_hand"
        with pytest.raises(StateConflict, match="both must give the same answer"):
            eng.service.vote_mark_done(fb.id, "B4", CAROL, "checked", choice=other, **seen(eng.service, fb.id, "B4"))
        assert eng.service.vote_mark_done(
            fb.id, "B4", CAROL, "checked", choice=choice, **seen(eng.service, fb.id, "B4")
        ).approved
        eng.worker.advance(fb.id)
        view = eng.service.view(fb.id)
        assert view.step("B4").state == StepState.MARKED_DONE
        assert eng.service.facts(fb.id)["outcome:B4"] == ("matched" if choice == "edited_by_hand" else "needs_console")
        if b4b == "awaiting":
            assert view.current.step.id == "B4b" and view.current.state == StepState.AWAITING_APPROVAL
        else:
            assert view.step("B4b").state == StepState.SKIPPED


# --------------------------------------------------------------------------- items 8 and 13


def test_r1b_refuses_a_new_account_server_that_is_not_a_slave(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        eng.faults("as-a")  # the new as-a answers; its Settings.xml has no IsSlave (a Master)
        fb = eng.service.open_run("failback", "site-a", ["rebuilt", "scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(fb.id)
        for person in (BOB, CAROL):  # skipping a delete takes two people
            eng.service.skip(fb.id, "R0", person, "none listed", **seen(eng.service, fb.id, "R0"))
        drive(eng, fb.id, stop_at="R1b")
        eng.worker.advance(fb.id)
        r1b = eng.service.view(fb.id).step("R1b")
        assert r1b.state == StepState.FAILED
        assert "has no IsSlave element (absent means Master): adding it now would make two Masters" in (
            r1b.row.error or ""
        )


def test_b20_asks_people_when_no_failover_recorded_the_dns_decision(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        fb = eng.service.open_run("failback", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        view = eng.service.view(fb.id)
        assert eng.worker._condition_holds(view, view.step("B20"))[0] is True  # failover done outside the bot
        eng.service.abort(fb.id, ALICE, "test")
        eng.faults("as-a", refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        drive(eng, fo.id, choices={"F8": "done"})
        assert eng.service.facts(fo.id)["dns_redirected"] == "done"  # F8 now runs with scope=account
        fb2 = eng.service.open_run("failback", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        view = eng.service.view(fb2.id)
        holds, why = eng.worker._condition_holds(view, view.step("B20"))
        assert holds is False and "dns_redirected = done" in why


# ------------------------------------------------------------- item 15: where the failback's scope came from


def test_plan_says_where_the_failback_scope_came_from(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from bot.config import load_config
    from bot.runs.service import RunService
    from bot.store.db import Store
    from bot.store.models import ActiveRun, Run
    from tests.support.paths import EXAMPLE_CONFIG

    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        service = RunService(store, load_config(EXAMPLE_CONFIG))
        options, source = service.explain_options("failback", "site-a", [])
        assert options.scope == "all" and "no completed failover of site-a is recorded" in source
        first = service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        with store.session() as s:  # FO-1 completed
            s.execute(
                sa.update(Run)
                .where(Run.id == first.id)
                .values(state="completed", finished_at=s.scalar(sa.select(Run.created_at).where(Run.id == first.id)))
            )
            s.execute(sa.delete(ActiveRun))
        options, source = service.explain_options("failback", "site-a", [])
        assert options.scope == "account"
        assert (
            source
            == f"scope and StorageServers: from {first.id}, the last completed failover of site-a (scope=account)"
        )
        later = service.open_run("failover", "site-a", ["scope=storage"], ALICE, "C0INCIDENT")
        service.abort(later.id, ALICE, "wrong scope")
        options, source = service.explain_options("failback", "site-a", [])
        assert options.scope == "account"  # not silently the aborted run's
        assert f"Warning: {later.id} (a later failover of site-a) was aborted; its scope is not used" in source
        _, given = service.explain_options("failback", "site-a", ["scope=storage"])
        assert given == "scope and StorageServers: as given in the command"
    finally:
        store.dispose()
