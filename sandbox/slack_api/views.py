"""Modals and home tabs in the Slack stand-in: trigger_ids, views.open, views.update and views.publish."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from sandbox.slack_api.blockkit import block_problems, view_problems
from sandbox.slack_api.limits import MAX_ID_LENGTH, MAX_PRIVATE_METADATA, MAX_VIEW_BLOCKS, TRIGGER_TTL_S
from sandbox.slack_api.model import OpenView, SlackApiError, Trigger
from sandbox.slack_api.state import SlackState


class ViewsApi(SlackState):
    """A trigger_id is good for one views.open within 3 s; an open modal is updated by id (and hash) until closed."""

    def issue_trigger(self, user: str) -> str:
        """A trigger_id as Slack puts in an interaction payload: one views.open within 3 s."""
        with self._lock:
            key = f"{len(self._triggers) + 1}.{int(time.time())}.trigger{user.lower()}"
            self._triggers[key] = Trigger(user, self.clock())
        return key

    def views(self, user: str | None = None, *, open_only: bool = True) -> list[OpenView]:
        """Modals opened for ``user`` (all users when None), oldest first."""
        with self._lock:
            return copy.deepcopy(
                [v for v in self._views.values() if (user is None or v.user == user) and not (open_only and v.closed)]
            )

    def view_for_trigger(self, trigger_id: str) -> OpenView | None:
        with self._lock:
            found = next((v for v in self._views.values() if v.trigger_id == trigger_id), None)
            return copy.deepcopy(found)

    def close_view(self, view_id: str) -> None:
        """The user submitted (and the app let it close) or cancelled the modal."""
        with self._changed:
            if view_id in self._views:
                self._views[view_id].closed = True
                self._changed.notify_all()

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger_id = str(params.get("trigger_id") or "")
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise SlackApiError("invalid_trigger_id")
        if trigger.used:
            raise SlackApiError("exchanged_trigger_id")
        if self.clock() - trigger.issued_at > TRIGGER_TTL_S:
            raise SlackApiError("expired_trigger_id")
        view = self._parse_view(params.get("view"))
        trigger.used = True
        opened = OpenView(
            id=f"V{len(self._views) + 1:08d}",
            user=trigger.user,
            view=view,
            trigger_id=trigger_id,
            opened_at=time.time(),
            hash=f"{time.time():.6f}.{len(self._views)}",
        )
        self._views[opened.id] = opened
        return {"view": self._as_api_view(opened)}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        target = self._views.get(str(params.get("view_id") or ""))
        if target is None or target.closed:
            raise SlackApiError("not_found")
        if params.get("hash") and params["hash"] != target.hash:
            raise SlackApiError("hash_conflict")
        view = self._parse_view(params.get("view"))
        target.history.append(target.view)
        target.view = view
        target.hash = f"{time.time():.6f}.u{len(target.history)}"
        return {"view": self._as_api_view(target)}

    @staticmethod
    def _parse_view(raw: Any) -> dict[str, Any]:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SlackApiError("invalid_arguments") from exc
        if not isinstance(raw, dict):
            raise SlackApiError("invalid_arguments")
        if view_problems(raw):
            raise SlackApiError("invalid_arguments" if raw.get("type") != "modal" else "invalid_blocks")
        return copy.deepcopy(raw)

    def _as_api_view(self, opened: OpenView) -> dict[str, Any]:
        return {
            "id": opened.id,
            "team_id": self.team_id,
            "hash": opened.hash,
            "state": {"values": {}},
            **copy.deepcopy(opened.view),
        }

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        """views.publish: a ``type: home`` view for one user, checked as Slack checks it."""
        user = params.get("user_id")
        if not user or not isinstance(user, str):
            raise SlackApiError("invalid_arguments")
        if self.users and user not in self.users:
            raise SlackApiError("user_not_found")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except json.JSONDecodeError as exc:
                raise SlackApiError("invalid_arguments") from exc
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackApiError("invalid_arguments")  # views.publish takes home tabs only
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise SlackApiError("invalid_arguments")
        if block_problems(blocks, limit=MAX_VIEW_BLOCKS, surface="view"):
            raise SlackApiError("invalid_arguments")
        if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA:
            raise SlackApiError("invalid_arguments")
        if len(str(view.get("callback_id", ""))) > MAX_ID_LENGTH:
            raise SlackApiError("invalid_arguments")
        self.home_views[user] = copy.deepcopy(view)
        return {"view": {"id": f"V{len(self.home_views):08d}", "type": "home", "blocks": blocks}}
