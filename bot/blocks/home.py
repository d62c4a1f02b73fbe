"""The App Home tab: a pure Block Kit builder from plain data (sites and readiness, the active run, recent runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.blocks.kit import clip, context, escape, hhmm, section
from bot.blocks.limits import MAX_VIEW_BLOCKS

MAX_HOME_BLOCKS = MAX_VIEW_BLOCKS


@dataclass(frozen=True)
class HostLine:
    name: str
    role: str  # "Master AccountServer", "Slave AccountServer", "StorageServer", ...
    checked_at: datetime | None
    result: str  # "all checks pass", or the failing checks


@dataclass(frozen=True)
class SiteBox:
    name: str
    hosts: list[HostLine]
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ActiveBox:
    title: str
    link: str | None
    step: str  # "F2 Set IsSlave to False"
    waiting_on: str
    since: datetime | None
    left: str | None


@dataclass(frozen=True)
class RecentRun:
    id: str
    title: str
    outcome: str
    duration: str


def home_view(
    sites: list[SiteBox],
    active: ActiveBox | None,
    recent: list[RecentRun],
    for_you: list[str],
    *,
    now: datetime,
) -> dict[str, Any]:
    """A ``type: home`` view for ``views.publish``; at most 100 blocks."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Storage Platform failover"}},
    ]
    if for_you:
        blocks.append(section("*Waiting on you*\n" + "\n".join(f"• {escape(t)}" for t in for_you)))
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Active run"}})
    if active is None:
        blocks.append(section("No run is active."))
    else:
        title = f"<{active.link}|{escape(active.title)}>" if active.link else f"*{escape(active.title)}*"
        since = f" since {hhmm(active.since)}" if active.since else ""
        lines = [title, f"Current step: {escape(active.step)}", f"Waiting on {escape(active.waiting_on)}{since}"]
        if active.left:
            lines.append(f"Left: {escape(active.left)}")
        blocks.append(section("\n".join(lines)))
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Sites"}})
    for site in sites:
        lines = [f"*{escape(site.name)}*"]
        for h in site.hosts:
            when = f"checked {hhmm(h.checked_at)}" if h.checked_at else "not checked yet"
            lines.append(f"• *{escape(h.name)}* — {escape(h.role)}; {when}: {escape(h.result)}")
        blocks.append(section(clip("\n".join(lines))))
        if site.problems:
            blocks.append(section(clip("⚠️ Open problems\n" + "\n".join(f"• {escape(p)}" for p in site.problems))))
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Last runs"}})
    if not recent:
        blocks.append(section("No runs yet."))
    for r in recent[:5]:
        blocks.append(
            section(
                f"*{escape(r.id)}* {escape(r.title)} — {escape(r.outcome)}, {escape(r.duration)}. "
                f"Report: `/failover report {escape(r.id)}` or `failover-bot report {escape(r.id)}`"
            )
        )
    blocks.append(context(f"Updated {now:%Y-%m-%d %H:%M} UTC. `/failover readiness` shows every check."))
    return {"type": "home", "blocks": blocks[:MAX_HOME_BLOCKS]}
