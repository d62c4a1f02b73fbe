"""The report as text: the Markdown file (``failover-bot report``, the thread's attachment) and its sentences."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.report.model import Report

NameOf = Callable[[str], str]  # a Slack user ID -> the name the report shows


def markdown(report: Report, name_of: NameOf = str) -> str:
    """The full report; ``name_of`` turns Slack user IDs into names (IDs when it cannot)."""
    r = report.run

    def who(users: list[str]) -> str:
        return ", ".join(name_of(u) if u != "bot" else "the bot" for u in users) or "-"

    duration = report.duration_s
    promoted = report.master_promoted_s
    lines = [
        f"# {r['id']}: {r['direction']} of {r['site']} (partner {r['partner']})",
        "",
        f"- platform: {r['platform']}; scope: {r['scope']}"
        + (f"; StorageServers: {r['storage']}" if r["storage"] else "")
        + ("; rebuilt site" if r["rebuilt"] else ""),
        f"- started by {who([r['initiator']])} at {r['created_at']}; state: **{r['state']}**"
        + (f" at {r['finished_at']}" if r["finished_at"] else "")
        + (f" — {r['abort_reason']}" if r.get("abort_reason") else ""),
        f"- duration: {duration_text(duration) if duration is not None else 'still running'}"
        + (f"; Master promoted after {duration_text(promoted)}" if promoted is not None else ""),
        f"- time waited on people: {duration_text(report.waited_on_people_s)} waiting for an approval; "
        f"{duration_text(report.person_working_s)} people working after “I'm on it”; "
        f"{duration_text(report.executing_s)} the bot executing",
        "- audit chain: "
        + ("intact" if report.chain_intact else "**BROKEN** — " + "; ".join(report.chain_problems))
        + ("" if report.chain_keyed else " (chain not keyed: anyone who can write the database could re-seal it)"),
        *(
            [f"- chain head when the run ended: {report.end_digest} (compare with the thread)"]
            if report.end_digest
            else []
        ),
    ]
    split = [o for o in report.overrides if o.split_brain]
    for o in split:
        lines += [
            "",
            f"> **⚠️ SPLIT-BRAIN GUARD OVERRIDDEN at {o.step_id}** by {who(o.users)}: "
            + " / ".join(_one_line(x) for x in o.reasons),
        ]
    lines += ["", "## Decisions and recorded facts", ""]
    lines += [f"- {d}" for d in report.decisions()] or ["- none recorded"]
    lines += ["", "## Overrides", ""]
    lines += [
        f"- {o.step_id}: {'Mark done' if o.kind == 'mark_done' else 'Skip'} by {who(o.users)}"
        + (" (**split-brain guard**)" if o.split_brain else "")
        + ": "
        + " / ".join(_one_line(x) for x in o.reasons)
        for o in report.overrides
    ] or ["- none"]
    lines += ["", "## Follow-ups", ""]
    lines += [f"- {f}" for f in report.follow_ups()] or ["- none"]
    lines += ["", "## Steps", ""]
    for s in report.steps:
        lines += [f"### {s.step_id} · {s.title or '(not in the runbook)'} — {s.outcome or 'not reached'}", ""]
        approved = "nobody needed (read-only)" if s.approved_by == ["bot"] else who(s.approved_by)
        lines.append(f"- approved by: {approved}; performed by: {who(s.performed_by)}"
                     + (f" on {', '.join(s.hosts)}" if s.hosts else ""))  # fmt: skip
        if s.on_it_by:
            lines.append(f"- “I'm on it”: {who(s.on_it_by)}")
        lines.append(f"- start: {s.started_at or '-'}; end: {s.ended_at or '-'}"
                     + (f"; attempts: {s.attempts}" if s.attempts > 1 else ""))  # fmt: skip
        lines.append(
            f"- waiting for approval: {duration_text(s.waited_on_people_s)}; "
            f"person working: {duration_text(s.person_working_s)}; bot executing: {duration_text(s.executing_s)}"
        )
        if s.result:
            lines.append(f"- result: {_one_line(s.result)}")
        if s.choice:
            lines.append(f"- choice: {s.choice}")
        if s.reason:
            lines.append(f"- reason: {_one_line(s.reason)}")
        if s.reminders or s.escalations:
            lines.append(f"- reminders: {s.reminders}; escalations: {s.escalations}")
        lines.append("")
    lines += [
        "## Timeline",
        "",
        "| # | time (UTC) | actor | event | step | detail |",
        "|---|---|---|---|---|---|",
    ]
    for e in report.events:
        step = e["step_id"] or ""
        if e["target"]:
            step += f" ({e['target']})"
        detail = _detail(e["detail"], e["event"], name_of=name_of)
        actor = name_of(e["actor"]) if e["actor"] not in ("bot", "-") else e["actor"]
        lines.append(f"| {e['seq']} | {e['at'][11:19]} | {actor} | {e['event']} | {step} | {detail} |")
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration_text(seconds: float) -> str:
    """A duration as the report writes it: "4.2 s", "37 s", "3 min 05 s"."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    return f"{s // 60} min {s % 60:02d} s"


def _operations(ops: list[dict[str, Any]]) -> str:
    parts = []
    for op in ops:
        status = f"exit {op['exit_status']}" if op.get("exit_status") is not None else op.get("error_kind", "failed")
        parts.append(f"{op.get('op')}@{op.get('host')} {status}")
    return "; ".join(parts)


def _execution(event: str, detail: dict[str, Any], name_of: NameOf = str) -> str | None:
    """Execution and step events read as sentences: what was about to be done, how it ended, what changed."""
    if event == "execution.started":
        who = ", ".join(name_of(str(u)) for u in detail.get("approved_by") or [])
        on = f" on {detail['host']}" if detail.get("host") else ""
        approved = f"approved by {who}" if who else "no approval needed (read-only)"
        return f"intent: {detail.get('action')}{on} ({detail.get('risk')}); {approved}"
    if event == "execution.finished":
        verdict = "ok" if detail.get("ok") else f"FAILED: {detail.get('error', '')}"
        digest = str(detail.get("output_sha256", ""))[:16]
        text = f"{verdict}; exit status {detail.get('exit_status')}; output sha256 {digest}…"
        if detail.get("duration_s") is not None:
            text += f"; {duration_text(float(detail['duration_s']))}"
        ops = detail.get("operations") or []
        return text + (f"; operations: {_operations(ops)}" if ops else "")
    if event.startswith("step.") and "from" in detail and "to" in detail:
        text = f"{str(detail['from']).replace('_', ' ')} → {str(detail['to']).replace('_', ' ')}"
        extra = {k: v for k, v in detail.items() if k not in ("from", "to", "fingerprint", "new_fingerprint")}
        result = extra.pop("result", None)
        if isinstance(result, dict) and result.get("summary"):
            extra["summary"] = result["summary"]
        return text + "".join(f"; {k}={v}" for k, v in extra.items() if v not in (None, "", []))
    return None


def _detail(detail: dict[str, Any], event: str = "", limit: int = 160, name_of: NameOf = str) -> str:
    text = _execution(event, detail, name_of)
    if text is None:
        keep = {k: v for k, v in detail.items() if k not in ("steps", "fingerprint", "new_fingerprint")}
        text = ", ".join(f"{k}={v}" for k, v in keep.items())
    elif event.startswith("execution."):
        limit = max(limit, 400)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
