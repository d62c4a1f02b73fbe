"""People in the Slack stand-in: users.info and usergroups.users.list."""

from __future__ import annotations

from typing import Any

from sandbox.slack_api.model import SlackApiError
from sandbox.slack_api.state import SlackState


class DirectoryApi(SlackState):
    """Who is in the workspace (``users``) and in which user group (``usergroups``)."""

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user") or "")
        if user not in self.users and user != self.bot_user_id:
            raise SlackApiError("user_not_found")
        name = self.users.get(user, "failover-bot")
        return {
            "user": {
                "id": user,
                "team_id": self.team_id,
                "name": name,
                "real_name": name,
                "is_bot": user == self.bot_user_id,
                "profile": {"display_name": name, "real_name": name},
            }
        }

    def _usergroup_users(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup") or "")
        if group not in self.usergroups:
            raise SlackApiError("no_such_subteam")
        return {"users": list(self.usergroups[group])}
