"""What the Slack stand-in stores and answers with: the workspace's ids, messages, ephemerals, files, modals, errors."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOKEN = "xoxb-sandbox-token"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
TEAM_ID = "T0TEST"


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
class Trigger:
    """A trigger_id handed out with an interaction: good for one views.open, for TRIGGER_TTL_S."""

    user: str
    issued_at: float
    used: bool = False


@dataclass
class ResponseUrl:
    """Where a response_url's posts go: to whom, in which channel, replacing which message."""

    user: str
    channel: str | None
    message_ts: str | None
    thread_ts: str | None
    ephemeral_ts: str | None
    posts: int = 0


@dataclass
class Injection:
    """A fault to answer the next ``times`` calls of one method with (set by limit() and fail())."""

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


def parse_blocks(raw: Any) -> list[dict[str, Any]]:
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


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)
