"""Plain-text rendering of Block Kit messages and threads, as a person would read them in Slack."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

DIVIDER = "─" * 40
_LINK = re.compile(r"<([^<>\n]+)>")
_NO_NAMES: Mapping[str, str] = {}


def mrkdwn_to_text(text: str, names: Mapping[str, str] | None = None) -> str:
    """Slack mrkdwn made readable: links show their label, mentions a name; *bold* and `code` stay as typed."""
    known = names or _NO_NAMES

    def replace(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "@" + known.get(target[1:], label or target[1:])
        if target.startswith("#"):
            return "#" + known.get(target[1:], label or target[1:])
        if target.startswith("!subteam^"):
            group = target[len("!subteam^") :]
            return "@" + known[group] if group in known else (label or "@" + group)
        if target.startswith("!date^"):
            return label
        if target.startswith("!"):
            return "@" + target[1:]
        return label or target

    return html.unescape(_LINK.sub(replace, text))


def _text(obj: Any, names: Mapping[str, str] | None) -> str:
    if not isinstance(obj, dict):
        return "" if obj is None else str(obj)
    raw = str(obj.get("text", ""))
    return raw if obj.get("type") == "plain_text" else mrkdwn_to_text(raw, names)


def render_element(element: dict[str, Any], names: Mapping[str, str] | None = None) -> str:
    """One interactive or image element: buttons as ``[ Text ]``, ``[*Primary*]``, ``[!Danger!]``."""
    kind = element.get("type", "")
    if kind == "button":
        label = _text(element.get("text"), names)
        style = element.get("style")
        if style == "primary":
            return f"[*{label}*]"
        if style == "danger":
            return f"[!{label}!]"
        return f"[ {label} ]"
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    if kind == "overflow":
        return "[⋯]"
    if kind.endswith("_select") or kind.endswith("_multi_select"):
        chosen = element.get("initial_option")
        shown = (
            _text(chosen.get("text"), names) if isinstance(chosen, dict) else _text(element.get("placeholder"), names)
        )
        return f"[{shown} ▾]"
    if kind in ("plain_text_input", "email_text_input", "url_text_input", "number_input", "rich_text_input"):
        shown = str(element.get("initial_value") or "") or _text(element.get("placeholder"), names)
        return f"[{shown}_____]"
    if kind in ("checkboxes", "radio_buttons"):
        mark = "☐" if kind == "checkboxes" else "○"
        return "  ".join(f"{mark} {_text(o.get('text'), names)}" for o in element.get("options", []))
    if kind in ("datepicker", "timepicker", "datetimepicker"):
        shown = element.get("initial_date") or element.get("initial_time") or _text(element.get("placeholder"), names)
        return f"[{shown or kind} ▾]"
    return f"[{kind}]"


def _field_line(text: str) -> str:
    label, newline, value = text.partition("\n")
    if not newline:
        return text
    return f"{label.strip().strip('*_').strip()}: {' '.join(value.split())}"


def _rich_inline(elements: Iterable[dict[str, Any]], names: Mapping[str, str] | None) -> str:
    known = names or _NO_NAMES
    out: list[str] = []
    for element in elements:
        kind = element.get("type")
        if kind == "text":
            text = str(element.get("text", ""))
            style = element.get("style") or {}
            for flag, mark in (("code", "`"), ("bold", "*"), ("italic", "_"), ("strike", "~")):
                if style.get(flag) and text.strip():
                    text = f"{mark}{text}{mark}"
            out.append(text)
        elif kind == "link":
            out.append(str(element.get("text") or element.get("url", "")))
        elif kind == "user":
            out.append("@" + known.get(element.get("user_id", ""), element.get("user_id", "")))
        elif kind == "channel":
            out.append("#" + known.get(element.get("channel_id", ""), element.get("channel_id", "")))
        elif kind == "usergroup":
            out.append("@" + known.get(element.get("usergroup_id", ""), element.get("usergroup_id", "")))
        elif kind == "emoji":
            out.append(f":{element.get('name', '')}:")
        elif kind == "broadcast":
            out.append("@" + str(element.get("range", "")))
        elif kind == "date":
            out.append(str(element.get("fallback", "")))
    return "".join(out)


def _rich_text(block: dict[str, Any], names: Mapping[str, str] | None) -> list[str]:
    lines: list[str] = []
    for part in block.get("elements", []):
        kind = part.get("type")
        if kind == "rich_text_list":
            indent = "  " * int(part.get("indent", 0))
            start = int(part.get("offset", 0)) + 1
            for n, item in enumerate(part.get("elements", []), start=start):
                bullet = f"{n}." if part.get("style") == "ordered" else "•"
                lines.append(f"{indent}{bullet} {_rich_inline(item.get('elements', []), names)}")
        elif kind == "rich_text_preformatted":
            lines.extend(["```", *_rich_inline(part.get("elements", []), names).splitlines(), "```"])
        elif kind == "rich_text_quote":
            lines.extend(f"> {line}" for line in _rich_inline(part.get("elements", []), names).splitlines())
        else:
            lines.extend(_rich_inline(part.get("elements", []), names).splitlines())
    return lines


def _block_lines(block: dict[str, Any], names: Mapping[str, str] | None) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = _text(block.get("text"), names)
        return [title, "═" * len(title)]
    if kind == "divider":
        return [DIVIDER]
    if kind == "section":
        lines = _text(block.get("text"), names).splitlines() if block.get("text") else []
        lines += [_field_line(_text(f, names)) for f in block.get("fields", [])]
        accessory = block.get("accessory")
        if isinstance(accessory, dict):
            shown = render_element(accessory, names)
            if lines:
                lines[-1] = f"{lines[-1]}  {shown}"
            else:
                lines.append(shown)
        return lines
    if kind == "context":
        parts = [
            f"[image: {e.get('alt_text', '')}]" if e.get("type") == "image" else _text(e, names)
            for e in block.get("elements", [])
        ]
        return ["  · " + " · ".join(parts)]
    if kind == "actions":
        return [" ".join(render_element(e, names) for e in block.get("elements", []))]
    if kind == "image":
        title = _text(block.get("title"), names)
        return [f"[image: {block.get('alt_text', '')}]" + (f" {title}" if title else "")]
    if kind == "input":
        label = _text(block.get("label"), names) + (" (optional)" if block.get("optional") else "")
        lines = [f"{label}: {render_element(block.get('element', {}), names)}"]
        if block.get("hint"):
            lines.append("  · " + _text(block.get("hint"), names))
        return lines
    if kind == "rich_text":
        return _rich_text(block, names)
    return [f"[{kind} block]"]


def render_blocks(blocks: Sequence[dict[str, Any]], names: Mapping[str, str] | None = None) -> str:
    """Blocks as lines of text; ``names`` maps user, channel and user-group ids to names for mentions."""
    return "\n".join(line for block in blocks for line in _block_lines(block, names))


def _get(msg: Any, key: str, default: Any = None) -> Any:
    if isinstance(msg, Mapping):
        return msg.get(key, default)
    return getattr(msg, key, default)


def render_message(msg: Any, names: Mapping[str, str] | None = None) -> str:
    """A message (a mapping or an object with ``text`` and ``blocks``): its blocks, else its text."""
    blocks = _get(msg, "blocks") or []
    if blocks:
        return render_blocks(blocks, names)
    return mrkdwn_to_text(str(_get(msg, "text", "") or ""), names)


def _heading(msg: Any, names: Mapping[str, str] | None, show_time: bool) -> str:
    user = str(_get(msg, "user", "") or "")
    parts = [(names or _NO_NAMES).get(user, user) or "unknown"]
    if show_time:
        when = _get(msg, "posted_at") or float(_get(msg, "ts", 0) or 0)
        parts.append(datetime.fromtimestamp(float(when), UTC).strftime("%H:%M:%S"))
    if _get(msg, "history"):
        parts.append("(edited)")
    if _get(msg, "reply_broadcast"):
        parts.append("(also sent to the channel)")
    return " ".join(parts)


def render_thread(messages: Sequence[Any], names: Mapping[str, str] | None = None, *, show_time: bool = True) -> str:
    """A thread as read in Slack: the parent, then each reply indented under an author/time line."""
    out: list[str] = []
    for i, msg in enumerate(messages):
        body = render_message(msg, names).splitlines()
        if i == 0:
            out.append(_heading(msg, names, show_time))
            out.extend(body)
        else:
            out.append("")
            out.append("    ↳ " + _heading(msg, names, show_time))
            out.extend(("      " + line).rstrip() for line in body)
    return "\n".join(out)
