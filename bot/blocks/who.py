"""Who a step waits on and who can act, in words for the cards: approvers, "I'm on it", the run's title."""

from __future__ import annotations

import json
from typing import Any

from bot.config import SlackSettings
from bot.runs.machine import StepState
from bot.runs.rules import approvers_who_can_act, bot_executes
from bot.runs.snapshot import RunView, StepView


def who_can_act(settings: SlackSettings, view: RunView, sv: StepView) -> str:
    """``<@bob> or <@carol> — not <@alice>, who started the run`` (user groups are named at escalation only)."""
    users = approvers_who_can_act(settings, view, sv)
    names = [f"<@{u}>" for u in users]
    text = " or ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + f" or {names[-1]}"
    if settings.approver_groups and not names:
        text = "a member of the approver group"
    elif settings.approver_groups:
        text += " (or a member of the approver group)"
    excluded = (
        sv.step.risk == "destructive"
        and sv.state == StepState.AWAITING_APPROVAL
        and not settings.initiator_may_approve_destructive
        and view.run.initiator in settings.approvers
    )
    if excluded:
        text += f" — not <@{view.run.initiator}>, who started the run"
    return text or "nobody (no approvers are configured)"


def step_mentions(settings: SlackSettings, view: RunView, sv: StepView) -> list[str]:
    """Whom to ping once when a step starts waiting on people (a thread reply alone notifies nobody)."""
    return [f"<@{u}>" for u in approvers_who_can_act(settings, view, sv)]


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


def on_it(view: RunView, step_id: str) -> str | None:
    """Who pressed "I'm on it" on ``step_id`` this round, if anyone."""
    facts = run_facts(view)
    held = facts.get(f"on_it.{step_id}")
    if isinstance(held, dict) and held.get("round") == view.step(step_id).row.attempt:
        return str(held.get("user") or "") or None
    return None


def run_facts(view: RunView) -> dict[str, Any]:
    try:
        facts = json.loads(view.run.facts or "{}")
    except ValueError:
        return {}
    return facts if isinstance(facts, dict) else {}
