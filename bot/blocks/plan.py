"""The plan in Slack: `/failover plan` as one line per step, and short ephemeral answers."""

from __future__ import annotations

from typing import Any

from bot.blocks.kit import escape, section
from bot.config import Config
from bot.runs import policy
from bot.runs.runbook import Plan


def _who_acts(step: Any, config: Config) -> str:
    needed = policy.approvals_needed(step.kind, step.risk, config.slack, step.action)
    if needed == 0:
        return "the bot"
    if step.risk == "destructive":
        return f"{needed} approvers, then a person"
    if step.kind in ("host", "sql"):
        return "an approver, then the bot"
    return "a person (Done)"


def plan_summary(plan: Plan, config: Config, args: str) -> str:
    """`/failover plan` in Slack: one line per step (id, title, where, risk, who acts) — never cut off."""
    lines = [
        f"*Plan: {plan.direction} of {plan.site}* (partner {plan.partner}, scope {plan.options.scope}) — "
        f"{len(plan.steps)} steps"
    ]
    for step in plan.steps:
        where = f"{len(step.targets)} targets" if step.fanout else ", ".join(t.key for t in step.targets) or "-"
        risk = "*DELETE*" if step.risk == "destructive" else step.risk
        lines.append(
            f"`{step.id}` {escape(step.title)} · {escape(where)} · {risk} · {_who_acts(step, config)}"
            + (" · optional" if step.optional else "")
        )
    lines.append(f"Every value and instruction: `failover-bot plan {escape(args)}` on the bot's host.")
    return "\n".join(lines)


def ephemeral_text(text: str) -> list[dict[str, Any]]:
    return [section(text)]
