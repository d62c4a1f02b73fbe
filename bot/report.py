"""The post-incident report of a run, built from its audit log alone (Markdown or JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.errors import UsageError
from bot.store import audit
from bot.store.db import Store, as_utc
from bot.store.models import AuditEvent, Run

# Events after which the bot waits on people, and the events that end such a wait.
_WAIT_STARTS = {"step.post", "step.void", "step.fail", "step.crash"}
_WAIT_ENDS = {"step.approve", "step.done", "step.mark_done", "step.skip", "step.retry", "step.auto_approve"}


@dataclass
class StepTiming:
    step_id: str
    waited_on_people_s: float = 0.0
    executing_s: float = 0.0
    outcome: str = ""


@dataclass
class Report:
    run: dict[str, Any]
    events: list[dict[str, Any]]
    steps: list[StepTiming]
    chain_intact: bool
    chain_problems: list[str]

    @property
    def waited_on_people_s(self) -> float:
        return sum(s.waited_on_people_s for s in self.steps)

    def to_json(self) -> str:
        return json.dumps(
            {
                "run": self.run,
                "chain_intact": self.chain_intact,
                "chain_problems": self.chain_problems,
                "waited_on_people_s": round(self.waited_on_people_s, 3),
                "steps": [s.__dict__ for s in self.steps],
                "events": self.events,
            },
            indent=2,
            default=str,
        )

    def to_markdown(self) -> str:
        r = self.run
        lines = [
            f"# {r['id']}: {r['direction']} of {r['site']} (partner {r['partner']})",
            "",
            f"- platform: {r['platform']}; scope: {r['scope']}"
            + (f"; StorageServers: {r['storage']}" if r["storage"] else "")
            + ("; rebuilt site" if r["rebuilt"] else ""),
            f"- started by {r['initiator']} at {r['created_at']}; state: **{r['state']}**"
            + (f" at {r['finished_at']}" if r["finished_at"] else ""),
            f"- time waited on people: {_dur(self.waited_on_people_s)}",
            "- audit chain: " + ("intact" if self.chain_intact else "**BROKEN** — " + "; ".join(self.chain_problems)),
            "",
            "## Steps",
            "",
            "| step | outcome | waited on people | executing |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {s.step_id} | {s.outcome or '-'} | {_dur(s.waited_on_people_s)} | {_dur(s.executing_s)} |"
            for s in self.steps
        ]
        lines += [
            "",
            "## Timeline",
            "",
            "| # | time (UTC) | actor | event | step | detail |",
            "|---|---|---|---|---|---|",
        ]
        for e in self.events:
            step = e["step_id"] or ""
            if e["target"]:
                step += f" ({e['target']})"
            detail = _detail(e["detail"], e["event"])
            lines.append(f"| {e['seq']} | {e['at'][11:19]} | {e['actor']} | {e['event']} | {step} | {detail} |")
        return "\n".join(lines) + "\n"


def _dur(seconds: float) -> str:
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


def _execution(event: str, detail: dict[str, Any]) -> str | None:
    """Execution and step events read as sentences: what was about to be done, how it ended, what changed."""
    if event == "execution.started":
        who = ", ".join(detail.get("approved_by") or [])
        on = f" on {detail['host']}" if detail.get("host") else ""
        approved = f"approved by {who}" if who else "no approval needed (read-only)"
        return f"intent: {detail.get('action')}{on} ({detail.get('risk')}); {approved}"
    if event == "execution.finished":
        verdict = "ok" if detail.get("ok") else f"FAILED: {detail.get('error', '')}"
        digest = str(detail.get("output_sha256", ""))[:16]
        text = f"{verdict}; exit status {detail.get('exit_status')}; output sha256 {digest}…"
        if detail.get("duration_s") is not None:
            text += f"; {_dur(float(detail['duration_s']))}"
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


def _detail(detail: dict[str, Any], event: str = "", limit: int = 160) -> str:
    text = _execution(event, detail)
    if text is None:
        keep = {k: v for k, v in detail.items() if k not in ("steps", "fingerprint", "new_fingerprint")}
        text = ", ".join(f"{k}={v}" for k, v in keep.items())
    elif event.startswith("execution."):
        limit = max(limit, 400)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_report(store: Store, run_id: str) -> Report:
    """The run's report; UsageError when there is no such run."""
    with store.read_session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r}")
        events = audit.events_of(s, run_id)
        check = audit.check_run(s, run_id)
        run_dict = {
            "id": run.id,
            "platform": run.platform,
            "direction": run.direction,
            "site": run.site,
            "partner": run.partner,
            "scope": run.scope,
            "storage": run.storage,
            "rebuilt": run.rebuilt,
            "state": run.state,
            "initiator": run.initiator,
            "created_at": as_utc(run.created_at).isoformat(timespec="seconds"),
            "finished_at": as_utc(run.finished_at).isoformat(timespec="seconds") if run.finished_at else None,
            "abort_reason": run.abort_reason,
        }
    return Report(
        run=run_dict,
        events=[_event_dict(e) for e in events],
        steps=_timings(events),
        chain_intact=check.intact,
        chain_problems=list(check.problems),
    )


def _event_dict(e: AuditEvent) -> dict[str, Any]:
    try:
        detail = json.loads(e.detail)
    except ValueError:
        detail = {"unreadable": e.detail}
    return {
        "seq": e.seq,
        "at": as_utc(e.at).isoformat(timespec="milliseconds"),
        "actor": e.actor,
        "event": e.event,
        "step_id": e.step_id,
        "target": e.target,
        "detail": detail,
    }


def _timings(events: list[AuditEvent]) -> list[StepTiming]:
    timings: dict[str, StepTiming] = {}
    waiting_since: dict[str, datetime] = {}
    running_since: dict[str, datetime] = {}
    for e in events:
        if not e.step_id or e.target:
            continue
        t = timings.setdefault(e.step_id, StepTiming(e.step_id))
        at = as_utc(e.at)
        if e.event in _WAIT_ENDS and e.step_id in waiting_since:
            t.waited_on_people_s += (at - waiting_since.pop(e.step_id)).total_seconds()
        if e.event in _WAIT_STARTS:
            waiting_since[e.step_id] = at
        if e.event == "step.claim":
            running_since[e.step_id] = at
        if e.event in ("step.succeed", "step.fail", "step.crash") and e.step_id in running_since:
            t.executing_s += (at - running_since.pop(e.step_id)).total_seconds()
        outcome = {
            "step.succeed": "succeeded",
            "step.done": "done",
            "step.fail": "failed",
            "step.skip": "skipped",
            "step.not_needed": "not needed",
            "step.mark_done": "marked done",
            "step.crash": "unknown",
            "step.probe_in_place": "succeeded (probe)",
        }.get(e.event)
        if outcome:
            t.outcome = outcome
    return list(timings.values())
