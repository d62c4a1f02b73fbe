"""The run's pure predicates, one implementation each: who executes a step, whether it waits on people, who can act."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.config import SlackSettings
from bot.runs.machine import StepState
from bot.runs.runbook import ResolvedStep

if TYPE_CHECKING:
    from bot.runs.snapshot import RunView, StepView

BOT_RUNS = ("host", "sql")  # kinds the bot executes; F0 (check, action preflight) too
WAITING_ON_PEOPLE = frozenset({StepState.AWAITING_APPROVAL, StepState.FAILED, StepState.UNKNOWN})


def bot_executes(step: ResolvedStep) -> bool:
    """The bot runs this step itself (a host or SQL step, or the preflight check); people do the others."""
    return step.kind in BOT_RUNS or step.action == "preflight"


def waits_on_people(sv: StepView) -> bool:
    """True while nothing happens until a person acts (approve, Done, Retry, Mark done)."""
    if sv.state in WAITING_ON_PEOPLE:
        return True
    return sv.state == StepState.APPROVED and not bot_executes(sv.step)


def approvers_who_can_act(settings: SlackSettings, view: RunView, sv: StepView) -> list[str]:
    """Approvers (by id) who can move the step on now: not those who already approved a deletion, nor its initiator."""
    users = list(settings.approvers)
    if sv.step.risk == "destructive" and sv.state == StepState.AWAITING_APPROVAL:
        users = [u for u in users if u not in sv.approvers]
        if not settings.initiator_may_approve_destructive:
            users = [u for u in users if u != view.run.initiator]
    return users


def mentions(settings: SlackSettings, view: RunView, sv: StepView, *, groups: bool = True) -> list[str]:
    """Whom to mention about the step: the approvers who can act, and with ``groups`` their user groups
    (group mentions only at escalation: a reminder pings people, not teams)."""
    people = [f"<@{u}>" for u in approvers_who_can_act(settings, view, sv)]
    return people + ([f"<!subteam^{g}>" for g in settings.approver_groups] if groups else [])
