"""Issue 10: each finding of the security review, tried against the run service, the store and the worker."""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import os
import pickle
import re
import stat
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig

from actions import settings_xml
from actions.guid import guid_fact, guid_hash
from actions.winrm import WinRMExecutor
from bot.blocks.cards import step_card
from bot.config import load_config
from bot.errors import ExecutionError, PermissionDenied, StateConflict
from bot.runs.machine import StepState
from bot.runs.service import REFUSALS_PER_PERSON, REVEALS_PER_PERSON
from bot.runs.worker import Worker
from bot.store import audit
from bot.store.db import MIGRATIONS, Store
from bot.store.models import AuditEvent, AuditHead, ProcessedDelivery, Run
from sandbox.slack_api import DEFAULT_TOKEN, FakeSlackApi
from tests.support.engine import ALICE, BOB, CAROL, drive, engine, seen
from tests.support.platform import write_config
from tests.test_scheduling import Clock, make_bot, make_config, open_rebuilt_failback


def _to_step(eng, run_id: str, step_id: str) -> None:  # type: ignore[no-untyped-def]
    drive(eng, run_id, stop_at=step_id)
    eng.worker.advance(run_id)
    assert eng.service.view(run_id).current.step.id == step_id


def _settings_path(eng, host: str) -> Path:  # type: ignore[no-untyped-def]
    return eng.state_dir / host / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "Settings.xml"


# ---------------------------------------------------------------- finding 3: votes bound to the card seen


def test_a_vote_on_a_voided_card_never_counts_for_the_new_round(tmp_path: Path) -> None:
    """Reproduced: a click on a round-0 card became the only approval of round 1 (a preview nobody saw)."""
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        _to_step(eng, run.id, "F2")
        old_card = seen(eng.service, run.id, "F2")
        path = _settings_path(eng, "as-b")
        path.write_bytes(path.read_bytes().replace(b"<ServerName>", b"<!-- hand edit -->\r\n  <ServerName>"))
        eng.service.approve(run.id, "F2", BOB, **old_card)
        eng.worker.advance(run.id)  # the preview changed: approvals void, round 1
        new_card = seen(eng.service, run.id, "F2")
        assert new_card["round"] == old_card["round"] + 1 and new_card["fingerprint"] != old_card["fingerprint"]
        for vote in (
            lambda: eng.service.approve(run.id, "F2", CAROL, **old_card),
            lambda: eng.service.approve(
                run.id, "F2", CAROL, round=new_card["round"], fingerprint=old_card["fingerprint"]
            ),
            lambda: eng.service.approve(
                run.id, "F2", CAROL, round=old_card["round"], fingerprint=new_card["fingerprint"]
            ),
            lambda: eng.service.vote_mark_done(run.id, "F2", CAROL, "done by hand", **old_card),
        ):
            with pytest.raises(StateConflict, match="out of date"):
                vote()
        sv = eng.service.view(run.id).step("F2")
        assert sv.state == StepState.AWAITING_APPROVAL and sv.approvers == [] and sv.mark_done_votes == []
        assert eng.service.approve(run.id, "F2", CAROL, **new_card).approved


