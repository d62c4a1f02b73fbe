"""Submitted modals: the engine casts the vote, bound to the run, step, round and fingerprint of the form."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.blocks import modals
from bot.errors import UserError
from bot.listeners.common import BotContext
from bot.slack_ids import BlockId, CallbackId, ModalRef

log = logging.getLogger(__name__)

NEEDS_REASON = {CallbackId.MARK_DONE, CallbackId.SKIP, CallbackId.ABORT}


def register(app: App, ctx: BotContext) -> None:
    """Bind the form listener to ``app``."""

    @app.view(re.compile(r"^modal_"))
    def _on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        submit(ctx, ack, body, view, client)


def _input_errors(callback: CallbackId, values: dict[str, Any], step_records: bool) -> dict[str, str]:
    if callback in NEEDS_REASON and not str(values.get(str(BlockId.REASON)) or "").strip():
        return {str(BlockId.REASON): "A reason is required."}
    if callback == CallbackId.MARK_DONE and str(BlockId.CHOICE) in values and not values[str(BlockId.CHOICE)]:
        return {str(BlockId.CHOICE): "Choose what happened to this step."}
    if callback == CallbackId.DONE and step_records:
        groups = modals.parse_groups(values.get(str(BlockId.GROUPS)))
        none = "none" in (values.get(str(BlockId.NONE_DISABLED)) or [])
        if not groups and not none:
            return {str(BlockId.GROUPS): "List the Groups that were already disabled, or tick the box below."}
        if groups and none:
            return {str(BlockId.NONE_DISABLED): "You listed Groups; untick “No Group was disabled before”."}
    return {}


def submit(ctx: BotContext, ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
    """Check the form, cast the vote under the step's row lock, and answer Slack within its 3 s."""
    user = (body.get("user") or {}).get("id", "?")
    try:
        callback = CallbackId(str(view.get("callback_id", "")))
        ref = ModalRef.decode(view.get("private_metadata"))
        values = modals.submitted_values(view)
        records = ctx.engine.records_list(ref)
        errors = _input_errors(callback, values, records)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        said = ctx.engine.submit(callback, ref, user, values, records)
    except UserError as exc:
        run_id = _run_of(view)
        ctx.engine.refuse(run_id, user, str(view.get("callback_id")), str(exc))
        ack(response_action="update", view=modals.refusal_view("Not done", str(exc)))
        return
    except Exception as exc:  # the person still gets an answer; details go to the log only
        reference = uuid.uuid4().hex[:8]
        log.exception("error %s while handling a form of %s", reference, user)
        ack(
            response_action="update",
            view=modals.refusal_view(
                "Something went wrong",
                f"Something went wrong on the bot's side (reference {reference}); nothing was changed by this "
                f"form. The operator can find {reference} in the bot's log. ({type(exc).__name__})",
            ),
        )
        return
    ack()
    ctx.background(_after, ctx, client, ref, user, said)


def _run_of(view: dict[str, Any]) -> str | None:
    try:
        return ModalRef.decode(view.get("private_metadata")).run_id
    except UserError:
        return None


def _after(ctx: BotContext, client: WebClient, ref: ModalRef, user: str, said: str) -> None:
    ctx.engine.changed(ref.run_id)
    if not said:
        return
    channel, thread_ts = ctx.engine.thread_of(ref.run_id)
    try:
        client.chat_postEphemeral(channel=channel, user=user, text=said, thread_ts=thread_ts)
    except SlackApiError as exc:
        log.warning("could not tell %s: %s", user, exc.response.get("error"))
