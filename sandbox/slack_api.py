"""A loopback HTTP server that plays Slack's Web API and response_url endpoints, recording every call."""

from __future__ import annotations

import copy
import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

T = TypeVar("T")

DEFAULT_TOKEN = "xoxb-sandbox-token"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
TEAM_ID = "T0TEST"
RESPONSE_URL_MAX_POSTS = 5

# Block Kit limits Slack enforces (NOTES.md, "Slack platform rules"); the fake refuses what Slack refuses.
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID_LENGTH = 255
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_MESSAGE_TEXT = 40000
MAX_CONFIRM_BUTTON = 30
MAX_HEADER_TEXT = 150
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MIN_OVERFLOW_OPTIONS = 2
MAX_OVERFLOW_OPTIONS = 5
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_CHOICE_OPTIONS = 10
MAX_INPUT_LENGTH = 3000
MAX_LABEL = 2000
MAX_VIEW_BLOCKS = 100  # a view (home tab, modal) may hold twice a message's blocks
MAX_VIEW_TEXT = 24
MAX_PRIVATE_METADATA = 3000
TRIGGER_TTL_S = 3.0  # a trigger_id is good for one views.open within 3 s


@dataclass(frozen=True)
class ApiCall:
    """One request the fake received: Web API method (or ``response_url``), its parameters, when, and the answer."""

    method: str
    params: dict[str, Any]
    time: float
    status: int = 200
    error: str | None = None


@dataclass
class Message:
    """A message as Slack stores it; ``blocks``/``text`` are the latest version, ``history`` the earlier ones."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    user: str = BOT_USER_ID
    thread_ts: str | None = None
    reply_broadcast: bool = False
    posted_at: float = 0.0
    updated_at: float | None = None
    history: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    deleted: bool = False
    files: list[dict[str, Any]] = field(default_factory=list)  # files shared with this message (id, name, title)

    @property
    def edits(self) -> int:
        return len(self.history)

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@dataclass
class Ephemeral:
    """A message only ``user`` sees: from chat.postEphemeral or a response_url post."""

    user: str
    channel: str | None
    text: str
    blocks: list[dict[str, Any]]
    message_ts: str
    thread_ts: str | None = None
    via: str = "chat.postEphemeral"
    posted_at: float = 0.0
    history: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    deleted: bool = False


@dataclass
class UploadedFile:
    """A file of the external upload flow: announced (getUploadURLExternal), uploaded, then completed."""

    id: str
    filename: str
    length: int
    upload_url: str
    alt_txt: str | None = None
    snippet_type: str | None = None
    content: bytes | None = None  # None until the bytes were POSTed to the upload URL
    title: str | None = None
    completed: bool = False
    channel: str | None = None
    thread_ts: str | None = None


@dataclass
class OpenView:
    """A modal as Slack holds it for one user: opened with a trigger_id, closed on submit or cancel."""

    id: str
    user: str
    view: dict[str, Any]
    trigger_id: str
    opened_at: float
    hash: str
    closed: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def callback_id(self) -> str:
        return str(self.view.get("callback_id", ""))

    @property
    def private_metadata(self) -> str:
        return str(self.view.get("private_metadata", ""))


@dataclass
class _Trigger:
    user: str
    issued_at: float
    used: bool = False


@dataclass
class _ResponseUrl:
    user: str
    channel: str | None
    message_ts: str | None
    thread_ts: str | None
    ephemeral_ts: str | None
    posts: int = 0


@dataclass
class _Injection:
    times: int
    status: int
    error: str
    retry_after: int | None = None


class SlackApiError(Exception):
    """An error answer of the fake: ``error`` is Slack's error code."""

    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


