"""Button clicks and menu choices in the incident thread: acknowledge at once, then ask the engine.

A click that needs a form (Mark done, Skip, Abort, approving or confirming a deletion, B25's list) opens
its modal right here, on the request thread, right after the acknowledgement: a trigger_id is good for
one ``views.open`` within 3 s, so never from the work pool or the worker.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.engine.votes import FORM_KINDS
from bot.errors import UsageError, UserError
from bot.listeners.common import BotContext, guarded, say
from bot.slack_ids import ACTION_PATTERN, ActionId, ButtonRef, action_of

log = logging.getLogger(__name__)


def register(app: App, ctx: BotContext) -> None:
    """Bind the click listener to ``app``."""

    @app.action(re.compile(ACTION_PATTERN))
    def _on_action(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, client: WebClient) -> None:
        on_action(ctx, ack, body, action, respond, client)


def on_action(
    ctx: BotContext, ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, client: WebClient
) -> None:
    """Acknowledge first (Slack wants an answer within 3 s); open a form here, or queue the click."""
    ack()
    user = (body.get("user") or {}).get("id", "?")
    action_id = str(action.get("action_id", ""))
    if opens_a_form(action_id):
        with guarded(respond, user, f"form {action_id}"):
            if ctx.first_delivery(body):
                try:
                    open_form(ctx, client, body, action)
                except UserError as exc:
                    ctx.engine.refuse(_run_of(action), user, action_id, str(exc))
                    raise
        return
    ctx.background(work, ctx, body, action, respond)


def opens_a_form(action_id: str) -> bool:
    kind = action_of(action_id) if action_id.split(":", 1)[0] in {a.value for a in ActionId} else None
    return kind in FORM_KINDS or (kind in (ActionId.APPROVE, ActionId.DONE) and action_id.endswith(":modal"))


def _run_of(action: dict[str, Any]) -> str | None:
    try:
        return _ref_of(action).run_id
    except UserError:
        return None


def _ref_of(action: dict[str, Any]) -> ButtonRef:
    chosen = action.get("selected_option")
    value = chosen.get("value") if isinstance(chosen, dict) else action.get("value")
    return ButtonRef.decode(value)


def open_form(ctx: BotContext, client: WebClient, body: dict[str, Any], action: dict[str, Any]) -> None:
    """Ask the engine for the modal this click wants, and open it with the click's trigger_id."""
    user = body["user"]["id"]
    form = ctx.engine.form(action_of(str(action["action_id"])), _ref_of(action), user)
    try:
        client.views_open(trigger_id=body.get("trigger_id", ""), view=form)
    except SlackApiError as exc:
        error = exc.response.get("error")
        log.warning("Slack did not open the %s form for %s: %s", action.get("action_id"), user, error)
        raise UsageError(f"Slack did not open the form ({error}); press the button again.") from None


def work(ctx: BotContext, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
    """The queued part of a click: once per delivery, answered kindly whatever happens."""
    if not ctx.first_delivery(body):
        return
    user = (body.get("user") or {}).get("id", "?")
    with guarded(respond, user, f"button {action.get('action_id')}"):
        handle_click(ctx, body, action, respond)


def handle_click(ctx: BotContext, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
    user = body["user"]["id"]
    ref = _ref_of(action)
    said = ctx.engine.click(action_of(str(action["action_id"])), ref, user, str(action.get("action_id")))
    if said:
        say(respond, said)
