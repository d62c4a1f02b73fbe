"""The loopback Slack Web API stand-in: ``FakeSlackApi`` and what a test reads from it.

One module per area, each small enough to read in one sitting:

- ``server``: the HTTP server on 127.0.0.1, the table of Web API methods it answers, injected faults;
- ``state``: what one workspace holds, and the record of every call answered;
- ``limits`` and ``blockkit``: Slack's own limits (the stand-in's copy, never the bot's) and the checks
  of a message's blocks, a modal and a home tab;
- ``messages`` (chat.*, conversations.*, response_url), ``views`` (modals, home tabs, trigger_ids),
  ``files`` (the external upload flow), ``directory`` (users, user groups), ``auth`` (tokens, Socket Mode);
- ``model``: the workspace's ids and the records a test reads (Message, Ephemeral, UploadedFile, OpenView).
"""

from __future__ import annotations

from sandbox.slack_api.blockkit import block_problems, view_problems
from sandbox.slack_api.model import (
    BOT_ID,
    BOT_USER_ID,
    DEFAULT_TOKEN,
    TEAM_ID,
    ApiCall,
    Ephemeral,
    Message,
    OpenView,
    SlackApiError,
    UploadedFile,
)
from sandbox.slack_api.server import FakeSlackApi
from sandbox.slack_api.state import is_loopback

__all__ = [
    "BOT_ID",
    "BOT_USER_ID",
    "DEFAULT_TOKEN",
    "TEAM_ID",
    "ApiCall",
    "Ephemeral",
    "FakeSlackApi",
    "Message",
    "OpenView",
    "SlackApiError",
    "UploadedFile",
    "block_problems",
    "is_loopback",
    "view_problems",
]
