"""The step card: one threaded message per step with its values, preview, result, buttons and ⋯ menu."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from bot.blocks.kit import FINISHED, ICON, button, clip, context, duration, escape, line_chunks, people, section, when
from bot.blocks.limits import HEADER_TEXT_MAX, MAX_ACTION_ELEMENTS, MAX_BLOCKS, SECTION_LIMIT
from bot.blocks.who import on_it, run_facts, who_can_act
from bot.config import SlackSettings
from bot.runs.machine import StepState
from bot.runs.rules import bot_executes, waits_on_people
from bot.runs.snapshot import RunView, StepView
from bot.slack_ids import ActionId, BlockId, ButtonRef
from bot.times import as_utc


def _result(sv: StepView) -> dict[str, Any]:
    if not sv.row.result:
        return {}
    try:
        result = json.loads(sv.row.result)
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}


def _took(sv: StepView) -> str:
    row = sv.row
    if row.started_at and row.finished_at:
        return duration((as_utc(row.finished_at) - as_utc(row.started_at)).total_seconds())
    return ""


def collapsed_line(sv: StepView) -> str:
    """A finished step in one line: ``✅ F2 · IsSlave False on as-b · 0.1 s · approved by @bob``."""
    state = StepState(sv.state)
    result = _result(sv)
    parts = [f"{ICON.get(state, '·')} {sv.step.id} · {escape(sv.step.title)}"]
    took = _took(sv)
    if took:
        parts.append(took)
    if state == StepState.SUCCEEDED:
        if result.get("choice"):
            parts.append(escape(str(result["choice"]).replace("_", " ")))
        if result.get("by"):
            parts.append(f"done by <@{result['by']}>")
        if sv.approvers:
            parts.append(f"approved by {people(sv.approvers)}")
        if result.get("summary"):
            parts.append(escape(_summary_line(str(result["summary"]))))
            passed = sum(1 for line in str(result["summary"]).splitlines() if line.strip().startswith("✓"))
            if passed:
                parts.append(f"{passed} checks passed")
    elif state == StepState.SKIPPED:
        reason = str(result.get("reason") or "")
        who = f" by <@{result['by']}>" if result.get("by") else ""
        parts.append(f"skipped{who}" + (f": {escape(reason)[:200]}" if reason else ""))
    elif state == StepState.MARKED_DONE:
        parts.append(f"marked done by {people(sv.mark_done_votes)}")
    lines = [" · ".join(parts)]
    # a read-only check (F0) lists only its problems; the rest is in the report
    lines += [escape(line.strip()) for line in str(result.get("summary", "")).splitlines()[1:] if _is_problem(line)]
    return "\n".join(lines[:12])


def _summary_line(summary: str) -> str:
    first = summary.strip().splitlines()[0] if summary.strip() else ""
    return first if len(first) <= 300 else first[:297] + "…"


def _is_problem(line: str) -> bool:
    return line.strip().startswith(("✗", "·", "⚠"))  # failed, or could not run (a host that is down)


def _result_line(sv: StepView) -> str:
    row = sv.row
    took = f" in {_took(sv)}" if _took(sv) else ""
    state = StepState(sv.state)
    by = f" · approved by {people(sv.approvers)}" if sv.approvers else ""
    if state == StepState.FAILED:
        return f"❌ Failed{took} at {when(row.finished_at)}: {escape(row.error or 'unknown error')}{by}"
    if state == StepState.UNKNOWN and row.error:
        return f"⚠️ Outcome unknown: {escape(row.error)}. Check by hand, then Retry, Mark done (two approvers) or Abort."
    if state == StepState.UNKNOWN:
        return (
            "⚠️ The bot restarted while this was running and its outcome cannot be read back. "
            "Check by hand, then Retry, Mark done (two approvers) or Abort."
        )
    if state == StepState.RUNNING:
        return f"⚙️ Running since {when(row.started_at)}{by}"
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
    if state in FINISHED:
        return collapsed_line(sv)
    return "·"


def _targets_lines(sv: StepView) -> list[str]:
    lines = []
    for t in sv.step.targets:
        row = sv.targets.get(t.key)
        if row is None:
            continue  # a target without a row of its own is named in the instructions already
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


def delete_keep_lines(sv: StepView) -> list[str]:
    """What a destructive step deletes and keeps, target by target, as the person must read it."""
    # Until every target carries explicit delete and keep objects, the target's own instruction line says
    # both (never the pair label, which names the entry to keep).
    return [f"• *{escape(t.values.get('instructions') or sv.step.instructions)}*" for t in sv.step.targets]


def delete_keep_block(sv: StepView) -> str:
    return "*⚠️ DELETE exactly this, KEEP everything else:*\n" + "\n".join(delete_keep_lines(sv))


def recorded_for(view: RunView, sv: StepView) -> str:
    """A list people entered at an earlier step (B25's Groups), shown on the step that names it (B36)."""
    facts = run_facts(view)
    out = []
    for earlier in view.steps:
        spec = earlier.step.spec
        if earlier.step.index >= sv.step.index or not spec.records or spec.choices:
            continue
        if not re.search(rf"\b{earlier.step.id}\b", sv.step.instructions) or spec.records not in facts:
            continue
        values = facts[spec.records]
        listed = ", ".join(escape(str(v)) for v in values) if isinstance(values, list) else escape(str(values))
        out.append(f"*Recorded at {earlier.step.id} (leave these as they were):* {listed or 'none'}")
    return "\n".join(out)


def _said_already(preview: str, instructions: str) -> bool:
    """A preview that only repeats the instructions (or a target line) is not shown twice."""
    flat = " ".join(preview.split())
    return not flat or flat in " ".join(instructions.split())


def step_card(view: RunView, sv: StepView, *, settings: SlackSettings | None = None) -> list[dict[str, Any]]:
    """One step as a threaded message: what, where, concrete values, preview, status and buttons.

    A finished step collapses to one line; its details are in the report.
    """
    step = sv.step
    if StepState(sv.state) in FINISHED:
        return [section(collapsed_line(sv))]
    total = len(view.steps)
    ref = ButtonRef(view.run.id, step.id, sv.row.attempt, fingerprint=sv.row.fingerprint or "")
    where = ", ".join(t.label for t in step.targets) if not step.fanout else f"{len(step.targets)} targets"
    destructive = step.risk == "destructive"
    risk = "*DESTRUCTIVE*" if destructive else step.risk
    title = f"⚠️ DELETE · {step.id} · {step.title}" if destructive else f"{step.id} · {step.title}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:HEADER_TEXT_MAX]}},
        context(
            f"Step {step.index} of {total} · {step.kind} · {risk} · {escape(where)} · KB {step.kb}"
            + (" · optional" if step.optional else "")
        ),
    ]
    # Long instructions (one line per target on a big platform) are split over sections, never clipped.
    blocks += [section(chunk.rstrip()) for chunk in line_chunks(escape(step.instructions).splitlines())[:20]]
    if sv.approval_note:
        blocks.append(context(f":warning: {sv.approval_note}"))
    recorded = recorded_for(view, sv)
    if recorded:
        blocks.append(section(recorded))
    if destructive:
        blocks.append(section(delete_keep_block(sv)))
    preview = sv.row.preview or ""
    if preview and not _said_already(preview, step.instructions):
        blocks.append(section("*What will happen:*\n```" + clip(escape(preview), SECTION_LIMIT - 40) + "```"))
    if step.fanout and len(step.targets) > 0:
        for chunk in line_chunks(_targets_lines(sv))[:20]:
            blocks.append(section(chunk))
    holder = on_it(view, step.id)
    blocks.append(context(_result_line(sv) + (f" · on it: <@{holder}>" if holder else "")))
    if settings is not None and view.run.state == "active" and waits_on_people(sv):
        blocks.append(context(f"🔔 {who_can_act(settings, view, sv)}"))
    if view.run.state == "active":
        elements = _buttons(view, sv, ref)
        menu = overflow(view, sv)
        if menu is not None:
            elements.append(menu)
        elif sv.state not in FINISHED:
            elements.append(button("Abort run", ActionId.MORE.with_suffix("abort"), replace(ref, extra="abort")))
        if elements:
            blocks.append(
                {"type": "actions", "block_id": str(BlockId.ACTIONS), "elements": elements[:MAX_ACTION_ELEMENTS]}
            )
        retry_targets = [k for k, r in sv.targets.items() if r.state == StepState.FAILED]
        if sv.state == StepState.FAILED and retry_targets:
            blocks.append(
                {
                    "type": "actions",
                    "block_id": str(BlockId.TARGET_ACTIONS),
                    "elements": [
                        button(f"Retry {k}", ActionId.RETRY.with_suffix(k), replace(ref, extra=k))
                        for k in retry_targets[:MAX_ACTION_ELEMENTS]
                    ],
                }
            )
    return blocks[:MAX_BLOCKS]


