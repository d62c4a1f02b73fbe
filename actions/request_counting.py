"""Counting the HTTP requests a WinRM connection sends, for benches and tests: a requests transport adapter
mounted on a host's HTTP session when the executor is given a hook. Nothing here runs unless one is."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import BaseAdapter, HTTPAdapter


@dataclass(frozen=True)
class RequestEvent:
    """One HTTP request sent to a host: its WS-Man action (None when encrypted) and new TCP connections."""

    host: str
    action: str | None
    new_connections: int


RequestHook = Callable[[RequestEvent], None]


@dataclass
class RequestCounter:
    """A request hook that tallies HTTP requests, TCP connections and WS-Man actions (thread-safe)."""

    requests: int = 0
    connections: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, event: RequestEvent) -> None:
        with self._lock:
            self.requests += 1
            self.connections += event.new_connections
            self.actions[event.action or "?"] += 1


_ACTION = re.compile(rb"<a:Action[^>]*>[^<]*/([A-Za-z]+)</a:Action>")


class CountingAdapter(BaseAdapter):
    """Sends through the session's own adapter (its pool, so its authenticated connections) and reports each
    request to a hook; answers name this adapter, so authentication legs (NTLM's) are reported too."""

    def __init__(self, inner: HTTPAdapter, host: str, hook: RequestHook) -> None:
        super().__init__()
        self._inner = inner
        self._host = host
        self._hook = hook

    def _connections(self) -> int:
        pools = self._inner.poolmanager.pools
        return sum(getattr(pools.get(key), "num_connections", 0) for key in pools.keys())

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        before = self._connections()
        try:
            response = self._inner.send(request, *args, **kwargs)
            # requests_ntlm sends its next leg through response.connection: through this adapter, so it is counted
            response.connection = self  # type: ignore[assignment]
            return response
        finally:
            body = request.body if isinstance(request.body, bytes) else b""
            match = _ACTION.search(body)
            action = match.group(1).decode() if match else None
            self._hook(RequestEvent(self._host, action, max(0, self._connections() - before)))

    def close(self) -> None:
        self._inner.close()


def count_session(session: requests.Session, host: str, hook: RequestHook) -> None:
    """Report every request ``session`` sends to ``hook``, through the adapters (and connections) it already has."""
    for prefix, adapter in list(session.adapters.items()):
        if isinstance(adapter, HTTPAdapter):
            session.mount(prefix, CountingAdapter(adapter, host, hook))
