"""Block Kit and view validation: the reasons Slack would refuse a message's blocks, a modal or a home tab."""

from __future__ import annotations

from typing import Any

from sandbox.slack_api.limits import (
    MAX_ACTIONS_ELEMENTS,
    MAX_BLOCKS,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_VALUE,
    MAX_CHOICE_OPTIONS,
    MAX_CONFIRM_BUTTON,
    MAX_CONFIRM_TEXT,
    MAX_CONFIRM_TITLE,
    MAX_CONTEXT_ELEMENTS,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER_TEXT,
    MAX_ID_LENGTH,
    MAX_INPUT_LENGTH,
    MAX_LABEL,
    MAX_OPTION_TEXT,
    MAX_OPTION_VALUE,
    MAX_OVERFLOW_OPTIONS,
    MAX_PRIVATE_METADATA,
    MAX_SECTION_TEXT,
    MAX_VIEW_BLOCKS,
    MAX_VIEW_TEXT,
    MIN_OVERFLOW_OPTIONS,
)


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
