"""Button clicks and menu choices in the incident thread: acknowledge at once, then ask the run service.

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

from bot.blocks import modals
from bot.errors import StateConflict, UsageError, UserError
from bot.listeners.common import BotContext, guarded
from bot.runs import policy
from bot.slack_ids import ACTION_PATTERN, ActionId, ButtonRef, action_of

log = logging.getLogger(__name__)

# Kinds that always answer with a modal (the last three only from messages posted before the ⋯ menu).
FORM_KINDS = frozenset({ActionId.MORE, ActionId.MARK_DONE, ActionId.SKIP, ActionId.ABORT})
OVERRIDES = {ActionId.MARK_DONE: "mark_done", ActionId.SKIP: "skip", ActionId.ABORT: "abort"}


def register(app: App, ctx: BotContext) -> None:
    @app.action(re.compile(ACTION_PATTERN))
    def on_action(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()  # first: Slack wants an answer within 3 s
        user = (body.get("user") or {}).get("id", "?")
        action_id = str(action.get("action_id", ""))
        if _opens_a_form(action_id):
            with guarded(ctx, respond, user, f"form {action_id}"):
                if ctx.first_delivery(body):
                    try:
                        open_form(ctx, client, body, action)
                    except UserError as exc:
                        ctx.service.refuse(_run_of(action), user, action_id, str(exc))
                        raise
            return
        ctx.background(_work, ctx, body, action, respond)


def _opens_a_form(action_id: str) -> bool:
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
    """Build the modal this click asks for from the stored run, and open it with the click's trigger_id."""
    user = body["user"]["id"]
    kind = action_of(str(action["action_id"]))
    ref = _ref_of(action)
    what = OVERRIDES.get(kind) or (ref.extra if kind == ActionId.MORE else str(kind))
    # Who may is checked before the form opens (and again when it is submitted).
    if what == "abort":
        policy.check_operator(ctx.config.slack, user)
    else:
        policy.check_approver(ctx.config.slack, user, ctx.groups.members)
    view = ctx.service.view(ref.run_id)
    if view.run.state != "active":
        raise StateConflict(f"Run {ref.run_id} is {view.run.state}; its buttons no longer do anything.")
    sv = view.step(ref.step_id) if ref.step_id else view.current
    if sv is None:
        raise StateConflict(f"Run {ref.run_id} has no current step.")
    if what != "abort" and ref.round != sv.row.attempt:
        raise UsageError(f"This message of step {sv.step.id} is out of date (it was asked again); use the newest one.")
    if kind != ActionId.DONE and what != "abort" and sv.step.risk == "destructive":
        # Approve, Mark done and Skip on a deletion obey the delete rules (the service checks them again).
        policy.check_destructive_approver(ctx.config.slack, user, view.run.initiator)
    if what == "abort":
        form = modals.abort_modal(view, view.current or sv)
    elif what in ("mark_done", "skip"):
        form = modals.override_modal(view, sv, what)
    elif kind == ActionId.APPROVE:
        form = modals.approve_delete_modal(view, sv)
    elif kind == ActionId.DONE:
        form = modals.done_modal(view, sv)
    else:
        raise UsageError("This menu option is not one of the bot's.")
    try:
        client.views_open(trigger_id=body.get("trigger_id", ""), view=form)
    except SlackApiError as exc:
        error = exc.response.get("error")
        log.warning("Slack did not open the %s form for %s: %s", what, user, error)
        raise UsageError(f"Slack did not open the form ({error}); press the button again.") from None


def _work(ctx: BotContext, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
    if not ctx.first_delivery(body):
        return
    user = (body.get("user") or {}).get("id", "?")
    with guarded(ctx, respond, user, f"button {action.get('action_id')}"):
        handle_click(ctx, body, action, respond)


def _say(respond: Respond, text: str) -> None:
    respond(text=text, response_type="ephemeral", replace_original=False)


def handle_click(ctx: BotContext, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
    user = body["user"]["id"]
    ref = _ref_of(action)
    action_id = action_of(str(action["action_id"]))
    try:
        _dispatch(ctx, action_id, ref, user, respond)
    except UserError as exc:
        ctx.service.refuse(ref.run_id, user, str(action.get("action_id")), str(exc), step_id=ref.step_id or None)
        raise
    finally:
        ctx.changed(ref.run_id)
    ctx.worker.kick(ref.run_id)


def _dispatch(ctx: BotContext, action_id: ActionId, ref: ButtonRef, user: str, respond: Respond) -> None:
    svc = ctx.service  # round and fingerprint of the clicked message are compared under the step's row lock
    if action_id == ActionId.APPROVE:
        out = svc.approve(ref.run_id, ref.step_id, user, round=ref.round, fingerprint=ref.fingerprint)
        if out.already:
            _say(respond, f"You already approved {ref.step_id}; a person counts once ({out.have} of {out.needed}).")
        elif not out.approved and out.have < out.needed:
            _say(respond, f"Approval recorded ({out.have} of {out.needed}); waiting for another approver.")
    elif action_id == ActionId.DONE:
        svc.done(ref.run_id, ref.step_id, user, choice=ref.extra or None, round=ref.round, fingerprint=ref.fingerprint)
    elif action_id == ActionId.RETRY:
        svc.retry(ref.run_id, ref.step_id, user, target=ref.extra or None, round=ref.round, fingerprint=ref.fingerprint)
    elif action_id == ActionId.ON_IT:
        svc.hold(ref.run_id, ref.step_id, user, round=ref.round, fingerprint=ref.fingerprint)
    elif action_id == ActionId.WITHDRAW:
        left = svc.withdraw(ref.run_id, ref.step_id, user, round=ref.round, fingerprint=ref.fingerprint)
        _say(respond, f"Your approval of {ref.step_id} is withdrawn ({left} approval(s) left).")
    elif action_id == ActionId.REVEAL_OTP:
        _reveal(ctx, ref, user, respond)


def _reveal(ctx: BotContext, ref: ButtonRef, user: str, respond: Respond) -> None:
    """One-time passwords go only to the approver who asks, ephemerally; every reveal is audited."""
    ctx.service.check_reveal(ref.run_id, ref.step_id, user)
    otps = ctx.worker.one_time_passwords(ref.run_id, ref.step_id)
    ctx.service.audit_reveal(ref.run_id, ref.step_id, user, sorted(otps))
    lines = [f"• {host}: `{otp}`" for host, otp in otps.items()]
    _say(
        respond,
        f"One-time password(s) for {ref.step_id} — only you see this; do not paste it in the "
        "channel:\n" + "\n".join(lines),
    )
