"""What readiness reports: a finished round, its open problems, and the texts posted or printed about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.blocks.kit import escape, hhmm
from bot.readiness.evaluate import Finding

MAX_LINES = 25  # problems listed in one message; the rest are counted (`/failover readiness` shows all)


@dataclass(frozen=True)
class Problem:
    """An open problem as stored: what, where, since when."""

    host: str
    check: str
    detail: str
    since: datetime


@dataclass
class RoundReport:
    """A finished round: its results, and what it announced."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    runner: str
    findings: list[Finding]
    problems: list[Problem] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)  # the texts posted

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.failed]

    def to_dict(self) -> dict[str, object]:
        return {
            "round": self.id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "runner": self.runner,
            "results": [
                {"host": f.host, "check": f.check, "outcome": f.outcome, "detail": f.detail} for f in self.findings
            ],
            "open_problems": [
                {"host": p.host, "check": p.check, "detail": p.detail, "since": p.since.isoformat()}
                for p in self.problems
            ],
        }


def _line(f: Finding, since: datetime) -> str:
    host = "" if f.host == "platform" else f"*{escape(f.host)}* "
    text = f"• {host}{escape(f.check)}: {escape(f.detail)} since {hhmm(since)}"
    return text + (f" — {escape(f.todo)}" if f.todo else "")


def round_text(
    new: list[tuple[Finding, datetime]],
    again: list[tuple[Finding, datetime]],
    recovered: list[tuple[Finding, Problem]],
    now: datetime,
    repeat_hours: float,
) -> str:
    """One message for one round: new problems, problems still open after ``repeat_hours``, recoveries."""
    lines: list[str] = []
    if new:
        lines.append(f"⚠️ *Readiness: {len(new)} new problem{'s' if len(new) != 1 else ''}*")
        lines += [_line(f, since) for f, since in new[:MAX_LINES]]
    if again:
        lines.append(f"⚠️ *Readiness: still open* (announced again every {repeat_hours:g} h)")
        lines += [_line(f, since) for f, since in again[:MAX_LINES]]
    if recovered:
        lines.append(f"✅ *Readiness: recovered* ({len(recovered)})")
        for f, p in recovered[:MAX_LINES]:
            host = "" if f.host == "platform" else f"*{escape(f.host)}* "
            lines.append(f"• {host}{escape(f.check)}: {escape(f.detail)} (a problem since {hhmm(p.since)})")
    hidden = max(0, len(new) - MAX_LINES) + max(0, len(again) - MAX_LINES) + max(0, len(recovered) - MAX_LINES)
    if hidden:
        lines.append(f"…and {hidden} more: `/failover readiness` lists them all")
    return "\n".join(lines)


def split_brain_text(f: Finding, since: datetime) -> str:
    return (
        f"<!here> 🚨 *Split brain*: {escape(f.detail)} (seen {hhmm(since)}). "
        f"Two Masters accept backups and diverge. *What to do:* {escape(f.todo)}."
    )


def results_text(report: RoundReport | None) -> str:
    """The latest results as ``/failover readiness`` and ``failover-bot readiness`` show them."""
    if report is None:
        return "No readiness round has run yet (`failover-bot readiness --now` runs one)."
    lines = [
        f"Readiness round {report.id} at {report.started_at:%Y-%m-%d %H:%M:%S} UTC "
        f"({len(report.failed)} failed of {len(report.findings)})"
    ]
    width_h = max([4, *(len(f.host) for f in report.findings)])
    width_c = max([5, *(len(f.check) for f in report.findings)])
    lines.append(f"{'host':<{width_h}}  {'check':<{width_c}}  {'result':<8}  detail")
    for f in report.findings:
        lines.append(f"{f.host:<{width_h}}  {f.check:<{width_c}}  {f.outcome.upper():<8}  {f.detail}")
    if report.problems:
        lines.append("")
        lines.append("Open problems:")
        lines += [f"  {p.host} {p.check}: {p.detail} (since {p.since:%Y-%m-%d %H:%M} UTC)" for p in report.problems]
    else:
        lines.append("")
        lines.append("No open problems.")
    return "\n".join(lines)
