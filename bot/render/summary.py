"""The report's summary in the run's thread (Block Kit): outcome, durations, split-brain overrides, decisions,
overrides and follow-ups, each list capped with a pointer to the full report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.blocks.limits import SECTION_LIMIT
from bot.blocks.text import escape_mrkdwn as escape  # people's and hosts' text made inert for mrkdwn
from bot.render.report import NameOf, duration_text

if TYPE_CHECKING:
    from bot.report.model import Report

MAX_LIST = 8  # decisions, overrides, follow-ups shown in the summary; the file has all of them


def summary_blocks(report: Report, name_of: NameOf) -> tuple[str, list[dict[str, Any]]]:
    """The summary message: outcome, duration, time to Master promoted, decisions, overrides, follow-ups."""
    r = report.run
    icon = {"completed": "✅", "aborted": "🛑"}.get(r["state"], "⏳")
    direction = "Failover" if r["direction"] == "failover" else "Failback"
    title = f"{icon} Report of {r['id']}: {direction} of {escape(r['site'])} — {r['state']}"
    duration = report.duration_s
    facts = [
        f"*Duration:* {_dur(duration) if duration is not None else 'still running'}",
        "*Master promoted after:* "
        + (_dur(report.master_promoted_s) if report.master_promoted_s is not None else "not reached"),
        f"*Waiting for approvals:* {_dur(report.waited_on_people_s)}",
        f"*People working:* {_dur(report.person_working_s)} · *bot executing:* {_dur(report.executing_s)}",
        f"*Started by:* {escape(name_of(r['initiator']))}",
        "*Audit chain:* " + ("intact" if report.chain_intact else "*BROKEN*"),
    ]
    text = title
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in facts]},
    ]
    if r.get("abort_reason"):
        blocks.append(_section(f"*Aborted:* {escape(_short(r['abort_reason']))}"))
    for o in report.overrides:
        if o.split_brain:
            people = ", ".join(escape(name_of(u)) for u in o.users)
            blocks.append(
                _section(
                    f"⚠️ *Split-brain guard overridden at {o.step_id}* by {people}: "
                    + " / ".join(f"“{escape(_short(x))}”" for x in o.reasons)
                )
            )
    blocks.append(_list("Decisions", report.decisions(), "none recorded"))
    overrides = [
        f"{o.step_id} {'Mark done' if o.kind == 'mark_done' else 'Skip'} by "
        + ", ".join(escape(name_of(u)) for u in o.users)
        + ": "
        + " / ".join(f"“{escape(_short(x))}”" for x in o.reasons)
        for o in report.overrides
    ]
    blocks.append(_list("Overrides", overrides, "none", escaped=True))
    blocks.append(_list("Follow-ups", report.follow_ups(), "none"))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Full report and timeline attached below · `failover-bot report {r['id']}`"}
            ],
        }
    )
    return text, blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}


def _list(label: str, items: list[str], empty: str, *, escaped: bool = False) -> dict[str, Any]:
    shown = [i if escaped else escape(i) for i in items[:MAX_LIST]]
    more = f"\n… and {len(items) - MAX_LIST} more in the report" if len(items) > MAX_LIST else ""
    body = "\n".join(f"• {i}" for i in shown) if shown else empty
    return _section(f"*{label}:*\n{body}{more}")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dur(seconds: float | None) -> str:
    return duration_text(seconds or 0.0)
