"""Every lock and lease the bot takes, in one place: the migration lock, the scheduler lease, step execution."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:  # db.py imports this module for MIGRATION_LOCK
    from bot.store.db import Store

log = logging.getLogger(__name__)

# PostgreSQL advisory lock ids. Single-key ids are 64-bit; the lease uses the two-key form (namespace, key).
MIGRATION_LOCK = 7_411_002  # serialises concurrent schema upgrades (pg_advisory_xact_lock)
LEASE_NAMESPACE = 7_411_003  # (namespace, hash of the schema holding the job store): one scheduler leader per store
EXECUTION_LOCK_PREFIX = "failover-bot:execute:"  # hashed with run and step: held while a process executes the step


def migration_lock(conn: sa.Connection) -> None:
    """Serialise schema upgrades of several processes (PostgreSQL; released when ``conn``'s transaction ends)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})


def execution_lock_key(run_id: str, step_id: str) -> int:
    """The PostgreSQL advisory lock id held while a process executes ``step_id`` of ``run_id``."""
    digest = hashlib.sha256(f"{EXECUTION_LOCK_PREFIX}{run_id}:{step_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def execution_lock(store: Store, run_id: str, step_id: str) -> Iterator[bool]:
    """Held by the process that executes ``step_id``: yields False when another live process holds it.

    On PostgreSQL this is a session advisory lock on a connection of its own; the database drops
    it when the process dies, so a replica's start-up recovery can tell a step that is running
    elsewhere from one whose process is gone. SQLite has one process: always True.
    """
    if store.dialect != "postgresql":
        yield True
        return
    key = execution_lock_key(run_id, step_id)
    conn = store.engine.connect()
    try:
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    except BaseException:
        conn.invalidate()  # closing the session releases the lock whatever state it is in
        raise
    finally:
        conn.close()


class Lease(Protocol):
    """The right to run the scheduler: at most one holder per job store."""

    def acquire(self) -> bool: ...

    def held(self) -> bool: ...

    def release(self) -> None: ...


class PostgresLease:
    """A session-level advisory lock on a dedicated connection: held while that connection lives.

    When the holder dies, PostgreSQL ends its session and the lock is free for another replica.
    """

    def __init__(self, store: Store) -> None:
        self._engine = sa.create_engine(store.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._conn: sa.Connection | None = None
        self._holding = False
        self._pid: int | None = None
        self._guard = threading.RLock()  # the lease thread and job threads share one connection

    def acquire(self) -> bool:
        with self._guard:
            if self._holding and self.held():
                return True  # session-level locks stack; never take it twice
            try:
                if self._conn is None:
                    self._conn = self._engine.connect()
                    self._pid = int(self._conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                got = self._conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:ns, hashtext(current_schema()))"), {"ns": LEASE_NAMESPACE}
                ).scalar()
            except SQLAlchemyError as exc:
                log.warning("cannot try the scheduler lock: %s", exc)
                self._drop()
                return False
            self._holding = bool(got)
            return self._holding

    def held(self) -> bool:
        with self._guard:
            if self._conn is None or not self._holding:
                return False
            try:
                self._conn.execute(sa.text("SELECT 1"))
            except SQLAlchemyError:
                self._drop()  # the session, and with it the lock, is gone
                return False
            return True

    def release(self) -> None:
        with self._guard:
            self._drop()
        self._engine.dispose()

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend holding (or trying for) the lock; tests end it to play a dying leader."""
        with self._guard:
            return self._pid if self._conn is not None else None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._holding = False
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:
                log.debug("closing the scheduler lock connection failed", exc_info=True)


class FileLease:
    """An exclusive flock on a file beside the SQLite database; the kernel releases it when the process dies."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self.path is None:
            return True  # an in-memory database: nobody else can share it
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held(self) -> bool:
        return self.path is None or self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def lease_for(store: Store) -> Lease:
    if store.dialect == "postgresql":
        return PostgresLease(store)
    database = store.engine.url.database if store.dialect == "sqlite" else None
    if not database or database == ":memory:":
        return FileLease(None)
    return FileLease(f"{database}.scheduler-lock")
