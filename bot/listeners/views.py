"""Submitted modals: the vote is cast here, bound to the run, step, round and fingerprint the form was opened for."""

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
    @app.view(re.compile(r"^modal_"))
    def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
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
        records = _records_list(ctx, ref)
        errors = _input_errors(callback, values, records)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        said = _cast(ctx, callback, ref, user, values, records)
    except UserError as exc:
        run_id = _run_of(view)
        ctx.service.refuse(run_id, user, str(view.get("callback_id")), str(exc))
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


def _records_list(ctx: BotContext, ref: ModalRef) -> bool:
    step = ctx.service.plan_of(ctx.service.get_run(ref.run_id)).step(ref.step_id)
    return bool(step.spec.records and not step.spec.choices)


def _cast(
    ctx: BotContext, callback: CallbackId, ref: ModalRef, user: str, values: dict[str, Any], records: bool
) -> str:
    """The vote itself; returns what to tell the person afterwards (empty: the thread says it)."""
    svc = ctx.service
    reason = str(values.get(str(BlockId.REASON)) or "").strip()
    rnd, fp = ref.round, ref.fingerprint  # compared with the step's under its row lock
    if callback == CallbackId.MARK_DONE:
        choice = values.get(str(BlockId.CHOICE))  # B4: edited by hand, or not done (decides B4b)
        out = svc.vote_mark_done(ref.run_id, ref.step_id, user, reason, round=rnd, fingerprint=fp, choice=choice)
        if out.already:
            return f"You already marked {ref.step_id} done; a person counts once ({out.have} of {out.needed})."
        return (
            "" if out.approved else f"Mark done recorded ({out.have} of {out.needed}); another approver must confirm."
        )
    if callback == CallbackId.SKIP:
        skipped = svc.skip(ref.run_id, ref.step_id, user, reason, round=rnd, fingerprint=fp)
        if skipped.already:
            return (
                f"You already voted to skip {ref.step_id}; a person counts once ({skipped.have} of {skipped.needed})."
            )
        return (
            ""
            if skipped.approved
            else f"Skip recorded ({skipped.have} of {skipped.needed}); another approver must confirm."
        )
    if callback == CallbackId.ABORT:
        svc.abort(ref.run_id, user, reason)  # operators only (the service checks)
        return ""
    if callback == CallbackId.APPROVE:
        approval = svc.approve(ref.run_id, ref.step_id, user, round=rnd, fingerprint=fp)
        if approval.already:
            return f"You already approved {ref.step_id}; a person counts once ({approval.have} of {approval.needed})."
        if not approval.approved:
            return f"Approval recorded ({approval.have} of {approval.needed}); waiting for another approver."
        return ""
    if callback == CallbackId.DONE:
        recorded: list[str] | None = modals.parse_groups(values.get(str(BlockId.GROUPS))) if records else None
        svc.done(ref.run_id, ref.step_id, user, choice=ref.choice or None, recorded=recorded, round=rnd, fingerprint=fp)
        return ""
    raise UserError("This form is not one of the bot's.")


def _after(ctx: BotContext, client: WebClient, ref: ModalRef, user: str, said: str) -> None:
    ctx.changed(ref.run_id)
    ctx.worker.kick(ref.run_id)
    if not said:
        return
    run = ctx.service.get_run(ref.run_id)
    try:
        client.chat_postEphemeral(channel=run.channel, user=user, text=said, thread_ts=run.thread_ts)
    except SlackApiError as exc:
        log.warning("could not tell %s: %s", user, exc.response.get("error"))