def test_done_skip_and_retry_compare_the_card_too(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        # F3 (start as-b's service): F1's preview re-reads as-b's role (issue 9 item 3), so an unreachable
        # as-b voids F1's approval instead of failing it; F3's preview reads nothing
        _to_step(eng, run.id, "F3")
        card = seen(eng.service, run.id, "F3")
        stale = {"round": card["round"], "fingerprint": "0" * 64}
        with pytest.raises(StateConflict, match="out of date"):
            eng.service.approve(run.id, "F3", BOB, **stale)
        eng.faults("as-b", refuse=True)  # F3 fails: Retry is offered
        eng.service.approve(run.id, "F3", BOB, **card)
        eng.worker.advance(run.id)
        assert eng.service.view(run.id).step("F3").state == StepState.FAILED
        with pytest.raises(StateConflict, match="out of date"):
            eng.service.retry(run.id, "F3", BOB, **stale)
        assert eng.service.view(run.id).step("F3").state == StepState.FAILED
        eng.faults("as-b")
        eng.service.retry(run.id, "F3", BOB, **seen(eng.service, run.id, "F3"))
        assert eng.service.view(run.id).step("F3").state != StepState.FAILED


# ---------------------------------------------------------------- finding 11: abort and reveal permissions


def test_abort_needs_an_operator_however_it_is_asked_for(tmp_path: Path) -> None:
    with engine(tmp_path, slack={"operators": [ALICE], "approvers": [ALICE, BOB, CAROL]}) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        with pytest.raises(PermissionDenied, match="Only operators"):
            eng.service.abort(run.id, BOB, "an approver who is not an operator")  # the button's old rule
        assert eng.service.get_run(run.id).state == "active"
        assert eng.service.abort(run.id, ALICE, "operator").state == "aborted"


def test_reveal_only_current_step_of_an_active_run_by_an_approver_rate_limited(tmp_path: Path) -> None:
    with engine(tmp_path, slack={"approvers": [BOB, CAROL]}) as eng:
        run = eng.service.open_run("failback", "site-a", ["rebuilt", "scope=storage"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        for person in (BOB, CAROL):  # R0 (old registrations: a delete) is not needed here
            eng.service.skip(run.id, "R0", person, "none listed", **seen(eng.service, run.id, "R0"))
        eng.worker.advance(run.id)
        assert eng.service.view(run.id).current.step.id == "R2"  # its OTPs: the new StorageServers'
        with pytest.raises(PermissionDenied):
            eng.service.check_reveal(run.id, "R2", ALICE)  # an operator, not an approver
        with pytest.raises(StateConflict, match="no longer current"):
            eng.service.check_reveal(run.id, "B33", BOB)  # an OTP step, but not the current one
        for _ in range(REVEALS_PER_PERSON):
            eng.service.check_reveal(run.id, "R2", BOB)
            eng.service.audit_reveal(run.id, "R2", BOB, ["ss-a1"])
        with pytest.raises(PermissionDenied, match="limit"):
            eng.service.check_reveal(run.id, "R2", BOB)
        eng.service.check_reveal(run.id, "R2", CAROL)  # per person
        eng.service.abort(run.id, ALICE, "done rehearsing")
        with pytest.raises(StateConflict, match="aborted"):
            eng.service.check_reveal(run.id, "R2", CAROL)


# ---------------------------------------------------------------- finding 4: deletes recorded by other buttons


def _failback_at_b11(eng) -> str:  # type: ignore[no-untyped-def]
    for h in ("ss-a1", "ss-a2"):
        eng.faults(h, refuse=True)
    fo = eng.service.open_run("failover", "site-a", ["scope=storage"], ALICE, "C0INCIDENT")
    drive(eng, fo.id)
    for h in ("ss-a1", "ss-a2"):
        eng.faults(h)
    fb = eng.service.open_run("failback", "site-a", [], ALICE, "C0INCIDENT")
    _to_step(eng, fb.id, "B11")
    return str(fb.id)


def test_mark_done_of_a_delete_obeys_the_approval_rules(tmp_path: Path) -> None:
    """Reproduced: Mark done by the initiator plus one approver set B11 marked_done."""
    with engine(tmp_path, slack={"approvers": [ALICE, BOB, CAROL, "U0DAVE"]}) as eng:
        run_id = _failback_at_b11(eng)
        with pytest.raises(PermissionDenied, match="You started this run"):
            eng.service.vote_mark_done(run_id, "B11", ALICE, "deleted by hand", **seen(eng.service, run_id, "B11"))
        out = eng.service.vote_mark_done(run_id, "B11", BOB, "deleted by hand", **seen(eng.service, run_id, "B11"))
        assert not out.approved and out.needed == 2
        assert eng.service.view(run_id).step("B11").state == StepState.AWAITING_APPROVAL
        again = eng.service.vote_mark_done(run_id, "B11", BOB, "deleted", **seen(eng.service, run_id, "B11"))
        assert again.already and not again.approved
        assert eng.service.vote_mark_done(run_id, "B11", CAROL, "yes", **seen(eng.service, run_id, "B11")).approved
        assert eng.service.view(run_id).step("B11").state == StepState.MARKED_DONE


def test_three_approvals_configured_means_three_for_mark_done(tmp_path: Path) -> None:
    with engine(tmp_path, slack={"approvers": [ALICE, BOB, CAROL, "U0DAVE"], "destructive_approvals": 3}) as eng:
        run_id = _failback_at_b11(eng)
        for user in (BOB, CAROL):
            assert not eng.service.vote_mark_done(run_id, "B11", user, "x", **seen(eng.service, run_id, "B11")).approved
        assert eng.service.vote_mark_done(run_id, "B11", "U0DAVE", "x", **seen(eng.service, run_id, "B11")).approved


@pytest.mark.parametrize(
    "weaker", [{"destructive_approvals": 1}, {"initiator_may_approve_destructive": True}], ids=["one", "initiator"]
)
def test_weaker_delete_approval_is_refused_at_load_unless_allowed_and_then_shown(tmp_path: Path, weaker: dict) -> None:  # type: ignore[type-arg]
    from bot.errors import ConfigError

    path = write_config(tmp_path / "refused", slack=weaker)
    with pytest.raises(ConfigError, match="allow_weaker_delete_approval"):
        load_config(path)
    with engine(tmp_path, slack={**weaker, "allow_weaker_delete_approval": True}) as eng:
        run_id = _failback_at_b11(eng)
        view = eng.service.view(run_id)
        text = json.dumps(step_card(view, view.step("B11")))
        assert "Weaker delete approval is configured" in text
        other = json.dumps(step_card(view, view.step("B10")))
        assert "Weaker delete approval" not in other


# ---------------------------------------------------------------- finding 2: no step wedged in RUNNING


class _Faulty:
    """The real executor, except that operations named in ``faults`` raise what they map to (no ExecutionError)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.faults: dict[tuple[str, str], Exception] = {}

    def run(self, host: Any, op: str, data: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        exc = self.faults.get((host.name, op))
        if exc is not None:
            raise exc
        return dict(self.inner.run(host, op, data, timeout_s=timeout_s))

    def close(self) -> None:
        pass


def _faulty_worker(eng) -> tuple[Worker, _Faulty]:  # type: ignore[no-untyped-def]
    faulty = _Faulty(eng.worker.executor.inner)
    return Worker(eng.service, faulty), faulty


def _reference(text: str) -> str:
    found = re.search(r"reference ([0-9a-f]{8})", text)
    assert found, text
    return found.group(1)


def test_an_unexpected_error_in_an_action_ends_the_step_unknown_with_a_reference(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        worker, faulty = _faulty_worker(eng)
        try:
            run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
            worker.advance(run.id)
            eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))
            faulty.faults[("as-b", "service.stop")] = ElementTree.ParseError("not well-formed (invalid token)")
            worker.advance(run.id)
            f1 = eng.service.view(run.id).step("F1")
            assert f1.state == StepState.UNKNOWN  # F1 changes things: a change may have happened
            ref = _reference(f1.row.error or "")
            assert ref in caplog.text  # the traceback in the log carries the same reference
            view = eng.service.view(run.id)
            assert ref in json.dumps(step_card(view, view.step("F1")))  # and the thread shows it
            faulty.faults.clear()
            eng.service.retry(run.id, "F1", CAROL, **seen(eng.service, run.id, "F1"))
            worker.advance(run.id)
            assert eng.service.view(run.id).step("F1").state == StepState.SUCCEEDED
        finally:
            worker.close()


def test_an_unexpected_error_in_a_read_step_fails_it_and_mark_done_works(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        worker, faulty = _faulty_worker(eng)
        try:
            faulty.faults[("as-b", "host.info")] = KeyError("IsSlave")
            run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
            worker.advance(run.id)  # F0, the preflight, runs by itself
            f0 = eng.service.view(run.id).step("F0")
            assert f0.state == StepState.FAILED  # a read: nothing changed, so failed (not unknown)
            _reference(f0.row.error or "")
            for user in (BOB, CAROL):
                eng.service.vote_mark_done(run.id, "F0", user, "checked by hand", **seen(eng.service, run.id, "F0"))
            assert eng.service.view(run.id).step("F0").state == StepState.MARKED_DONE
        finally:
            worker.close()


def test_an_unexpected_error_in_one_fan_out_target_settles_that_target(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h, refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=storage"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h)
        worker, faulty = _faulty_worker(eng)
        try:
            fb = eng.service.open_run("failback", "site-a", [], ALICE, "C0INCIDENT")
            drive(eng, fb.id, stop_at="B8")
            worker.advance(fb.id)
            eng.service.approve(fb.id, "B8", BOB, **seen(eng.service, fb.id, "B8"))
            faulty.faults[("ss-a2", "service.restart")] = RuntimeError("a bug")
            worker.advance(fb.id)
            b8 = eng.service.view(fb.id).step("B8")
            assert b8.state == StepState.FAILED
            assert b8.targets["ss-a1"].state == StepState.SUCCEEDED
            assert b8.targets["ss-a2"].state == StepState.UNKNOWN
            _reference(b8.targets["ss-a2"].error or "")
            _reference(b8.row.error or "")
            faulty.faults.clear()
            eng.service.retry(fb.id, "B8", CAROL, target="ss-a2", **seen(eng.service, fb.id, "B8"))
            worker.advance(fb.id)
            assert eng.service.view(fb.id).step("B8").state == StepState.SUCCEEDED
        finally:
            worker.close()


def test_an_error_while_recording_the_result_ends_the_step_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))
        real_finish = eng.service.finish

        def finish(*args: Any, **kwargs: Any) -> None:
            if kwargs.get("ok"):
                raise sa.exc.OperationalError("UPDATE step_runs", {}, Exception("disk I/O error"))
            real_finish(*args, **kwargs)

        monkeypatch.setattr(eng.service, "finish", finish)
        eng.worker.advance(run.id)
        f1 = eng.service.view(run.id).step("F1")
        assert f1.state == StepState.UNKNOWN and "OperationalError" in (f1.row.error or "")
        _reference(f1.row.error or "")
        monkeypatch.setattr(eng.service, "finish", real_finish)
        for user in (BOB, CAROL):
            eng.service.vote_mark_done(run.id, "F1", user, "service seen stopped", **seen(eng.service, run.id, "F1"))
        assert eng.service.view(run.id).step("F1").state == StepState.MARKED_DONE


def test_an_unexpected_error_in_a_probe_after_a_restart_asks_people(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))
        assert eng.service.claim(run.id, "F1")  # the bot died here, after the write-ahead claim
        worker, faulty = _faulty_worker(eng)
        try:
            faulty.faults[("as-b", "service.query")] = AttributeError("'NoneType' object has no attribute 'text'")
            messages = worker.recover()
            assert len(messages) == 1 and "people decide" in messages[0]
            assert eng.service.view(run.id).step("F1").state == StepState.UNKNOWN
            with eng.store.read_session() as s:
                failed = [e for e in audit.events_of(s, run.id) if e.event == "probe.failed"]
            assert len(failed) == 1 and "reference" in failed[0].detail
            faulty.faults.clear()
            eng.service.retry(run.id, "F1", CAROL, **seen(eng.service, run.id, "F1"))
            worker.advance(run.id)
            assert eng.service.view(run.id).step("F1").state == StepState.SUCCEEDED
        finally:
            worker.close()


def test_a_winrm_url_answering_html_is_an_execution_error(tmp_path: Path) -> None:
    """A wrong port (a web server answering 200 text/html) is the host's error, said plainly."""

    class Html(http.server.BaseHTTPRequestHandler):
        body = b""

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with engine(tmp_path) as eng:
            host = eng.config.host("as-b")
            url = f"http://127.0.0.1:{server.server_address[1]}/wsman"
            host = dataclasses.replace(host, winrm=dataclasses.replace(host.winrm, url=url))
            for body in (b"<html><body>Redstor Storage Platform<br></body></html>", b"<html><p>ok</p></html>"):
                Html.body = body
                with WinRMExecutor() as executor, pytest.raises(ExecutionError, match="not with WS-Management"):
                    executor.run(host, "service.query", {"service": "x"})
    finally:
        server.shutdown()


# ---------------------------------------------------------------- finding 6: no pickled state


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackApi]:
    with FakeSlackApi() as fake:
        yield fake


class _Payload:
    """What an attacker with write access to the database stores as a job: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _plant_job(engine: sa.Engine, marker: Path) -> None:
    jobs = sa.Table(
        "apscheduler_jobs",
        sa.MetaData(),
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), index=True),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
    )
    with engine.begin() as conn:
        jobs.create(conn, checkfirst=True)
        conn.execute(
            jobs.insert().values(id="remind:FO-1:F1:0", next_run_time=0.0, job_state=pickle.dumps(_Payload(marker)))
        )


def test_a_crafted_pickled_job_row_is_never_loaded(tmp_path: Path, fake_slack: FakeSlackApi) -> None:
    """Reproduced: APScheduler's SQLAlchemyJobStore unpickled a planted row and ran its shell command."""
    marker = tmp_path / "pwned"
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    old = Store(url, migrate=False)  # a database from before this change, with the job table in use
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        alembic_command.upgrade(cfg, "0002")
    _plant_job(old.engine, marker)
    old.dispose()
    store = Store(url)  # the migration drops the table of pickles
    try:
        assert "apscheduler_jobs" not in sa.inspect(store.engine).get_table_names()
        _plant_job(store.engine, marker)  # planted again afterwards: still never read
        bot = make_bot(store, fake_slack, make_config(tmp_path), Clock())
        bot.reminders.start()
        try:
            assert bot.reminders.is_leader
            bot.reminders.sweep()
            assert bot.reminders.tick(bot.clock.advance(60)) == []
            assert bot.jobs() == {}
        finally:
            bot.reminders.close()
        assert not marker.exists()
    finally:
        store.dispose()


def test_reminders_are_rebuilt_from_run_state_by_a_new_leader(tmp_path: Path, fake_slack: FakeSlackApi) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        config, clock = make_config(tmp_path), Clock()
        first = make_bot(store, fake_slack, config, clock)
        first.reminders.start()
        posted = clock.now
        run_id = open_rebuilt_failback(first)
        assert first.reminders.tick(clock.advance(25)) == ["reminder"]  # due at 10; 20 coalesced into it
        first.reminders.close()
        second = make_bot(store, fake_slack, config, clock)
        second.reminders.start()  # nothing of the first process's jobs survives but the run state
        try:
            assert second.jobs() == {f"remind:{run_id}:F5:0": posted + timedelta(minutes=30)}
            assert second.reminders.tick(clock.advance(1)) == []  # no repeat of the reminder just sent
        finally:
            second.reminders.close()
    finally:
        store.dispose()


# ---------------------------------------------------------------- finding 7: secrets at rest


def test_the_sqlite_database_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "failover-bot.db"
    store = Store(f"sqlite:///{path}")
    try:
        with store.session() as s:  # a write: the -wal and -shm files exist now
            audit.append(s, "-", "U0TEST", "test.event")
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert name.exists(), name
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, (name, oct(name.stat().st_mode))
    finally:
        store.dispose()
    os.chmod(path, 0o644)  # a file from before: tightened at the next start
    Store(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _ss_settings(eng, host: str) -> Path:  # type: ignore[no-untyped-def]
    return eng.state_dir / host / "C" / "ProgramData" / "Attix5 Pro" / "SS_Service" / "Settings.xml"


def test_server_guids_are_kept_masked_and_read_again_when_revealed(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h, refuse=True)
        fo = eng.service.open_run("failover", "site-a", ["scope=storage"], ALICE, "C0INCIDENT")
        drive(eng, fo.id)
        for h in ("ss-a1", "ss-a2"):
            eng.faults(h)
        fb = eng.service.open_run("failback", "site-a", ["scope=storage"], ALICE, "C0INCIDENT")
        _to_step(eng, fb.id, "B9")  # B7 read every StorageServer's ServerGuid
        guid = settings_xml.read_server_guid(_ss_settings(eng, "ss-a1").read_bytes())
        kept = eng.service.facts(fb.id)[guid_fact("ss-a1")]
        assert kept == {"masked": settings_xml.mask_guid(guid), "sha256": guid_hash(guid)}
        eng.store.dispose()  # everything written to the file
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("bot.db*"))
        assert guid.encode() not in stored and settings_xml.otp_from_guid(guid).encode() not in stored
        assert eng.worker.one_time_passwords(fb.id, "B9")["ss-a1"] == settings_xml.otp_from_guid(guid)
        # the ServerGuid changed on the host since B7 read it: no password from a GUID nobody checked
        other = str(uuid.uuid4())
        path = _ss_settings(eng, "ss-a1")
        path.write_bytes(path.read_bytes().replace(guid.encode(), other.encode()))
        with pytest.raises(ExecutionError, match="ServerGuid is now"):
            eng.worker.one_time_passwords(fb.id, "B9")


def test_the_migration_masks_server_guids_already_in_runs_facts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url, migrate=False)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        alembic_command.upgrade(cfg, "0003")
    guid = "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"
    with old.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, number, platform, direction, site, partner, scope, storage, rebuilt, state,"
                " initiator, channel, facts, created_at) VALUES ('FB-1', 1, 'p', 'failback', 'site-a', 'site-b',"
                " 'all', '', 0, 'active', 'U0ALICE', '', :facts, '2026-12-01 00:00:00')"
            ),
            {"facts": json.dumps({"guid:as-a": guid, "outcome:B4": "matched"})},
        )
    old.dispose()
    store = Store(url)
    try:
        facts = json.loads(store.engine.connect().execute(sa.text("SELECT facts FROM runs")).scalar_one())
        assert facts == {
            "guid:as-a": {"masked": "********-****-****-****-0305e82c3301", "sha256": guid_hash(guid)},
            "outcome:B4": "matched",
        }
    finally:
        store.dispose()


