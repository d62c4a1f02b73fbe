"""Loopback stand-ins for Slack: the Web API server and the people who click in it."""

from __future__ import annotations

from sandbox.people import Button, ButtonNotFound, Response, SlackPerson, buttons
from sandbox.slack_api import ApiCall, Ephemeral, FakeSlackApi, Message

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
