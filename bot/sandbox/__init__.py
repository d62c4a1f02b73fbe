"""Loopback stand-ins for Slack: the Web API server and the people who click in it."""

from __future__ import annotations

from bot.sandbox.people import Button, ButtonNotFound, Response, SlackPerson, buttons
from bot.sandbox.slack_api import ApiCall, Ephemeral, FakeSlackApi, Message

__all__ = [
    "ApiCall",
    "Button",
    "ButtonNotFound",
    "Ephemeral",
    "FakeSlackApi",
    "Message",
    "Response",
    "SlackPerson",
    "buttons",
]
