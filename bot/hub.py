"""The change hub: after a run changed (its events recorded), whoever shows, reminds or executes is told once,
in this process or, through a pipe or the audit log's sequence, in the worker process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

from bot.store.db import Store
from bot.store.models import AuditEvent

log = logging.getLogger(__name__)

Subscriber = Callable[[str, str], None]  # (run_id, what changed)
KICK = "kick"  # a change published only to wake the worker (nothing to show)


class ChangeHub:
    """Calls every subscriber with ``(run_id, what)`` for each published change, in subscription order.

    A subscriber that raises is logged and does not keep the others from hearing of the change: the
    change itself is already recorded, and the thread or the reminders catch up on the next one.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def publish(self, run_id: str, what: str = "") -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(run_id, what)
            except Exception:  # one broken subscriber must not silence the others
                log.exception("a subscriber to run %s's changes failed (%s)", run_id, what or "change")


def encode_change(run_id: str, what: str) -> bytes:
    """One line of the web → worker pipe: ``run_id<TAB>what<LF>`` (neither may hold a tab or a newline)."""

    def clean(text: str) -> str:
        return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")

    return f"{clean(run_id)}\t{clean(what)}\n".encode()


def decode_change(line: bytes) -> tuple[str, str] | None:
    run_id, sep, what = line.decode("utf-8", "replace").rstrip("\n").partition("\t")
    return (run_id, what) if sep and run_id else None


class Inbox:
    """Changes heard from another process, coalesced per run and delivered on one thread of their own.

    ``deliver(run_id, whats)`` is called once per run for everything that arrived while the previous
    delivery ran, so a burst of fifty clicks on one run costs a few deliveries, not fifty.
    """

    def __init__(self, deliver: Callable[[str, set[str]], None]) -> None:
        self._deliver = deliver
        self._pending: dict[str, set[str]] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="change-inbox", daemon=True)
        self._thread.start()

    def put(self, run_id: str, what: str) -> None:
        with self._cond:
            self._pending.setdefault(run_id, set()).add(what)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                batch, self._pending = self._pending, {}
            for run_id, whats in batch.items():
                try:
                    self._deliver(run_id, whats)
                except Exception:  # the next change of the run delivers again; this one is logged
                    log.exception("delivering a change of run %s failed", run_id)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=10)


class AuditTail:
    """Polls the audit log's sequence: each new event wakes its run in this process (separately deployed roles).

    Event ids are assigned before commit, so on PostgreSQL a lower id can become visible after a higher
    one: the tail re-reads a window of ``window`` ids below the newest it saw and skips those it knows.
    """

    def __init__(self, store: Store, inbox: Inbox, *, interval_s: float = 0.075, window: int = 500) -> None:
        self.store = store
        self.inbox = inbox
        self.interval_s = interval_s
        self.window = window
        self._top = self._newest()
        self._seen: set[int] = self._ids_above(self._top - window)  # already there: not news
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit-tail", daemon=True)

    def _newest(self) -> int:
        with self.store.read_session() as s:
            return int(s.scalar(sa.select(sa.func.max(AuditEvent.id))) or 0)

    def _ids_above(self, low: int) -> set[int]:
        with self.store.read_session() as s:
            return set(s.scalars(sa.select(AuditEvent.id).where(AuditEvent.id > low)))

    def start(self) -> AuditTail:
        self._thread.start()
        return self

    def poll(self) -> int:
        """Read the events newer than the window once; returns how many were new."""
        low = max(0, self._top - self.window)
        with self.store.read_session() as s:
            rows = s.execute(sa.select(AuditEvent.id, AuditEvent.run_id).where(AuditEvent.id > low)).all()
        new = [(i, run_id) for i, run_id in rows if i not in self._seen and i > low]
        for i, run_id in new:
            self._seen.add(i)
            self.inbox.put(run_id, "")
        if new:
            self._top = max(self._top, max(i for i, _ in new))
        floor = self._top - self.window
        self._seen = {i for i in self._seen if i > floor}
        return len(new)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except sa.exc.SQLAlchemyError as exc:  # the database is away for a moment: try again next tick
                log.warning("cannot read the audit log's new events: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
