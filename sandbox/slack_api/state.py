"""The state the Slack stand-in holds for one workspace, and its record of every call it answered."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import ThreadingHTTPServer
from typing import Any, TypeVar

from sandbox.slack_api.model import (
    BOT_USER_ID,
    DEFAULT_TOKEN,
    TEAM_ID,
    ApiCall,
    Ephemeral,
    Injection,
    Message,
    OpenView,
    ResponseUrl,
    SlackApiError,
    Trigger,
    UploadedFile,
)

T = TypeVar("T")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


class SlackState:
    """Messages, ephemerals, files, modals, people and tokens of one workspace, and every call answered so far.

    The Web API areas (messages.py, views.py, files.py, directory.py, auth.py) work on this state;
    server.py serves them over HTTP. Every access holds ``_lock``; ``_changed`` wakes ``wait_for``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        usergroups: Mapping[str, list[str]] | None = None,
        users: Mapping[str, str] | None = None,
        channels: Mapping[str, str] | None = None,
        team_id: str = TEAM_ID,
        bot_user_id: str = BOT_USER_ID,
        app_token: str | None = None,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"FakeSlackApi binds loopback only, not {host!r}")
        self.host = host
        self.port = port
        self.token = token
        self.app_token = app_token  # the app-level token (xapp-...), the only one apps.connections.open takes
        self.socket_mode_url: str | None = None  # what apps.connections.open hands out (a ws:// loopback URL)
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in (usergroups or {}).items()}
        self.users: dict[str, str] = dict(users or {})
        self.channels: dict[str, str] | None = dict(channels) if channels is not None else None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[ApiCall] = []
        self._messages: dict[tuple[str, str], Message] = {}
        self._ephemerals: list[Ephemeral] = []
        self._response_urls: dict[str, ResponseUrl] = {}
        self._injections: dict[str, list[Injection]] = {}
        self._ts_counter = 0
        self.not_member: set[str] = set()  # channels the bot was not invited to: posting answers not_in_channel
        self.home_views: dict[str, dict[str, Any]] = {}  # user -> the home tab last published for them
        self._files: dict[str, UploadedFile] = {}
        self._views: dict[str, OpenView] = {}
        self._triggers: dict[str, Trigger] = {}
        self.clock: Callable[[], float] = time.monotonic  # trigger_ids expire by this clock
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlackApi is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` for slack_sdk's WebClient (trailing slash included)."""
        return f"{self.url}/api/"

    # ---- the record of calls ---------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[ApiCall]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def all_text(self) -> str:
        """Every string anyone sent to this fake (messages, updates, ephemerals, response_url posts), one per line."""
        with self._lock:
            return "\n".join(s for call in self._calls for s in _strings(call.params))

    def wait_for(self, condition: Callable[[], T], *, timeout: float = 5.0, what: str = "condition") -> T:
        """Wait until ``condition()`` is truthy (re-checked on every call received) and return its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = condition()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                self._changed.wait(min(remaining, 0.1))

    def wait_for_calls(self, method: str, count: int = 1, *, timeout: float = 5.0) -> list[ApiCall]:
        """Wait until ``method`` was answered successfully at least ``count`` times."""

        def enough() -> list[ApiCall]:
            ok = [c for c in self.calls(method) if c.error is None]
            return ok if len(ok) >= count else []

        return self.wait_for(enough, timeout=timeout, what=f"{count} successful {method} call(s)")

    def _record(self, method: str, params: dict[str, Any], status: int, error: str | None) -> None:
        with self._changed:
            safe = {k: v for k, v in params.items() if k != "token"}
            self._calls.append(ApiCall(method, safe, time.time(), status, error))
            self._changed.notify_all()

    # ---- shared by the Web API areas -------------------------------------------------------------

    def _next_ts(self) -> str:
        self._ts_counter += 1
        seconds, frac = divmod(self._ts_counter, 10000)
        return f"{1700000000 + seconds}.{frac * 100:06d}"

    def _check_channel(self, channel: Any) -> str:
        if not channel or not isinstance(channel, str):
            raise SlackApiError("channel_not_found")
        if self.channels is not None and channel not in self.channels:
            raise SlackApiError("channel_not_found")
        return channel