# ---------------------------------------------------------------- finding 5: a keyed audit chain


def _keyed_store(path: Path, current: str = "k1", **keys: bytes) -> Store:
    store = Store(f"sqlite:///{path}")
    store.audit_keys.use(current, keys or {"k1": b"k1-secret-from-the-environment"})
    return store


def _fill(store: Store, run_id: str = "FO-1", n: int = 6) -> None:
    for i in range(n):
        audit.record(store, run_id, f"U{i}", "approval", step_id=f"F{i}", detail={"n": i})


def _check(store: Store, run_id: str = "FO-1") -> audit.ChainCheck:
    with store.read_session() as s:
        return audit.check_run(s, run_id)


def _reseal(store: Store, run_id: str, *, drop_from: int | None = None, actor: str | None = None) -> None:
    """What someone with write access to the database (and no key) does: edit, then recompute the SHA-256 chain."""
    with store.session() as s:
        if drop_from is not None:
            s.execute(sa.delete(AuditEvent).where(AuditEvent.run_id == run_id, AuditEvent.seq >= drop_from))
        if actor is not None:
            s.execute(sa.update(AuditEvent).where(AuditEvent.run_id == run_id, AuditEvent.seq == 2).values(actor=actor))
        prev = audit.GENESIS
        for ev in audit.events_of(s, run_id):
            ev.prev_hash = prev
            ev.hash = audit._digest(prev, ev.seq, ev.at, ev.actor, ev.event, ev.step_id, ev.target, ev.detail)
            ev.key_id = None
            prev = ev.hash
        s.execute(sa.delete(AuditHead).where(AuditHead.run_id == run_id))


