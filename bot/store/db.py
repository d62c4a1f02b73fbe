"""The database behind the bot's state: engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.store import locks
from bot.store.keys import AuditKeys
from bot.times import as_utc as as_utc  # the store's readers take both from here too
from bot.times import utcnow as utcnow

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_S = 10.0  # how long a SQLite writer waits for the write lock (in-process queue, then SQLite's own)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _private_sqlite_file(url: str) -> None:
    """The SQLite file holds run state and the audit log: readable by its owner only (0600).

    Created so before SQLite opens it; SQLite gives its -wal and -shm files the database file's mode.
    An existing file (and its -wal/-shm) readable by others is tightened.
    """
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            mode = os.stat(name).st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(name, 0o600)


def _sqlite_pragmas(busy_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite otherwise starts transactions lazily, at the first write).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def _sqlite_read_only_pragmas(busy_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # No journal_mode here: switching it is a write; a read-only connection reads whatever mode the file has.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return on_connect


class WriteQueue:
    """One process's SQLite writers of one database file, served first come, first served.

    SQLite's busy handler sleeps and retries, so under contention one writer can starve past the
    busy timeout while others take the lock again and again. Writers of this process therefore
    queue here before ``BEGIN IMMEDIATE`` and leave after commit or rollback; only another process
    (web vs worker) still meets SQLite's busy handler. A turn is waited for at most ``timeout``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[threading.Condition] = deque()  # one per waiter, woken alone when it is first
        self._owner: int | None = None

    def held_here(self) -> bool:
        """True when this thread holds the turn (a nested write session then behaves as before)."""
        return self._owner == threading.get_ident()

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            me = threading.Condition(self._lock)
            self._waiting.append(me)
            while self._owner is not None or self._waiting[0] is not me:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._waiting.remove(me)
                    self._wake_first()  # this waiter may have been first in line
                    return False
                me.wait(remaining)
            self._waiting.popleft()
            self._owner = threading.get_ident()
            return True

    def release(self) -> None:
        with self._lock:
            self._owner = None
            self._wake_first()

    def _wake_first(self) -> None:
        if self._owner is None and self._waiting:
            self._waiting[0].notify()


_queues: dict[str, WriteQueue] = {}
_queues_guard = threading.Lock()


def _write_queue(key: str) -> WriteQueue:
    with _queues_guard:
        return _queues.setdefault(key, WriteQueue())


def _forget_queues() -> None:
    # A forked child has only the forking thread: turns held by the parent's other threads are not its own.
    global _queues_guard
    _queues_guard = threading.Lock()
    _queues.clear()


os.register_at_fork(after_in_child=_forget_queues)


def _locked_error(waited: float) -> sa.exc.OperationalError:
    """What SQLAlchemy raises when SQLite's busy timeout runs out, for a turn in the queue that did."""
    return sa.exc.OperationalError(
        f"BEGIN IMMEDIATE (queued {waited:.1f} s for this process's write turn)",
        None,
        sqlite3.OperationalError("database is locked"),
    )


def _sqlite_begin(conn: sa.Connection) -> None:
    # Readers (read_session) take no lock at all: WAL lets them run beside a writer.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")


def changed_rows(session: Session | sa.Connection, statement: sa.Executable) -> int:
    """Rows an UPDATE or DELETE touched (``execute`` is typed as returning Result; it is a CursorResult)."""
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0))


def shown_url(url: str) -> str:
    """``url`` as it may be printed: the password hidden."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unreadable database URL>"


def _sqlite_key(url: str) -> str | None:
    """The file a SQLite URL names, resolved (None for an in-memory database: each Store has its own)."""
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return str(Path(path).resolve())


def _sqlite_read_only_url(url: str) -> str:
    """A ``mode=ro`` URI for an existing SQLite file: opening it creates nothing; MissingDatabase otherwise."""
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or not Path(path).is_file():
        raise MissingDatabase(url)
    return f"sqlite:///file:{quote(str(Path(path).resolve()))}?mode=ro&uri=true"


class MissingDatabase(Exception):
    """There is no database at the URL a read-only Store was asked to open."""

    def __init__(self, url: str) -> None:
        super().__init__(f"no database at {shown_url(url)}")
        self.url = url


class Store:
    """Owns the engine; hands out one session per unit of work (never shared across threads)."""

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        read_only: bool = False,
        audit_keys: AuditKeys | None = None,
        busy_timeout: float | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.read_only = read_only
        self.busy_timeout = BUSY_TIMEOUT_S if busy_timeout is None else busy_timeout
        self._write_queue: WriteQueue | None = None
        self.audit_keys = audit_keys or AuditKeys()  # every session's audit events are sealed with these
        kwargs: dict[str, Any] = {"future": True}
        engine_url = self.url
        if self.url.startswith("sqlite"):
            if not read_only:  # a reader creates no file
                _private_sqlite_file(self.url)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": self.busy_timeout}
            if read_only:
                engine_url = _sqlite_read_only_url(self.url)
            else:
                self._write_queue = _write_queue(_sqlite_key(self.url) or f"store:{id(self)}")
        else:
            kwargs["pool_pre_ping"] = True
            if read_only:  # every transaction of this engine refuses writes
                kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
        self.engine: Engine = sa.create_engine(engine_url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            pragmas = _sqlite_read_only_pragmas if read_only else _sqlite_pragmas
            event.listen(self.engine, "connect", pragmas(int(self.busy_timeout * 1000)))
            # BEGIN IMMEDIATE: a unit of work that reads then writes holds the write lock from its
            # start, so two of them cannot both read the same state and then both write.
            event.listen(self.engine, "begin", _sqlite_begin)
        info = {"audit_keys": self.audit_keys}
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(read_only=True), expire_on_commit=False, info=info
        )
        if migrate and not read_only:
            self.migrate()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest revision (safe to call from several processes at once)."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self._write_turn(), self.engine.begin() as conn:
            locks.migration_lock(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._write_turn(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """On SQLite, this process's turn to write the file: taken before BEGIN IMMEDIATE, left after it ends."""
        queue = self._write_queue
        if queue is None or queue.held_here():  # PostgreSQL, a reader, or nested: as before
            yield
            return
        started = time.monotonic()
        if not queue.acquire(self.busy_timeout):
            raise _locked_error(time.monotonic() - started)
        try:
            yield
        finally:
            queue.release()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading only: on SQLite it does not queue behind writers for the write lock."""
        with self._read_sessions() as session:
            yield session  # closing the session rolls its (read-only) transaction back

    def healthy(self) -> bool:
        """True when the database answers (for ``GET /healthz``)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
