"""The cards' public names in one place, for callers that want them together (each lives in its own module)."""

from __future__ import annotations

from bot.blocks.kit import (
    FINISHED,
    ICON,
    button,
    clip,
    confirm_dialog,
    context,
    duration,
    escape,
    hhmm,
    people,
    section,
    when,
)
from bot.blocks.limits import MAX_BLOCKS, SECTION_LIMIT
from bot.blocks.plan import ephemeral_text, plan_summary
from bot.blocks.status import status_card, status_text
from bot.blocks.step import (
    OVERRIDE_LABELS,
    asks_details,
    collapsed_line,
    delete_keep_block,
    delete_keep_lines,
    overflow,
    override_options,
    recorded_for,
    step_card,
)
from bot.blocks.who import direction_title, on_it, step_mentions, waiting_on, who_can_act

__all__ = [
    "FINISHED",
    "ICON",
    "MAX_BLOCKS",
    "OVERRIDE_LABELS",
    "SECTION_LIMIT",
    "asks_details",
    "button",
    "clip",
    "collapsed_line",
    "confirm_dialog",
    "context",
    "delete_keep_block",
    "delete_keep_lines",
    "direction_title",
    "duration",
    "ephemeral_text",
    "escape",
    "hhmm",
    "on_it",
    "overflow",
    "override_options",
    "people",
    "plan_summary",
    "recorded_for",
    "section",
    "status_card",
    "status_text",
    "step_card",
    "step_mentions",
    "waiting_on",
    "when",
    "who_can_act",
]
