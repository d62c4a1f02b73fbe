"""How a change reaches the worker through the ChangeHub without the worker re-kicking itself on its own news."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

Publish = Callable[[str, str], None]  # (run_id, what changed): the ChangeHub's publish


class Kickable(Protocol):
    def kick(self, run_id: str) -> object: ...


_origin = threading.local()  # set while the worker itself publishes (subscribers run on the publishing thread)


def from_worker(publish: Publish) -> Publish:
    """The worker's notify: publishes its changes, marked as the worker's own."""

    def notify(run_id: str, what: str = "") -> None:
        _origin.worker = True
        try:
            publish(run_id, what)
        finally:
            _origin.worker = False

    return notify


def kicks(worker: Kickable) -> Publish:
    """A hub subscriber that wakes the worker for every change but the worker's own (it is already looking)."""

    def on_change(run_id: str, what: str = "") -> None:
        if not getattr(_origin, "worker", False):
            worker.kick(run_id)

    return on_change
