"""The change hub: after a run changed (its events recorded), whoever shows, reminds or executes is told once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Subscriber = Callable[[str, str], None]  # (run_id, what changed)


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