def test_deleting_the_newest_events_and_the_head_is_detected(tmp_path: Path) -> None:
    """Reproduced: deleting the last 3 events and the audit_heads row still gave "chain intact"."""
    store = _keyed_store(tmp_path / "a.db")
    try:
        _fill(store)
        assert _check(store).intact and _check(store).keyed
        with store.session() as s:
            s.execute(sa.delete(AuditEvent).where(AuditEvent.seq >= 4))
            s.execute(sa.delete(AuditHead))
        check = _check(store)
        assert not check.intact and any("head is missing" in p for p in check.problems)
    finally:
        store.dispose()


def test_rewriting_an_actor_and_resealing_without_the_key_is_detected(tmp_path: Path) -> None:
    """Reproduced: rewriting an actor and re-hashing gave "chain intact"."""
    store = _keyed_store(tmp_path / "a.db")
    try:
        _fill(store)
        with store.session() as s:  # the forger keeps key ids and recomputes with a key they guess
            s.execute(sa.update(AuditEvent).where(AuditEvent.seq == 2).values(actor="U0MALLORY"))
            prev = audit.GENESIS
            for ev in audit.events_of(s, "FO-1"):
                ev.prev_hash = prev
                ev.hash = audit._digest(
                    prev, ev.seq, ev.at, ev.actor, ev.event, ev.step_id, ev.target, ev.detail, ev.key_id, b"guess"
                )
                prev = ev.hash
            s.execute(sa.update(AuditHead).values(hash=prev))
        assert not _check(store).intact
        _reseal(store, "FO-1", actor="U0MALLORY")  # or drops the keys and the head: an unkeyed chain, no head
        check = _check(store)
        assert not check.intact and not check.keyed
    finally:
        store.dispose()


