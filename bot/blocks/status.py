"""The status card (the thread's root) and the plain answer of `/failover status`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.blocks.kit import ICON, context, duration, escape, section, when
from bot.blocks.limits import FIELD_TEXT_MAX, HEADER_TEXT_MAX, MAX_FIELDS
from bot.blocks.step import overflow
from bot.blocks.who import direction_title, on_it, waiting_on, who_can_act
from bot.config import SlackSettings
from bot.runs.machine import StepState
from bot.runs.rules import waits_on_people
from bot.runs.snapshot import RunView, StepView
from bot.slack_ids import BlockId
from bot.times import as_utc


def _next_step(view: RunView, cur: StepView) -> StepView | None:
    later = [sv for sv in view.steps if sv.step.index > cur.step.index and sv.state == StepState.PENDING]
    return later[0] if later else None


def status_card(
    view: RunView,
    now: datetime,
    left: str | None = None,
    *,
    settings: SlackSettings | None = None,
    links: Mapping[str, str] | None = None,
    problems: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The thread's root: true at every refresh (times in each reader's zone), who can act, and what comes next."""
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
        f"*Started by*\n<@{run.initiator}> at {when(run.created_at)}",
        f"*Progress*\nstep {min(view.done_count + (1 if cur else 0), total)} of {total}",
        f"*Elapsed*\n{duration(elapsed)}" + ("" if run.finished_at else f" (as of {when(now)})"),
    ]
    if cur is not None and run.state == "active":
        since = cur.row.posted_at or cur.row.updated_at
        waited = (now - as_utc(since)).total_seconds() if since else 0.0
        title = f"{cur.step.id} {cur.step.title}"
        link = (links or {}).get(cur.step.id)
        fields.append(f"*Current step*\n<{link}|{escape(title)}>" if link else f"*Current step*\n{escape(title)}")
        fields.append(f"*Waiting on*\n{waiting_on(cur)} for {duration(waited)}")
        if left:
            fields.append(f"*Left*\n{left}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": direction_title(view)[:HEADER_TEXT_MAX]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:FIELD_TEXT_MAX]} for f in fields[:MAX_FIELDS]]},
    ]
    if cur is not None and run.state == "active":
        holder = on_it(view, cur.step.id)
        lines = []
        if settings is not None and waits_on_people(cur):
            lines.append(f"*Who can act:* {who_can_act(settings, view, cur)}")
        if holder:
            lines.append(f"*On it:* <@{holder}>")
        nxt = _next_step(view, cur)
        lines.append(f"*Next:* {nxt.step.id} {escape(nxt.step.title)}" if nxt else "*Next:* the run completes")
        blocks.append(section("\n".join(lines)))
    if run.abort_reason:
        blocks.append(section(f"*Aborted:* {escape(run.abort_reason)}"))
    for problem in problems[:5]:
        blocks.append(section(f"⚠️ {problem}"))
    plan = "  ".join(f"{ICON.get(StepState(sv.state), '·')}{sv.step.id}" for sv in view.steps)
    blocks.append(context(f"Plan: {plan}"))
    blocks.append(context("Steps follow in this thread, one at a time. `/failover status` any time."))
    if cur is not None and run.state == "active":
        menu = overflow(view, cur, on_status_card=True)
        if menu is not None:
            blocks.append({"type": "actions", "block_id": str(BlockId.RUN_ACTIONS), "elements": [menu]})
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
        holder = on_it(view, cur.step.id)
        if holder:
            lines.append(f"On it: <@{holder}> (pressed “I'm on it”)")
    if permalink:
        lines.append(f"Thread: <{permalink}|open the incident thread>")
    return "\n".join(lines)
