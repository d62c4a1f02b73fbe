"""Slack's Block Kit limits, the bot's one copy (the loopback Slack stand-in keeps its own, on purpose)."""

from __future__ import annotations

SECTION_TEXT_MAX = 3000  # characters of a section's (or a context element's) text
SECTION_LIMIT = SECTION_TEXT_MAX - 100  # what the bot writes into one: room for a closing line
FIELD_TEXT_MAX = 2000  # characters of one section field
MAX_FIELDS = 10  # fields of one section
HEADER_TEXT_MAX = 150  # characters of a header
BUTTON_TEXT_MAX = 75  # characters of a button's label
OPTION_TEXT_MAX = 75  # characters of an option's text or description (menus, radio buttons, checkboxes)
MAX_ACTION_ELEMENTS = 25  # elements of one actions block
CONFIRM_TITLE_MAX = 100  # a confirm dialog's title ...
CONFIRM_TEXT_MAX = 300  # ... its text ...
CONFIRM_BUTTON_MAX = 30  # ... and its buttons' labels
LABEL_MAX = 2000  # characters of an input's label or hint
PLACEHOLDER_MAX = 150  # characters of an input's placeholder
INPUT_MAX = 3000  # max_length a plain-text input may ask for
MAX_BLOCKS = 50  # blocks of one message
MAX_VIEW_BLOCKS = 100  # blocks of a modal or a home tab
MODAL_TITLE_MAX = 24  # characters of a modal's title and of its submit and close buttons
