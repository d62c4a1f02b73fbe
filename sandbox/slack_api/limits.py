"""Slack's own limits, as the stand-in enforces them (NOTES.md, "Slack platform rules").

This is the stand-in's copy on purpose: it stands for Slack, so it never imports the bot's limits
(tests would otherwise check the bot against itself).
"""

from __future__ import annotations

RESPONSE_URL_MAX_POSTS = 5
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