def asks_details(sv: StepView) -> bool:
    """Done opens a modal: a deletion (the DELETE/KEEP list to confirm) or a step that records a list (B25)."""
    return sv.step.risk == "destructive" or bool(sv.step.spec.records and not sv.step.spec.choices)


def _buttons(view: RunView, sv: StepView, ref: ButtonRef) -> list[dict[str, Any]]:
    """At most one primary button; red only for approving a deletion; overrides and Abort live in the menu."""
    step = sv.step
    state = StepState(sv.state)
    out: list[dict[str, Any]] = []
    destructive = step.risk == "destructive"
    if state == StepState.AWAITING_APPROVAL:
        if destructive:
            # Opens a modal with the whole DELETE/KEEP list (a confirm dialog would clip it at 300 characters).
            out.append(
                button(
                    f"Approve delete ({len(sv.approvers)} of {sv.needed})",
                    ActionId.APPROVE.with_suffix("modal"),
                    ref,
                    style="danger",
                )
            )
            if sv.approvers:
                out.append(button("Withdraw my approval", ActionId.WITHDRAW, ref))
        elif bot_executes(step):
            out.append(button("Approve", ActionId.APPROVE, ref, style="primary"))
        else:
            out += _done_buttons(sv, ref)
    elif state == StepState.APPROVED and not bot_executes(step):
        if destructive:
            out.append(button("Done: deleted", ActionId.DONE.with_suffix("modal"), ref))
        else:
            out += _done_buttons(sv, ref)
    elif state in (StepState.FAILED, StepState.UNKNOWN) and not (destructive and state == StepState.UNKNOWN):
        out.append(button("Retry", ActionId.RETRY, ref, style="primary"))
    if (
        step.kind == "manual"
        and state in (StepState.AWAITING_APPROVAL, StepState.APPROVED)
        and not on_it(view, step.id)
    ):
        out.append(button("I'm on it", ActionId.ON_IT, ref))
    if step.spec.otp and state not in FINISHED:
        out.append(button("Reveal one-time password", ActionId.REVEAL_OTP, ref))
    return out