def test_a_key_change_keeps_old_chains_checkable(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = _keyed_store(path, "2026a", **{"2026a": b"old key"})
    try:
        _fill(store, "FO-1")
    finally:
        store.dispose()
    store = _keyed_store(path, "2026b", **{"2026a": b"old key", "2026b": b"new key"})  # rotated
    try:
        _fill(store, "FO-2")
        _fill(store, "FO-1", n=2)  # an old chain goes on with the new key
        for run_id in ("FO-1", "FO-2"):
            check = _check(store, run_id)
            assert check.intact and check.keyed, check.problems
        with store.read_session() as s:
            assert {e.key_id for e in audit.events_of(s, "FO-1")} == {"2026a", "2026b"}
        store.audit_keys.use("2026b", {"2026b": b"new key"})  # the old key withdrawn: said, not hidden
        check = _check(store, "FO-1")
        assert not check.intact and any("'2026a'" in p and "not available" in p for p in check.problems)
    finally:
        store.dispose()


def test_without_a_key_serve_warns_and_report_says_not_keyed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bot.report import build_report
    from bot.runtime import build_runtime

    config = load_config(write_config(tmp_path / "cfg"))
    assert config.audit_key_problem() is not None
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        with FakeSlackApi() as fake, caplog.at_level(logging.WARNING):
            runtime = build_runtime(config, store=store, token=DEFAULT_TOKEN, signing_secret="s", api_url=fake.api_url)
            runtime.close()
        assert "the audit log is not keyed" in caplog.text
        _fill(store)
        with store.session() as s:
            s.add(
                Run(
                    id="FO-1", number=1, platform="p", direction="failover", site="site-a", partner="site-b",
                    scope="all", storage="", rebuilt=False, state="active", initiator=ALICE, channel="",
                    facts="{}", created_at=datetime.now(UTC),
                )
            )  # fmt: skip
        assert "chain not keyed" in build_report(store, "FO-1").to_markdown()
    finally:
        store.dispose()


def test_a_keyed_configuration_seals_and_the_end_of_a_run_posts_its_digest(tmp_path: Path) -> None:
    os.environ["FAILOVER_TEST_AUDIT_KEY"] = "a-key-that-lives-outside-the-database"
    try:
        with engine(tmp_path, audit={"key_id": "k1", "keys": {"k1": "FAILOVER_TEST_AUDIT_KEY"}}) as eng:
            assert eng.config.audit_key_problem() is None
            eng.store.audit_keys.use(*eng.config.audit_keys())
            eng.faults("as-a", refuse=True)
            run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
            eng.service.abort(run.id, ALICE, "rehearsal over")
            ended = eng.service.end_digest(run.id)
            with eng.store.read_session() as s:
                events = audit.events_of(s, run.id)
                check = audit.check_run(s, run.id)
            assert check.intact and check.keyed and all(e.key_id == "k1" for e in events)
            last = [e for e in events if e.event == "run.aborted"][0]
            assert ended == f"#{last.seq} {last.hash[:16]}"
    finally:
        del os.environ["FAILOVER_TEST_AUDIT_KEY"]


# ---------------------------------------------------------------- finding 13 (audit and deliveries): bounded growth


def test_long_error_texts_are_cut_visibly_in_the_audit_log_and_the_step(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        eng.faults("as-a", refuse=True)
        run = eng.service.open_run("failover", "site-a", ["scope=account"], ALICE, "C0INCIDENT")
        eng.worker.advance(run.id)
        eng.service.approve(run.id, "F1", BOB, **seen(eng.service, run.id, "F1"))
        assert eng.service.claim(run.id, "F1")
        huge = "Stop-Service : " + "x" * 1_000_000
        eng.service.finish(run.id, "F1", ok=False, error=huge, execution={"error": huge})
        sv = eng.service.view(run.id).step("F1")
        assert len(sv.row.error or "") < 5000 and "truncated: 1000015 characters in all" in (sv.row.error or "")
        with eng.store.read_session() as s:
            events = audit.events_of(s, run.id)
            assert audit.check_run(s, run.id).intact
        assert max(len(e.detail) for e in events) < 20_000
        assert any("truncated" in e.detail for e in events if e.event == "execution.finished")


def test_a_flood_of_refused_commands_cannot_grow_the_run_less_chain(tmp_path: Path) -> None:
    with engine(tmp_path) as eng:
        recorded = [eng.service.refuse(None, "U0MALLORY", "/failover start", "operators only") for _ in range(300)]
        assert recorded.count(True) == REFUSALS_PER_PERSON
        assert eng.service.refuse(None, BOB, "/failover abort", "no active run")  # someone else is still heard
        with eng.store.read_session() as s:
            events = audit.events_of(s, "-")
            assert audit.check_run(s, "-").intact
        assert len(events) == REFUSALS_PER_PERSON + 1


def test_processed_deliveries_are_forgotten_after_a_day(tmp_path: Path, fake_slack: FakeSlackApi) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        now = datetime.now(UTC)
        with store.session() as s:
            s.add(ProcessedDelivery(key="click:old", created_at=now - timedelta(days=2)))
            s.add(ProcessedDelivery(key="click:new", created_at=now - timedelta(minutes=5)))
        bot = make_bot(store, fake_slack, make_config(tmp_path), Clock())
        assert bot.reminders.forget_old_deliveries() == 1
        with store.read_session() as s:
            assert [d.key for d in s.scalars(sa.select(ProcessedDelivery))] == ["click:new"]
    finally:
        store.dispose()
