"""Tokens in the Slack stand-in: which token each method takes, auth.test, and Socket Mode's apps.connections.open."""

from __future__ import annotations

from typing import Any

from sandbox.slack_api.model import BOT_ID, SlackApiError
from sandbox.slack_api.state import SlackState

APP_LEVEL_METHODS = frozenset({"apps.connections.open"})  # the methods that take the app-level token (xapp-...)


class AuthApi(SlackState):
    """The bot token for the Web API, the app-level token for Socket Mode; never the one for the other."""

    def _check_token(self, auth: str | None, params: dict[str, Any], *, app_level: bool = False) -> None:
        token = None
        if auth and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        elif params.get("token"):
            token = str(params["token"])
        if not token:
            raise SlackApiError("not_authed")
        wanted, other = (self.app_token, self.token) if app_level else (self.token, self.app_token)
        if token == other:
            raise SlackApiError("not_allowed_token_type")  # Slack: a bot token cannot open sockets, and vice versa
        if token != wanted:
            raise SlackApiError("invalid_auth")

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://sandbox.slack.test/",
            "team": "Sandbox",
            "user": "failover-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.socket_mode_url:
            raise SlackApiError("socket_mode_not_enabled")  # hypothetical name: no endpoint configured here
        return {"url": self.socket_mode_url}
