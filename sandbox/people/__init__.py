"""The people who click: scripted Slack users (``person``) and what they see on a message or modal (``screen``)."""

from __future__ import annotations

from sandbox.people.person import API_APP_ID, DEFAULT_CHANNEL, Delivery, Response, SlackPerson
from sandbox.people.screen import Button, ButtonNotFound, FormIncomplete, MenuOption, buttons, menu_options

__all__ = [
    "API_APP_ID",
    "DEFAULT_CHANNEL",
    "Button",
    "ButtonNotFound",
    "Delivery",
    "FormIncomplete",
    "MenuOption",
    "Response",
    "SlackPerson",
    "buttons",
    "menu_options",
]
