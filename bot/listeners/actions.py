"""Button clicks in the incident thread: acknowledge at once, then ask the run service."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.errors import UserError
from bot.listeners.common import BotContext, guarded, reason_from
from bot.slack_ids import ActionId, ButtonRef


def register(app: App, ctx: BotContext) -> None:
    def on_click(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        ack()  # first: Slack wants an answer within 3 s; the work is queued behind it
        ctx.background(_work, ctx, body, action, respond)

    for action_id in ActionId:
        if action_id != ActionId.REASON_INPUT:
            app.action(str(action_id))(on_click)

    @app.action(str(ActionId.REASON_INPUT))
    def typed(ack: Ack) -> None:
        ack()  # typing a reason is not an action by itself


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
    ref = ButtonRef.decode(action.get("value"))
    action_id = ActionId(action["action_id"])
    try:
        _dispatch(ctx, body, action_id, ref, user, respond)
    except UserError as exc:
        ctx.service.refuse(ref.run_id, user, str(action_id), str(exc), step_id=ref.step_id or None)
        raise
    finally:
        ctx.changed(ref.run_id)
    ctx.worker.kick(ref.run_id)


def _dispatch(
    ctx: BotContext, body: dict[str, Any], action_id: ActionId, ref: ButtonRef, user: str, respond: Respond
) -> None:
    svc = ctx.service
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
    elif action_id == ActionId.MARK_DONE:
        out = svc.vote_mark_done(
            ref.run_id, ref.step_id, user, reason_from(body), round=ref.round, fingerprint=ref.fingerprint
        )
        if not out.approved:
            _say(respond, f"Mark done recorded ({out.have} of {out.needed}); another approver must confirm.")
    elif action_id == ActionId.SKIP:
        out = svc.skip(ref.run_id, ref.step_id, user, reason_from(body), round=ref.round, fingerprint=ref.fingerprint)
        if not out.approved:
            _say(respond, f"Skip recorded ({out.have} of {out.needed}); another approver must confirm.")
    elif action_id == ActionId.ABORT:
        svc.abort(ref.run_id, user, reason_from(body) or "aborted from the incident thread")
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
