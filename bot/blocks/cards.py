"""Pure Block Kit builders: the run's status card, the step cards, and short answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from bot.blocks.text import escape_mrkdwn as escape
from bot.runs.machine import StepState
from bot.runs.service import RunView, StepView
from bot.runs.worker import bot_executes
from bot.slack_ids import ActionId, BlockId, ButtonRef
from bot.store.db import as_utc

SECTION_LIMIT = 2900  # Slack: 3,000 characters per section text
MAX_BLOCKS = 50

ICON = {
    StepState.PENDING: "·",
    StepState.AWAITING_APPROVAL: "⏳",
    StepState.APPROVED: "👍",
    StepState.RUNNING: "⚙️",
    StepState.SUCCEEDED: "✅",
    StepState.FAILED: "❌",
    StepState.SKIPPED: "⏭",
    StepState.MARKED_DONE: "☑️",
    StepState.UNKNOWN: "⚠️",
}


def clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 40] + "\n… (shortened; see the plan or report)"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text) or " "}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, 2900) or " "}]}


def button(
    text: str, action: ActionId, ref: ButtonRef, *, style: str | None = None, confirm: dict[str, Any] | None = None
) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:75]},
        "action_id": str(action),
        "value": ref.encode(),
    }
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def confirm_dialog(title: str, text: str, ok: str, *, danger: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "title": {"type": "plain_text", "text": title[:100]},
        "text": {"type": "mrkdwn", "text": text[:300]},
        "confirm": {"type": "plain_text", "text": ok[:30]},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    if danger:
        d["style"] = "danger"
    return d


def people(users: Sequence[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users) if users else "nobody yet"


def hhmm(value: datetime | None) -> str:
    return as_utc(value).strftime("%H:%M:%S UTC") if value else "?"


def duration(seconds: float) -> str:
    s = int(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


# ---------------------------------------------------------------------------- status card


def direction_title(view: RunView) -> str:
    r = view.run
    arrow = f"{r.site} → {r.partner}" if r.direction == "failover" else f"{r.partner} → {r.site}"
    return f"{r.direction.capitalize()} {arrow} · {r.id}"


def waiting_on(sv: StepView) -> str:
    """Who the current step waits on, in words."""
    step = sv.step
    if sv.state == StepState.AWAITING_APPROVAL:
        if step.risk == "destructive":
            return f"two different approvers ({len(sv.approvers)} of {sv.needed})"
        if bot_executes(step):
            return "an approver to press Approve"
        return "a person to do this and press Done"
    if sv.state == StepState.APPROVED:
        return "the bot" if bot_executes(step) else "the person performing it to press Done"
    if sv.state == StepState.RUNNING:
        return "the bot (running)"
    if sv.state == StepState.FAILED:
        return "an approver: Retry, Mark done or Abort"
    if sv.state == StepState.UNKNOWN:
        return "people: the outcome is unknown after a restart"
    return "-"


def status_card(view: RunView, now: datetime, left: str | None = None) -> list[dict[str, Any]]:
    run = view.run
    total = len(view.steps)
    cur = view.current
    state = {"active": "in progress", "completed": "✅ completed", "aborted": "🛑 aborted"}[run.state]
    elapsed = ((as_utc(run.finished_at) if run.finished_at else now) - as_utc(run.created_at)).total_seconds()
    fields = [
        f"*State*\n{state}",
        f"*Scope*\n{run.scope}"
        + (f" ({escape(run.storage)})" if run.storage else "")
        + (" · rebuilt" if run.rebuilt else ""),
        f"*Started by*\n<@{run.initiator}> at {hhmm(run.created_at)}",
        f"*Progress*\nstep {min(view.done_count + (1 if cur else 0), total)} of {total}",
        f"*Elapsed*\n{duration(elapsed)}",
    ]
    if cur is not None and run.state == "active":
        since = cur.row.posted_at or cur.row.updated_at
        waited = (now - as_utc(since)).total_seconds() if since else 0.0
        fields.append(f"*Current step*\n{cur.step.id} {cur.step.title}")
        fields.append(f"*Waiting on*\n{waiting_on(cur)} for {duration(waited)}")
        if left:
            fields.append(f"*Left*\n{left}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": direction_title(view)[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields[:10]]},
    ]
    if run.abort_reason:
        blocks.append(section(f"*Aborted:* {escape(run.abort_reason)}"))
    plan = "  ".join(f"{ICON.get(StepState(sv.state), '·')}{sv.step.id}" for sv in view.steps)
    blocks.append(context(f"Plan: {plan}"))
    blocks.append(context("Steps follow in this thread, one at a time. `/failover status` any time."))
    return blocks


def status_text(view: RunView, now: datetime, permalink: str | None = None, left: str | None = None) -> str:
    """The plain answer of `/failover status`."""
    run = view.run
    total = len(view.steps)
    cur = view.current
    lines = [f"*{direction_title(view)}* — {run.state}, {view.done_count} of {total} steps done"]
    if cur is not None and run.state == "active":
        since = cur.row.posted_at or cur.row.updated_at
        waited = (now - as_utc(since)).total_seconds() if since else 0.0
        lines.append(f"Current step: *{cur.step.id}* {escape(cur.step.title)} ({cur.state.replace('_', ' ')})")
        lines.append(f"Waiting on {waiting_on(cur)} for {duration(waited)}")
        if left:
            lines.append(f"Left: {left}")
    if permalink:
        lines.append(f"Thread: <{permalink}|open the incident thread>")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- step card


def _result_line(sv: StepView) -> str:
    row = sv.row
    result: dict[str, Any] = {}
    if row.result:
        try:
            result = json.loads(row.result)
        except ValueError:
            result = {}
    took = ""
    if row.started_at and row.finished_at:
        took = f" in {duration((as_utc(row.finished_at) - as_utc(row.started_at)).total_seconds())}"
    state = StepState(sv.state)
    by = f" · approved by {people(sv.approvers)}" if sv.approvers else ""
    if state == StepState.SUCCEEDED:
        who = f" by <@{result['by']}>" if result.get("by") else ""
        choice = f" ({result['choice']})" if result.get("choice") else ""
        summary = escape(str(result.get("summary", "")))
        return f"✅ Done{who}{choice}{took} at {hhmm(row.finished_at)}{by}" + (f"\n{summary}" if summary else "")
    if state == StepState.FAILED:
        return f"❌ Failed{took} at {hhmm(row.finished_at)}: {escape(row.error or 'unknown error')}{by}"
    if state == StepState.SKIPPED:
        reason = escape(str(result.get("reason") or ""))
        return f"⏭ Skipped at {hhmm(row.finished_at)}" + (f": {reason}" if reason else "")
    if state == StepState.MARKED_DONE:
        return f"☑️ Marked done at {hhmm(row.finished_at)} by {people(sv.mark_done_votes)}"
    if state == StepState.UNKNOWN and row.error:
        return f"⚠️ Outcome unknown: {escape(row.error)}. Check by hand, then Retry, Mark done (two approvers) or Abort."
    if state == StepState.UNKNOWN:
        return (
            "⚠️ The bot restarted while this was running and its outcome cannot be read back. "
            "Check by hand, then Retry, Mark done (two approvers) or Abort."
        )
    if state == StepState.RUNNING:
        return f"⚙️ Running since {hhmm(row.started_at)}{by}"
    if state == StepState.APPROVED:
        if bot_executes(sv.step):
            return f"👍 Approved{by} — starting"
        return f"👍 Approved{by} ({len(sv.approvers)} of {sv.needed}). The person performing it presses Done."
    if state == StepState.AWAITING_APPROVAL:
        if sv.needed > 1:
            return (
                f"⏳ Needs {sv.needed} different approvers: {len(sv.approvers)} of {sv.needed} ({people(sv.approvers)})"
            )
        if bot_executes(sv.step):
            return "⏳ Waiting for an approver to press Approve"
        return "⏳ Waiting for someone to do this and press Done"
    return ""


def _targets_lines(sv: StepView) -> list[str]:
    lines = []
    for t in sv.step.targets:
        row = sv.targets.get(t.key)
        if row is None:
            lines.append(f"• {escape(t.label)}")
            continue
        detail = ""
        if row.state == StepState.FAILED and row.error:
            detail = f" — {escape(row.error[:200])}"
        elif row.result:
            try:
                detail = " — " + escape(str(json.loads(row.result).get("summary", ""))[:200])
            except ValueError:
                detail = ""
        lines.append(f"{ICON.get(StepState(row.state), '·')} {escape(t.label)}: {row.state.replace('_', ' ')}{detail}")
    return lines


def _chunks(lines: list[str], limit: int = SECTION_LIMIT) -> list[str]:
    out, cur = [], ""
    for line in lines:
        if len(cur) + len(line) + 1 > limit:
            out.append(cur)
            cur = ""
        cur += line + "\n"
    if cur:
        out.append(cur)
    return out


def step_card(view: RunView, sv: StepView) -> list[dict[str, Any]]:
    """One step as a threaded message: what, where, concrete values, preview, status and buttons."""
    step = sv.step
    total = len(view.steps)
    ref = ButtonRef(view.run.id, step.id, sv.row.attempt, fingerprint=sv.row.fingerprint or "")
    where = escape(", ".join(t.label for t in step.targets)) if not step.fanout else f"{len(step.targets)} targets"
    risk = "*DESTRUCTIVE*" if step.risk == "destructive" else step.risk
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{step.id} · {step.title}"[:150]}},
        context(
            f"Step {step.index} of {total} · {step.kind} · {risk} · {where} · KB {step.kb}"
            + (" · optional" if step.optional else "")
        ),
        section(escape(step.instructions)),
    ]
    if sv.approval_note:
        blocks.append(context(f":warning: {sv.approval_note}"))
    preview = sv.row.preview or ""
    if preview:
        blocks.append(section("*What will happen:*\n```" + clip(escape(preview), SECTION_LIMIT - 40) + "```"))
    if step.fanout and len(step.targets) > 0:
        for chunk in _chunks(_targets_lines(sv))[:20]:
            blocks.append(section(chunk))
    blocks.append(context(_result_line(sv)))
    if view.run.state == "active" and sv.state not in (StepState.SUCCEEDED, StepState.SKIPPED, StepState.MARKED_DONE):
        buttons = _buttons(view, sv, ref)
        needs_reason = any(b["action_id"] in (ActionId.SKIP, ActionId.MARK_DONE) for b in buttons)
        if needs_reason:
            blocks.append(
                {
                    "type": "input",
                    "block_id": str(BlockId.REASON),
                    "optional": True,
                    "label": {"type": "plain_text", "text": "Reason (for Skip or Mark done)"},
                    "element": {"type": "plain_text_input", "action_id": str(ActionId.REASON_INPUT)},
                }
            )
        if buttons:
            blocks.append({"type": "actions", "block_id": str(BlockId.ACTIONS), "elements": buttons[:25]})
        retry_targets = [k for k, r in sv.targets.items() if r.state == StepState.FAILED]
        if sv.state == StepState.FAILED and retry_targets:
            blocks.append(
                {
                    "type": "actions",
                    "block_id": str(BlockId.TARGET_ACTIONS),
                    "elements": [
                        button(f"Retry {k}", ActionId.RETRY, replace(ref, extra=k)) for k in retry_targets[:25]
                    ],
                }
            )
    return blocks[:MAX_BLOCKS]


def _what_is_deleted(sv: StepView) -> str:
    return escape("; ".join(t.label for t in sv.step.targets))


def _buttons(view: RunView, sv: StepView, ref: ButtonRef) -> list[dict[str, Any]]:
    step = sv.step
    state = StepState(sv.state)
    out: list[dict[str, Any]] = []
    destructive = step.risk == "destructive"
    if state == StepState.AWAITING_APPROVAL:
        if destructive:
            out.append(
                button(
                    f"Approve delete ({len(sv.approvers)} of {sv.needed})",
                    ActionId.APPROVE,
                    ref,
                    style="danger",
                    confirm=confirm_dialog(
                        "Approve a deletion",
                        f"This approves deleting exactly: {_what_is_deleted(sv)}. Nothing else may be deleted.",
                        "Approve",
                        danger=True,
                    ),
                )
            )
        elif bot_executes(step):
            out.append(button("Approve", ActionId.APPROVE, ref, style="primary"))
        else:
            out += _done_buttons(sv, ref)
    elif state == StepState.APPROVED and not bot_executes(step):
        if destructive:
            out.append(
                button(
                    "Done: deleted",
                    ActionId.DONE,
                    ref,
                    style="danger",
                    confirm=confirm_dialog(
                        "Confirm the deletion",
                        f"You deleted exactly: {_what_is_deleted(sv)} — and nothing else.",
                        "Yes, done",
                        danger=True,
                    ),
                )
            )
        else:
            out += _done_buttons(sv, ref)
    elif state in (StepState.FAILED, StepState.UNKNOWN) and not (destructive and state == StepState.UNKNOWN):
        out.append(button("Retry", ActionId.RETRY, ref, style="primary"))
    if step.spec.otp and state not in (StepState.SUCCEEDED, StepState.SKIPPED, StepState.MARKED_DONE):
        out.append(button("Reveal one-time password", ActionId.REVEAL_OTP, ref))
    if state in (StepState.AWAITING_APPROVAL, StepState.FAILED, StepState.UNKNOWN, StepState.APPROVED) and not (
        state == StepState.APPROVED and bot_executes(step)
    ):
        if step.optional:
            out.append(button("Skip", ActionId.SKIP, ref))
        else:
            votes = f" ({len(sv.mark_done_votes)} of 2)" if sv.mark_done_votes else ""
            out.append(button(f"Mark done{votes}", ActionId.MARK_DONE, ref))
    out.append(
        button(
            "Abort run",
            ActionId.ABORT,
            ref,
            style="danger",
            confirm=confirm_dialog(
                "Abort the run?",
                f"Abort {view.run.id}? Steps already done stay done; nothing more will run.",
                "Abort",
                danger=True,
            ),
        )
    )
    return out


def _done_buttons(sv: StepView, ref: ButtonRef) -> list[dict[str, Any]]:
    choices = sv.step.spec.choices
    if not choices:
        return [button("Done", ActionId.DONE, ref, style="primary")]
    labels = {
        "done": "Done",
        "done_with_dns_redirect": "Done, and DNS was redirected",
        "reenabled": "Re-enabled mirroring",
        "left_disabled": "Left mirroring disabled",
    }
    return [
        button(
            labels.get(c, c.replace("_", " ").capitalize()),
            ActionId.DONE,
            replace(ref, extra=c),
            style="primary" if i == 0 else None,
        )
        for i, c in enumerate(choices)
    ]


def ephemeral_text(text: str) -> list[dict[str, Any]]:
    return [section(text)]
