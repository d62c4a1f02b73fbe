"""What a person sees in Slack and can act on: the buttons and menu options of a message, the inputs of a modal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Button:
    """A button found in a message's blocks."""

    block_id: str
    action_id: str
    text: str
    value: str | None
    style: str | None

    def describe(self) -> str:
        value = f" value={self.value!r}" if self.value is not None else ""
        return f"{self.action_id} ({self.text!r}{value})"


def _interactive(blocks: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(block, element) for every interactive element: an actions block's elements, then a section's accessory."""
    for block in blocks:
        candidates = list(block.get("elements", [])) if block.get("type") == "actions" else []
        if isinstance(block.get("accessory"), dict):
            candidates.append(block["accessory"])
        for element in candidates:
            if isinstance(element, dict):
                yield block, element


def buttons(blocks: list[dict[str, Any]]) -> list[Button]:
    """Every button in ``blocks``: actions elements and section accessories, in order."""
    return [
        Button(
            block_id=str(block.get("block_id", "")),
            action_id=str(element.get("action_id", "")),
            text=str(element.get("text", {}).get("text", "")),
            value=element.get("value"),
            style=element.get("style"),
        )
        for block, element in _interactive(blocks)
        if element.get("type") == "button"
    ]


@dataclass(frozen=True)
class MenuOption:
    """One option of an overflow menu found in a message's blocks."""

    block_id: str
    action_id: str
    text: str
    value: str


def menu_options(blocks: list[dict[str, Any]]) -> list[MenuOption]:
    """Every option of every overflow menu in ``blocks`` (actions elements and accessories), in order."""
    return [
        MenuOption(
            str(block.get("block_id", "")),
            str(element.get("action_id", "")),
            str(option.get("text", {}).get("text", "")),
            str(option.get("value", "")),
        )
        for block, element in _interactive(blocks)
        if element.get("type") == "overflow"
        for option in element.get("options", [])
    ]


class ButtonNotFound(LookupError):
    """The message has no button (or menu option) with the requested action_id (and value)."""


class FormIncomplete(ValueError):
    """A required input of a modal was left empty: Slack does not let the person submit it."""


def input_value(element: dict[str, Any], given: Any) -> dict[str, Any]:
    """The ``state.values`` entry Slack sends for one modal input filled with ``given``."""
    kind = str(element.get("type", ""))
    options = {str(o.get("value")): o for o in element.get("options", [])}
    if kind == "checkboxes":
        chosen = [options[v] for v in (given or []) if v in options]
        return {"type": kind, "selected_options": chosen}
    if kind in ("radio_buttons", "static_select"):
        return {"type": kind, "selected_option": options.get(str(given)) if given is not None else None}
    return {"type": kind, "value": None if given is None else str(given)}
