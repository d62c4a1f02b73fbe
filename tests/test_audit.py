"""The audit log: a hash chain per run that concurrent writers cannot fork and tampering cannot hide."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from bot.store import audit
from bot.store.db import Store


def _fill(store: Store, n: int = 5) -> None:
    for i in range(n):
        audit.record(store, "FO-1", f"U{i}", "approval", step_id=f"F{i}", detail={"n": i})


def _check(store: Store) -> audit.ChainCheck:
    with store.session() as s:
        return audit.check_run(s, "FO-1")


def test_intact_chain(store: Store) -> None:
    _fill(store)
    check = _check(store)
    assert check.intact and check.problems == ()


def test_altered_row_is_reported(store: Store) -> None:
    _fill(store)
    with store.session() as s:
        s.execute(sa.text("UPDATE audit_events SET actor = 'U9' WHERE seq = 3"))
    check = _check(store)
    assert not check.intact
    assert any("#3" in p and "altered" in p for p in check.problems)


def test_deleted_row_in_the_middle_is_reported(store: Store) -> None:
    _fill(store)
    with store.session() as s:
        s.execute(sa.text("DELETE FROM audit_events WHERE seq = 2"))
    assert "event #2 is missing" in " ".join(_check(store).problems)


def test_deleted_last_row_is_reported(store: Store) -> None:
    _fill(store)
    with store.session() as s:
        s.execute(sa.text("DELETE FROM audit_events WHERE seq = 5"))
    assert "events removed" in " ".join(_check(store).problems)


def test_reordered_rows_are_reported(store: Store) -> None:
    _fill(store)
    with store.session() as s:
        s.execute(sa.text("UPDATE audit_events SET seq = 100 WHERE seq = 2"))
        s.execute(sa.text("UPDATE audit_events SET seq = 2 WHERE seq = 3"))
        s.execute(sa.text("UPDATE audit_events SET seq = 3 WHERE seq = 100"))
    assert not _check(store).intact


def test_secrets_and_guids_never_stored(store: Store) -> None:
    guid = "a40b132e-b8b1-4316-b1f2-c27d301ad2e5"
    audit.record(
        store,
        "FO-1",
        "U1",
        "execution.finished",
        detail={"password": "hunter2", "otp": "a40b132e", "note": f"guid {guid}"},
    )
    with store.session() as s:
        text = " ".join(e.detail for e in audit.events_of(s, "FO-1"))
    assert "hunter2" not in text and guid not in text and "a40b132e" not in text
    assert "c27d301ad2e5" in text


def test_concurrent_writers_do_not_fork_the_chain(store: Store) -> None:
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(5):
                audit.record(store, "FO-1", f"U{i}", "click", detail={"j": j})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with store.session() as s:
        events = audit.events_of(s, "FO-1")
    assert [e.seq for e in events] == list(range(1, 41))
    assert _check(store).intact


def test_a_chain_read_while_another_process_appends_is_intact(store: Store) -> None:
    """An event committed between the reader's events query and its head query is not "events removed"
    (seen under load in test_replicas on PostgreSQL, where each statement sees the newest commits)."""
    from sqlalchemy import event as sa_event
    from sqlalchemy.orm import ORMExecuteState

    from bot.store.models import AuditEvent

    _fill(store, 3)
    appended: list[bool] = []

    def events_then_another_writer(state: ORMExecuteState):  # type: ignore[no-untyped-def]
        if appended or AuditEvent.__table__ not in state.statement.get_final_froms():
            return None
        result = state.invoke_statement()  # the reader's events query runs first ...
        writer = threading.Thread(target=audit.record, args=(store, "FO-1", "U9", "click"))
        writer.start()  # ... then another process appends and commits one more event
        writer.join(10)
        appended.append(True)
        return result

    with store.session() as s:
        sa_event.listen(s, "do_orm_execute", events_then_another_writer)
        check = audit.check_run(s, "FO-1")
    assert appended == [True]
    assert check.intact, check.problems