def _done_buttons(sv: StepView, ref: ButtonRef) -> list[dict[str, Any]]:
    choices = sv.step.spec.choices
    if not choices:
        if asks_details(sv):
            return [button("Done…", ActionId.DONE.with_suffix("modal"), ref, style="primary")]
        return [button("Done", ActionId.DONE, ref, style="primary")]
    labels = {
        "done": "Done",
        "done_with_dns_redirect": "Done, and DNS was redirected",
        "reenabled": "Re-enabled mirroring",
        "left_disabled": "Left mirroring disabled",
    }
    # A choice is a decision, not "the" next step: no choice is primary (one primary per card at most).
    return [
        button(
            labels.get(c, c.replace("_", " ").capitalize()),
            ActionId.DONE.with_suffix(c),
            replace(ref, extra=c),
        )
        for c in choices
    ]


OVERRIDE_LABELS = {"mark_done": "Mark done…", "skip": "Skip…", "abort": "Abort run…"}


def override_options(sv: StepView) -> list[str]:
    """The overrides a step offers now: Skip (optional steps) or Mark done (required ones), then Abort."""
    state = StepState(sv.state)
    out: list[str] = []
    overridable = state in (StepState.AWAITING_APPROVAL, StepState.FAILED, StepState.UNKNOWN) or (
        state == StepState.APPROVED and not bot_executes(sv.step)
    )
    if overridable:
        out.append("skip" if sv.step.optional else "mark_done")
    out.append("abort")
    return out


def overflow(view: RunView, sv: StepView, *, on_status_card: bool = False) -> dict[str, Any] | None:
    """The ⋯ menu (Mark done / Skip / Abort), each opening a modal that asks for a reason; None with only Abort."""
    options = override_options(sv)
    if len(options) < 2:
        return None
    votes = f" ({len(sv.mark_done_votes)} of 2)" if sv.mark_done_votes else ""
    return {
        "type": "overflow",
        "action_id": str(ActionId.MORE),
        "options": [
            {
                "text": {
                    "type": "plain_text",
                    "text": (f"{sv.step.id}: " if on_status_card and o != "abort" else "")
                    + OVERRIDE_LABELS[o]
                    + (votes if o == "mark_done" else ""),
                },
                "value": ButtonRef(view.run.id, sv.step.id, sv.row.attempt, o, sv.row.fingerprint or "").encode(),
            }
            for o in options
        ],
    }