def _parse_blocks(raw: Any) -> list[dict[str, Any]]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SlackApiError("invalid_blocks_format") from exc
    if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
        raise SlackApiError("invalid_blocks_format")
    return copy.deepcopy(raw)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _plain(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def _element_problems(where: str, element: Any) -> list[str]:
    """Slack's rules for one interactive element (button, overflow, input elements)."""
    if not isinstance(element, dict):
        return [f"{where}: element is not an object"]
    problems: list[str] = []
    kind = element.get("type")
    if len(str(element.get("action_id", ""))) > MAX_ID_LENGTH:
        problems.append(f"{where}: action_id longer than {MAX_ID_LENGTH}")
    if kind == "button":
        text = element.get("text")
        if not isinstance(text, dict) or text.get("type") != "plain_text" or not _plain(text):
            problems.append(f"{where}: a button needs plain_text text")
        elif len(_plain(text)) > MAX_BUTTON_TEXT:
            problems.append(f"{where}: button text longer than {MAX_BUTTON_TEXT}")
        if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
            problems.append(f"{where}: button value longer than {MAX_BUTTON_VALUE}")
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(f"{where}: button style {element.get('style')!r}")
    elif kind == "overflow":
        options = element.get("options")
        if not isinstance(options, list) or not MIN_OVERFLOW_OPTIONS <= len(options) <= MAX_OVERFLOW_OPTIONS:
            problems.append(f"{where}: an overflow menu needs {MIN_OVERFLOW_OPTIONS}-{MAX_OVERFLOW_OPTIONS} options")
        for option in options if isinstance(options, list) else []:
            if not isinstance(option, dict) or not _plain(option.get("text")):
                problems.append(f"{where}: an option needs text")
                continue
            if option["text"].get("type") != "plain_text" or len(_plain(option["text"])) > MAX_OPTION_TEXT:
                problems.append(f"{where}: option text must be plain_text of at most {MAX_OPTION_TEXT}")
            if len(str(option.get("value", ""))) > MAX_OPTION_VALUE:
                problems.append(f"{where}: option value longer than {MAX_OPTION_VALUE}")
            if "style" in option:
                problems.append(f"{where}: options have no style (an overflow option cannot be red)")
    elif kind == "plain_text_input":
        if len(str(element.get("initial_value", ""))) > MAX_INPUT_LENGTH:
            problems.append(f"{where}: initial_value longer than {MAX_INPUT_LENGTH}")
    elif kind in ("checkboxes", "radio_buttons", "static_select"):
        options = element.get("options")
        if not isinstance(options, list) or not 1 <= len(options) <= MAX_CHOICE_OPTIONS:
            problems.append(f"{where}: {kind} needs 1-{MAX_CHOICE_OPTIONS} options")
        for option in options if isinstance(options, list) else []:
            if not isinstance(option, dict) or not _plain(option.get("text")):
                problems.append(f"{where}: an option needs text")
                continue
            if len(_plain(option["text"])) > MAX_OPTION_TEXT:
                problems.append(f"{where}: option text longer than {MAX_OPTION_TEXT}")
            if "description" in option and len(_plain(option["description"])) > MAX_OPTION_TEXT:
                problems.append(f"{where}: option description longer than {MAX_OPTION_TEXT}")
    confirm = element.get("confirm")
    if isinstance(confirm, dict):
        if len(_plain(confirm.get("title"))) > MAX_CONFIRM_TITLE:
            problems.append(f"{where}: confirm title longer than {MAX_CONFIRM_TITLE}")
        if len(_plain(confirm.get("text"))) > MAX_CONFIRM_TEXT:
            problems.append(f"{where}: confirm text longer than {MAX_CONFIRM_TEXT}")
        for key in ("confirm", "deny"):
            if len(_plain(confirm.get(key))) > MAX_CONFIRM_BUTTON:
                problems.append(f"{where}: confirm {key} longer than {MAX_CONFIRM_BUTTON}")
    return problems


def block_problems(blocks: list[dict[str, Any]], *, limit: int = MAX_BLOCKS, surface: str = "message") -> list[str]:
    """Reasons Slack would answer ``invalid_blocks`` for these blocks (empty when they are acceptable).

    The rules the bot relies on: block count; unique block_id per message or view; unique action_id
    within a block; text, field, button, option and confirm limits; input blocks only where allowed.
    """
    problems: list[str] = []
    if len(blocks) > limit:
        problems.append(f"{len(blocks)} blocks, more than {limit}")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if not kind:
            problems.append(f"block {i} has no type")
            continue
        where = f"block {i} ({kind})"
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > MAX_ID_LENGTH:
                problems.append(f"{where}: block_id longer than {MAX_ID_LENGTH}")
            if str(block_id) in block_ids:
                problems.append(f"{where}: duplicate block_id {block_id!r}")
            block_ids.add(str(block_id))
        text = block.get("text")
        if kind == "section":
            fields = block.get("fields")
            if not text and not fields:
                problems.append(f"{where}: a section needs text or fields")
            if isinstance(text, dict) and not 1 <= len(str(text.get("text", ""))) <= MAX_SECTION_TEXT:
                problems.append(f"{where}: section text must be 1-{MAX_SECTION_TEXT} characters")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
                    problems.append(f"{where}: more than {MAX_FIELDS} fields")
                else:
                    problems += [
                        f"{where}: a field longer than {MAX_FIELD_TEXT}"
                        for f in fields
                        if len(_plain(f)) > MAX_FIELD_TEXT
                    ]
        elif kind == "header":
            if not isinstance(text, dict) or text.get("type") != "plain_text" or not _plain(text):
                problems.append(f"{where}: a header needs plain_text text")
            elif len(_plain(text)) > MAX_HEADER_TEXT:
                problems.append(f"{where}: header text longer than {MAX_HEADER_TEXT}")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                problems.append(f"{where}: a context needs 1-{MAX_CONTEXT_ELEMENTS} elements")
            else:
                problems += [
                    f"{where}: context text must be 1-{MAX_SECTION_TEXT} characters"
                    for e in elements
                    if isinstance(e, dict) and "text" in e and not 1 <= len(str(e["text"])) <= MAX_SECTION_TEXT
                ]
        elif kind == "input":
            if surface == "message":
                problems.append(f"{where}: input blocks belong in modals here, not in messages")
            if not _plain(block.get("label")) or len(_plain(block.get("label"))) > MAX_LABEL:
                problems.append(f"{where}: an input needs a label of at most {MAX_LABEL}")
            problems += _element_problems(where, block.get("element"))
        interactive: list[Any] = []
        if kind == "actions":
            interactive = list(block.get("elements") or [])
            if not 1 <= len(interactive) <= MAX_ACTIONS_ELEMENTS:
                problems.append(f"{where}: an actions block needs 1-{MAX_ACTIONS_ELEMENTS} elements")
        if isinstance(block.get("accessory"), dict):
            interactive.append(block["accessory"])
        action_ids: set[str] = set()
        for element in interactive:
            problems += _element_problems(where, element)
            action_id = element.get("action_id") if isinstance(element, dict) else None
            if action_id is not None:
                if action_id in action_ids:
                    problems.append(f"{where}: duplicate action_id {action_id!r} in one block")
                action_ids.add(action_id)
    return problems


def view_problems(view: Any) -> list[str]:
    """Reasons Slack would refuse this view in views.open / views.update (empty when acceptable)."""
    if not isinstance(view, dict):
        return ["the view is not an object"]
    problems: list[str] = []
    if view.get("type") != "modal":
        problems.append("only modals are supported here")
    for key, required in (("title", True), ("submit", False), ("close", False)):
        obj = view.get(key)
        if obj is None:
            if required:
                problems.append(f"a modal needs a {key}")
            continue
        if not isinstance(obj, dict) or obj.get("type") != "plain_text" or not 1 <= len(_plain(obj)) <= MAX_VIEW_TEXT:
            problems.append(f"{key} must be plain_text of 1-{MAX_VIEW_TEXT} characters")
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        return [*problems, "blocks must be a list of objects"]
    problems += block_problems(blocks, limit=MAX_VIEW_BLOCKS, surface="modal")
    if any(b.get("type") == "input" for b in blocks) and view.get("submit") is None:
        problems.append("a modal with inputs needs a submit button")
    if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA:
        problems.append(f"private_metadata longer than {MAX_PRIVATE_METADATA}")
    if len(str(view.get("callback_id", ""))) > MAX_ID_LENGTH:
        problems.append(f"callback_id longer than {MAX_ID_LENGTH}")
    return problems


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


class FakeSlackApi:
    """Slack's Web API on 127.0.0.1 for ``WebClient(base_url=f"{fake.url}/api/")``, with a conversation model."""

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
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._injections: dict[str, list[_Injection]] = {}
        self._ts_counter = 0
        self.not_member: set[str] = set()  # channels the bot was not invited to: posting answers not_in_channel
        self.home_views: dict[str, dict[str, Any]] = {}  # user -> the home tab last published for them
        self._files: dict[str, UploadedFile] = {}
        self._views: dict[str, OpenView] = {}
        self._triggers: dict[str, _Trigger] = {}
        self.clock: Callable[[], float] = time.monotonic  # trigger_ids expire by this clock
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeSlackApi:
        if self._server is not None:
            return self
        fake = self

        class Handler(_Handler):
            api = fake

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeSlackApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlackApi is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` for slack_sdk's WebClient (trailing slash included)."""
        return f"{self.url}/api/"

    # ---- configuration ---------------------------------------------------------------------------

    def limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After: retry_after``."""
        with self._lock:
            self._injections.setdefault(method, []).append(_Injection(times, 429, "ratelimited", retry_after))

    def fail(self, method: str, error: str, times: int = 1, status: int = 200) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        with self._lock:
            self._injections.setdefault(method, []).append(_Injection(times, status, error))

    def response_url(
        self,
        for_id: str,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
        ephemeral_ts: str | None = None,
    ) -> str:
        """A fresh response_url whose posts reach user ``for_id`` (and replace ``message_ts`` on replace_original)."""
        if self._server is None:
            raise RuntimeError("FakeSlackApi is not started")
        with self._lock:
            key = f"{for_id}-{len(self._response_urls) + 1}"
            self._response_urls[key] = _ResponseUrl(for_id, channel, message_ts, thread_ts, ephemeral_ts)
        return f"{self.url}/response_url/{key}"

    def issue_trigger(self, user: str) -> str:
        """A trigger_id as Slack puts in an interaction payload: one views.open within 3 s."""
        with self._lock:
            key = f"{len(self._triggers) + 1}.{int(time.time())}.trigger{user.lower()}"
            self._triggers[key] = _Trigger(user, self.clock())
        return key

    # ---- accessors -------------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[ApiCall]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            try:
                return copy.deepcopy(self._messages[(channel, ts)])
            except KeyError:
                raise KeyError(f"no message {ts} in {channel}") from None

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The parent, then its replies in order, each with its current text and blocks."""
        with self._lock:
            parent = self._messages.get((channel, thread_ts))
            if parent is None:
                raise KeyError(f"no message {thread_ts} in {channel}")
            replies = [
                m
                for (c, _), m in self._messages.items()
                if c == channel and m.thread_ts == thread_ts and m.ts != thread_ts and not m.deleted
            ]
            replies.sort(key=lambda m: float(m.ts))
            return copy.deepcopy([parent, *replies])

    def channel_messages(self, channel: str) -> list[Message]:
        """Top-level messages and broadcast replies, in order, as the channel shows them."""
        with self._lock:
            found = [
                m
                for (c, _), m in self._messages.items()
                if c == channel and not m.deleted and (not m.is_reply or m.reply_broadcast)
            ]
            found.sort(key=lambda m: float(m.ts))
            return copy.deepcopy(found)

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        with self._lock:
            return copy.deepcopy([e for e in self._ephemerals if (user is None or e.user == user) and not e.deleted])

    def files(self, channel: str | None = None, thread_ts: str | None = None) -> list[UploadedFile]:
        """Files shared by files.completeUploadExternal (in ``channel``/``thread_ts`` when given), in order."""
        with self._lock:
            return copy.deepcopy(
                [
                    f
                    for f in self._files.values()
                    if f.completed
                    and (channel is None or f.channel == channel)
                    and (thread_ts is None or f.thread_ts == thread_ts)
                ]
            )

    def views(self, user: str | None = None, *, open_only: bool = True) -> list[OpenView]:
        """Modals opened for ``user`` (all users when None), oldest first."""
        with self._lock:
            return copy.deepcopy(
                [v for v in self._views.values() if (user is None or v.user == user) and not (open_only and v.closed)]
            )

    def view_for_trigger(self, trigger_id: str) -> OpenView | None:
        with self._lock:
            found = next((v for v in self._views.values() if v.trigger_id == trigger_id), None)
            return copy.deepcopy(found)

    def close_view(self, view_id: str) -> None:
        """The user submitted (and the app let it close) or cancelled the modal."""
        with self._changed:
            if view_id in self._views:
                self._views[view_id].closed = True
                self._changed.notify_all()

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

    # ---- request handling (called from the HTTP handler) -----------------------------------------

    def _next_ts(self) -> str:
        self._ts_counter += 1
        seconds, frac = divmod(self._ts_counter, 10000)
        return f"{1700000000 + seconds}.{frac * 100:06d}"

    def _record(self, method: str, params: dict[str, Any], status: int, error: str | None) -> None:
        with self._changed:
            safe = {k: v for k, v in params.items() if k != "token"}
            self._calls.append(ApiCall(method, safe, time.time(), status, error))
            self._changed.notify_all()

    def handle_api(
        self, method: str, params: dict[str, Any], auth: str | None
    ) -> tuple[int, dict[str, Any], int | None]:
        """Answer one Web API call: (HTTP status, JSON body, Retry-After or None)."""
        with self._lock:
            injected = self._take_injection(method)
            if injected is not None:
                self._record(method, params, injected.status, injected.error)
                return injected.status, {"ok": False, "error": injected.error}, injected.retry_after
            try:
                self._check_token(auth, params, app_level=method in _APP_LEVEL_METHODS)
                handler = _METHODS.get(method)
                if handler is None:
                    raise SlackApiError("unknown_method")
                body = handler(self, params)
            except SlackApiError as exc:
                self._record(method, params, exc.status, exc.error)
                return exc.status, {"ok": False, "error": exc.error}, None
            self._record(method, params, 200, None)
            return 200, {"ok": True, **body}, None

    def handle_upload(self, file_id: str, data: bytes) -> tuple[int, str]:
        """The upload URL of files.getUploadURLExternal: the file's bytes, exactly ``length`` of them, once."""
        with self._lock:
            f = self._files.get(file_id)
            params = {"file_id": file_id, "bytes": len(data)}
            if f is None or f.completed:
                self._record("upload", params, 404, "invalid_url")
                return 404, "invalid upload URL"
            if len(data) != f.length:  # Slack refuses bytes that do not match the length announced
                self._record("upload", params, 400, "length_mismatch")
                return 400, f"expected {f.length} bytes, got {len(data)}"
            f.content = bytes(data)
            self._record("upload", params, 200, None)
            return 200, f"OK - {len(data)}"

    def handle_response_url(self, key: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            target = self._response_urls.get(key)
            try:
                if target is None:
                    raise SlackApiError("invalid_url", 404)
                if target.posts >= RESPONSE_URL_MAX_POSTS:
                    raise SlackApiError("used_url", 404)
                target.posts += 1
                self._respond(target, params)
            except SlackApiError as exc:
                self._record("response_url", params, exc.status, exc.error)
                return exc.status, {"ok": False, "error": exc.error}
            self._record("response_url", params, 200, None)
            return 200, {"ok": True}

    def _take_injection(self, method: str) -> _Injection | None:
        queue = self._injections.get(method)
        if not queue:
            return None
        injection = queue[0]
        injection.times -= 1
        if injection.times <= 0:
            queue.pop(0)
        return injection

    def _check_token(self, auth: str | None, params: dict[str, Any], *, app_level: bool = False) -> None:
        token = None
        if auth and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        elif params.get("token"):
            token = str(params["token"])
        if not token:
            raise SlackApiError("not_authed")
        wanted, other = (self.app_token, self.token) if app_level else (self.token, self.app_token)
        if token == other:
            raise SlackApiError("not_allowed_token_type")  # Slack: a bot token cannot open sockets, and vice versa
        if token != wanted:
            raise SlackApiError("invalid_auth")

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.socket_mode_url:
            raise SlackApiError("socket_mode_not_enabled")  # hypothetical name: no endpoint configured here
        return {"url": self.socket_mode_url}

    def _check_channel(self, channel: Any) -> str:
        if not channel or not isinstance(channel, str):
            raise SlackApiError("channel_not_found")
        if self.channels is not None and channel not in self.channels:
            raise SlackApiError("channel_not_found")
        return channel

    def _content(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text = str(params.get("text") or "")
        blocks = _parse_blocks(params.get("blocks"))
        if not text and not blocks:
            raise SlackApiError("no_text")
        if len(text) > MAX_MESSAGE_TEXT:
            raise SlackApiError("msg_too_long")
        if block_problems(blocks):
            raise SlackApiError("invalid_blocks")
        return text, blocks

    def _thread_root(self, channel: str, thread_ts: Any) -> str | None:
        if not thread_ts:
            return None
        target = self._messages.get((channel, str(thread_ts)))
        if target is None or target.deleted:
            raise SlackApiError("thread_not_found")
        # Replying to a reply lands in the reply's thread, as in Slack.
        return target.thread_ts or target.ts

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        if channel in self.not_member:
            raise SlackApiError("not_in_channel")
        text, blocks = self._content(params)
        thread_ts = self._thread_root(channel, params.get("thread_ts"))
        ts = self._next_ts()
        message = Message(
            channel=channel,
            ts=ts,
            text=text,
            blocks=blocks,
            user=self.bot_user_id,
            thread_ts=thread_ts,
            reply_broadcast=bool(thread_ts) and _truthy(params.get("reply_broadcast")),
            posted_at=time.time(),
        )
        self._messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": self._as_api_message(message)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        message = self._messages.get((channel, str(params.get("ts") or "")))
        if message is None or message.deleted:
            raise SlackApiError("message_not_found")
        text = str(params["text"]) if params.get("text") is not None else message.text
        blocks = _parse_blocks(params["blocks"]) if "blocks" in params else message.blocks
        if not text and not blocks:
            raise SlackApiError("no_text")
        if block_problems(blocks):
            raise SlackApiError("invalid_blocks")
        self._replace(message, text, blocks)
        return {"channel": channel, "ts": message.ts, "text": text, "message": self._as_api_message(message)}

    @staticmethod
    def _replace(message: Message | Ephemeral, text: str, blocks: list[dict[str, Any]]) -> None:
        message.history.append((message.text, message.blocks))
        message.text, message.blocks = text, copy.deepcopy(blocks)
        if isinstance(message, Message):
            message.updated_at = time.time()

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        user = params.get("user")
        if not user:
            raise SlackApiError("user_not_found")
        text, blocks = self._content(params)
        ts = self._next_ts()
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        self._ephemerals.append(Ephemeral(str(user), channel, text, blocks, ts, thread_ts, posted_at=time.time()))
        return {"message_ts": ts}

    def _respond(self, target: _ResponseUrl, params: dict[str, Any]) -> None:
        if _truthy(params.get("delete_original")):
            original = self._original(target)
            if original is not None:
                original.deleted = True
            return
        text, blocks = self._content(params)
        if _truthy(params.get("replace_original")):
            original = self._original(target)
            if original is None:
                raise SlackApiError("message_not_found", 404)
            self._replace(original, text, blocks)
            return
        if params.get("response_type") == "in_channel" and target.channel:
            thread_ts = target.thread_ts if params.get("thread_ts") is None else str(params["thread_ts"])
            ts = self._next_ts()
            self._messages[(target.channel, ts)] = Message(
                target.channel, ts, text, blocks, self.bot_user_id, thread_ts, posted_at=time.time()
            )
            return
        self._ephemerals.append(
            Ephemeral(
                target.user,
                target.channel,
                text,
                blocks,
                self._next_ts(),
                target.thread_ts,
                "response_url",
                time.time(),
            )
        )

    def _original(self, target: _ResponseUrl) -> Message | Ephemeral | None:
        if target.ephemeral_ts is not None:
            return next((e for e in self._ephemerals if e.message_ts == target.ephemeral_ts), None)
        if target.channel and target.message_ts:
            return self._messages.get((target.channel, target.message_ts))
        return None

    def _as_api_message(self, message: Message) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "message",
            "user": message.user,
            "bot_id": BOT_ID,
            "ts": message.ts,
            "text": message.text,
            "blocks": copy.deepcopy(message.blocks),
        }
        if message.thread_ts:
            body["thread_ts"] = message.thread_ts
        return body

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        """views.publish: a ``type: home`` view for one user, checked as Slack checks it."""
        user = params.get("user_id")
        if not user or not isinstance(user, str):
            raise SlackApiError("invalid_arguments")
        if self.users and user not in self.users:
            raise SlackApiError("user_not_found")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except json.JSONDecodeError as exc:
                raise SlackApiError("invalid_arguments") from exc
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackApiError("invalid_arguments")  # views.publish takes home tabs only
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise SlackApiError("invalid_arguments")
        if block_problems(blocks, limit=MAX_VIEW_BLOCKS, surface="view"):
            raise SlackApiError("invalid_arguments")
        if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA:
            raise SlackApiError("invalid_arguments")
        if len(str(view.get("callback_id", ""))) > MAX_ID_LENGTH:
            raise SlackApiError("invalid_arguments")
        self.home_views[user] = copy.deepcopy(view)
        return {"view": {"id": f"V{len(self.home_views):08d}", "type": "home", "blocks": blocks}}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger_id = str(params.get("trigger_id") or "")
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise SlackApiError("invalid_trigger_id")
        if trigger.used:
            raise SlackApiError("exchanged_trigger_id")
        if self.clock() - trigger.issued_at > TRIGGER_TTL_S:
            raise SlackApiError("expired_trigger_id")
        view = self._parse_view(params.get("view"))
        trigger.used = True
        opened = OpenView(
            id=f"V{len(self._views) + 1:08d}",
            user=trigger.user,
            view=view,
            trigger_id=trigger_id,
            opened_at=time.time(),
            hash=f"{time.time():.6f}.{len(self._views)}",
        )
        self._views[opened.id] = opened
        return {"view": self._as_api_view(opened)}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        target = self._views.get(str(params.get("view_id") or ""))
        if target is None or target.closed:
            raise SlackApiError("not_found")
        if params.get("hash") and params["hash"] != target.hash:
            raise SlackApiError("hash_conflict")
        view = self._parse_view(params.get("view"))
        target.history.append(target.view)
        target.view = view
        target.hash = f"{time.time():.6f}.u{len(target.history)}"
        return {"view": self._as_api_view(target)}

    @staticmethod
    def _parse_view(raw: Any) -> dict[str, Any]:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SlackApiError("invalid_arguments") from exc
        if not isinstance(raw, dict):
            raise SlackApiError("invalid_arguments")
        if view_problems(raw):
            raise SlackApiError("invalid_arguments" if raw.get("type") != "modal" else "invalid_blocks")
        return copy.deepcopy(raw)

    def _as_api_view(self, opened: OpenView) -> dict[str, Any]:
        return {
            "id": opened.id,
            "team_id": self.team_id,
            "hash": opened.hash,
            "state": {"values": {}},
            **copy.deepcopy(opened.view),
        }

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://sandbox.slack.test/",
            "team": "Sandbox",
            "user": "failover-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        message = self._messages.get((channel, str(params.get("message_ts") or "")))
        if message is None:
            raise SlackApiError("message_not_found")
        link = f"https://sandbox.slack.test/archives/{channel}/p{message.ts.replace('.', '')}"
        if message.is_reply:
            link += f"?thread_ts={message.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    def _usergroup_users(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup") or "")
        if group not in self.usergroups:
            raise SlackApiError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user") or "")
        if user not in self.users and user != self.bot_user_id:
            raise SlackApiError("user_not_found")
        name = self.users.get(user, "failover-bot")
        return {
            "user": {
                "id": user,
                "team_id": self.team_id,
                "name": name,
                "real_name": name,
                "is_bot": user == self.bot_user_id,
                "profile": {"display_name": name, "real_name": name},
            }
        }

    def _get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = str(params.get("filename") or "")
        try:
            length = int(str(params.get("length", "")))
        except ValueError:
            raise SlackApiError("invalid_arguments") from None
        if not filename or length <= 0:
            raise SlackApiError("invalid_arguments")
        alt_txt = params.get("alt_txt")
        if alt_txt is not None and len(str(alt_txt)) > 1000:
            raise SlackApiError("alt_txt_too_large")
        file_id = f"F{len(self._files) + 1:08d}"
        url = f"{self.url}/upload/v1/{file_id}"
        snippet = params.get("snippet_type")
        self._files[file_id] = UploadedFile(
            file_id, filename, length, url, str(alt_txt) if alt_txt else None, str(snippet) if snippet else None
        )
        return {"upload_url": url, "file_id": file_id}

    def _complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("files")
        try:
            entries = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            raise SlackApiError("invalid_arguments") from None
        if (
            not isinstance(entries, list)
            or not entries
            or not all(isinstance(e, dict) and e.get("id") for e in entries)
        ):
            raise SlackApiError("invalid_arguments")
        channel = params.get("channel_id")
        if params.get("channels"):
            channels = [c for c in str(params["channels"]).split(",") if c]
            if channel or len(channels) != 1:  # thread_ts or not, we share into one channel only
                raise SlackApiError("invalid_arguments")
            channel = channels[0]
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        if thread_ts and not channel:
            raise SlackApiError("invalid_arguments")  # a thread needs its channel
        if channel:
            channel = self._check_channel(channel)
        if thread_ts:
            root = self._messages.get((str(channel), thread_ts))
            if root is None or root.deleted:
                raise SlackApiError("thread_not_found")
            if root.is_reply:  # Slack: "Never use a reply's ts value; use its parent instead"
                raise SlackApiError("invalid_thread_ts")
        files: list[UploadedFile] = []
        for e in entries:
            f = self._files.get(str(e["id"]))
            if f is None or f.completed:
                raise SlackApiError("file_not_found")
            if f.content is None:  # the bytes never reached the upload URL
                raise SlackApiError("file_upload_incomplete")
            files.append(f)
        for f, e in zip(files, entries, strict=True):
            f.completed = True
            f.title = str(e.get("title") or f.filename)
            f.channel = channel
            f.thread_ts = thread_ts
        if channel:
            ts = self._next_ts()
            text = str(params.get("initial_comment") or "")
            self._messages[(channel, ts)] = Message(
                channel,
                ts,
                text,
                [],
                self.bot_user_id,
                thread_ts,
                posted_at=time.time(),
                files=[{"id": f.id, "name": f.filename, "title": f.title} for f in files],
            )
        return {"files": [{"id": f.id, "name": f.filename, "title": f.title, "size": f.length} for f in files]}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        name = (self.channels or {}).get(channel, channel.lower())
        return {"channel": {"id": channel, "name": name, "is_channel": True, "is_member": True}}

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        try:
            messages = self.thread(channel, str(params.get("ts") or ""))
        except KeyError:
            raise SlackApiError("thread_not_found") from None
        return {"messages": [self._as_api_message(m) for m in messages], "has_more": False}

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        newest_first = list(reversed(self.channel_messages(channel)))
        return {"messages": [self._as_api_message(m) for m in newest_first], "has_more": False}


_APP_LEVEL_METHODS = frozenset({"apps.connections.open"})
_METHODS: dict[str, Callable[[FakeSlackApi, dict[str, Any]], dict[str, Any]]] = {
    "apps.connections.open": FakeSlackApi._connections_open,
    "auth.test": FakeSlackApi._auth_test,
    "chat.postMessage": FakeSlackApi._post,
    "views.open": FakeSlackApi._views_open,
    "views.update": FakeSlackApi._views_update,
    "views.publish": FakeSlackApi._views_publish,
    "chat.update": FakeSlackApi._update,
    "chat.postEphemeral": FakeSlackApi._post_ephemeral,
    "chat.getPermalink": FakeSlackApi._get_permalink,
    "usergroups.users.list": FakeSlackApi._usergroup_users,
    "users.info": FakeSlackApi._users_info,
    "conversations.info": FakeSlackApi._conversations_info,
    "files.getUploadURLExternal": FakeSlackApi._get_upload_url_external,
    "files.completeUploadExternal": FakeSlackApi._complete_upload_external,
    "conversations.replies": FakeSlackApi._conversations_replies,
    "conversations.history": FakeSlackApi._conversations_history,
}


class _Handler(BaseHTTPRequestHandler):
    api: FakeSlackApi

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        return

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.startswith("/upload/v1/"):  # a file's bytes, as they are: not a form, not JSON
            status, text = self.api.handle_upload(self.path[len("/upload/v1/") :], raw)
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._dispatch(raw)

    def _dispatch(self, raw: bytes) -> None:
        parts = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            params.update(self._body(raw))
        except ValueError:
            self._send(400, {"ok": False, "error": "invalid_json"})
            return
        if parts.path.startswith("/api/"):
            status, body, retry_after = self.api.handle_api(
                parts.path[len("/api/") :], params, self.headers.get("Authorization")
            )
            self._send(status, body, retry_after)
        elif parts.path.startswith("/response_url/") and self.command == "POST":
            status, body = self.api.handle_response_url(parts.path[len("/response_url/") :], params)
            self._send(status, body)
        else:
            self._send(404, {"ok": False, "error": "not_found"})

    def _body(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        content_type = (self.headers.get("Content-Type") or "").lower()
        text = raw.decode("utf-8")
        if content_type.startswith("application/json"):
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("JSON body is not an object")
            return body
        return dict(parse_qsl(text, keep_blank_values=True))

    def _send(self, status: int, body: dict[str, Any], retry_after: int | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)
