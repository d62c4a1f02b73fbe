"""Block Kit primitives every card uses: sections, context, buttons, confirm dialogs, times and step icons."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.blocks.limits import (
    BUTTON_TEXT_MAX,
    CONFIRM_BUTTON_MAX,
    CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX,
    SECTION_LIMIT,
)
from bot.blocks.text import escape_mrkdwn as escape
from bot.runs.machine import StepState
from bot.slack_ids import ActionId, ButtonRef
from bot.times import as_utc

__all__ = ["escape"]  # re-exported: the cards' one mrkdwn escaper

ICON = {
    StepState.PENDING: "·",
    StepState.AWAITING_APPROVAL: "⏳",
    StepState.APPROVED: "👍",
    StepState.RUNNING: "⚙️",
    StepState.SUCCEEDED: "✅",
    StepState.FAILED: "❌",
    StepState.SKIPPED: "⏭",
    StepState.MARKED_DONE: "☑️",
    StepState.UNKNOWN: "⚠️",
}


FINISHED = (StepState.SUCCEEDED, StepState.SKIPPED, StepState.MARKED_DONE)


def clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 40] + "\n… (shortened; see the plan or report)"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text) or " "}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, SECTION_LIMIT) or " "}]}


def button(
    text: str,
    action: ActionId | str,
    ref: ButtonRef,
    *,
    style: str | None = None,
    confirm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:BUTTON_TEXT_MAX]},
        "action_id": str(action),
        "value": ref.encode(),
    }
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def confirm_dialog(title: str, text: str, ok: str, *, danger: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "title": {"type": "plain_text", "text": title[:CONFIRM_TITLE_MAX]},
        "text": {"type": "mrkdwn", "text": text[:CONFIRM_TEXT_MAX]},
        "confirm": {"type": "plain_text", "text": ok[:CONFIRM_BUTTON_MAX]},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    if danger:
        d["style"] = "danger"
    return d


def people(users: Sequence[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users) if users else "nobody yet"


def hhmm(value: datetime | None) -> str:
    return as_utc(value).strftime("%H:%M:%S UTC") if value else "?"


def when(value: datetime | None) -> str:
    """A time every reader sees in their own time zone (Slack's ``<!date^…>``), UTC as the fallback."""
    if value is None:
        return "?"
    return f"<!date^{int(as_utc(value).timestamp())}^{{time_secs}}|{hhmm(value)}>"


def duration(seconds: float) -> str:
    s = int(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


def line_chunks(lines: list[str], limit: int = SECTION_LIMIT) -> list[str]:
    out, cur = [], ""
    for line in lines:
        if len(cur) + len(line) + 1 > limit:
            out.append(cur)
            cur = ""
        cur += line + "\n"
    if cur:
        out.append(cur)
    return out
