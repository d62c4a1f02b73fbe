"""SQLite writers of one process queue fairly for the write lock: none starves into "database is locked"."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store.db import Store

THREADS = 64  # as many as the worker's fan-out runs targets at once
WRITES = 60


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    # A small busy timeout: SQLite's busy handler (sleep and retry, unfair) lets some of 64 writers
    # starve past it; a FIFO queue serves each of them in about THREADS short transactions.
    st = Store(f"sqlite:///{tmp_path / 'bot.db'}", busy_timeout=1.0)
    with st.session() as s:
        s.execute(sa.text("CREATE TABLE writes (thread INTEGER, n INTEGER, seen INTEGER, PRIMARY KEY (thread, n))"))
    yield st
    st.dispose()


def _write(store: Store, thread: int, n: int) -> None:
    with store.session() as s:  # read, then write: the shape of the worker's claim and finish
        seen = s.execute(sa.text("SELECT count(*) FROM writes")).scalar_one()
        s.execute(sa.text("INSERT INTO writes VALUES (:t, :n, :seen)"), {"t": thread, "n": n, "seen": seen})


def test_many_threads_of_short_writes_never_meet_database_is_locked(store: Store) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def writer(thread: int) -> None:
        start.wait()
        for n in range(WRITES):
            try:
                _write(store, thread, n)
            except sa.exc.OperationalError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    with store.read_session() as s:
        rows = s.execute(sa.text("SELECT thread, n, seen FROM writes")).all()
    assert sorted((r.thread, r.n) for r in rows) == [(t, n) for t in range(THREADS) for n in range(WRITES)]
    # each write saw every earlier one: they were serialised, none lost or doubled
    assert sorted(r.seen for r in rows) == list(range(THREADS * WRITES))


def test_a_writer_behind_a_holder_that_never_releases_fails_after_the_timeout(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}", busy_timeout=0.3)
    held = threading.Event()
    done = threading.Event()

    def holder() -> None:
        with store.session() as s:
            s.execute(sa.text("SELECT 1"))
            held.set()
            done.wait(timeout=30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(timeout=10)
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with store.session() as s:
                s.execute(sa.text("SELECT 1"))
        assert time.monotonic() - started < 10  # bounded: the timeout, not forever
    finally:
        done.set()
        t.join(timeout=30)
    with store.session() as s:  # the turn is free again once the holder ends
        assert s.execute(sa.text("SELECT 1")).scalar_one() == 1
    store.dispose()


def test_a_write_session_nested_on_the_same_thread_meets_sqlite_lock_as_before(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}", busy_timeout=0.2)
    with store.session() as outer:
        outer.execute(sa.text("SELECT 1"))
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with store.session() as inner:  # not a wait on our own queue: SQLite's busy handler refuses it
                inner.execute(sa.text("SELECT 1"))
    store.dispose()


def test_a_failed_write_leaves_the_turn_for_the_next_writer(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}", busy_timeout=0.3)
    with pytest.raises(RuntimeError):
        with store.session() as s:
            s.execute(sa.text("SELECT 1"))
            raise RuntimeError("boom")
    with store.session() as s:
        assert s.execute(sa.text("SELECT 1")).scalar_one() == 1
    store.dispose()
