"""The post-incident report of a run, built from its audit log alone (Markdown or JSON), its Slack summary and
the data of its timeline picture."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from bot.errors import UsageError
from bot.store import audit
from bot.store.db import Store, as_utc
from bot.store.models import AuditEvent, Run

# Events after which the bot waits on people, and the events that end such a wait.
_WAIT_STARTS = {"step.post", "step.void", "step.fail", "step.crash"}
_WAIT_ENDS = {"step.approve", "step.done", "step.mark_done", "step.skip", "step.retry", "step.auto_approve"}
# "I'm on it": from here until the step is done, a person is working (the Console), not waiting for approval.
_ON_IT = "step.on_it"
_WORK_ENDS = {"step.done", "step.mark_done", "step.skip", "step.void", "step.fail"}
_RUN_ENDS = {"step.succeed", "step.fail", "step.crash", "step.probe_in_place"}
_FINISHED = {
    "step.succeed": "succeeded",
    "step.done": "done",
    "step.fail": "failed",
    "step.skip": "skipped",
    "step.not_needed": "not needed",
    "step.mark_done": "marked done",
    "step.crash": "unknown",
    "step.probe_in_place": "succeeded (probe)",
}
# Milestones of the timeline: the step that promotes the Master is found by rule (see _milestones); the
# StorageServers are re-pointed at these Console steps.
_REPOINTED = {"failover": "F6", "failback": "B30"}
# What a recorded fact means, and what it leaves to do afterwards.
_FACTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "dns_redirected": {
        "done_with_dns_redirect": (
            "agents' DNS was redirected to the partner site",
            "revert the DNS redirect at failback",
        ),
        "done": ("agents' DNS was not redirected", None),
    },
    "mirroring": {
        "reenabled": ("mirroring was re-enabled", None),
        "left_disabled": (
            "mirroring was left disabled",
            "mirroring left disabled: re-enable it in the Console once the mirror data is known to be complete",
        ),
    },
}

NameOf = Callable[[str], str]


def _plain(user: str) -> str:
    return user


@dataclass
class Override:
    """A step people pushed past: Mark done (two people) or Skip, with their reasons."""

    step_id: str
    kind: str  # "mark_done" | "skip"
    users: list[str]
    reasons: list[str]
    split_brain: bool = False


@dataclass
class StepTiming:
    """One step of the run as the report tells it."""

    step_id: str
    title: str = ""
    waited_on_people_s: float = 0.0  # waiting for an approval (or for someone to take a Console step)
    person_working_s: float = 0.0  # after "I'm on it", until Done
    executing_s: float = 0.0
    outcome: str = ""
    approved_by: list[str] = field(default_factory=list)
    performed_by: list[str] = field(default_factory=list)
    on_it_by: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    started_at: str | None = None
    ended_at: str | None = None
    result: str = ""
    choice: str | None = None
    reason: str | None = None  # why it was skipped / not needed / marked done
    reminders: int = 0
    escalations: int = 0
    attempts: int = 1
    # (kind, start, end) in seconds since the run started; kind in waiting | working | executing
    segments: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass
class Report:
    run: dict[str, Any]
    events: list[dict[str, Any]]
    steps: list[StepTiming]
    chain_intact: bool
    chain_problems: list[str]
    facts: dict[str, Any] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    milestones: list[tuple[str, float]] = field(default_factory=list)  # (label, seconds since the start)
    chain_keyed: bool = True  # False: sealed without a key, so a database writer could have re-sealed it
    end_digest: str = ""  # the chain head when the run ended, as posted in its thread: "#seq digest"

    @property
    def waited_on_people_s(self) -> float:
        return sum(s.waited_on_people_s for s in self.steps)

    @property
    def person_working_s(self) -> float:
        return sum(s.person_working_s for s in self.steps)

    @property
    def executing_s(self) -> float:
        return sum(s.executing_s for s in self.steps)

    @property
    def duration_s(self) -> float | None:
        if not self.run["finished_at"]:
            return None
        end = datetime.fromisoformat(self.run["finished_at"])
        return (end - datetime.fromisoformat(self.run["created_at"])).total_seconds()

    @property
    def master_promoted_s(self) -> float | None:
        return next((at for label, at in self.milestones if label == "Master promoted"), None)

    def decisions(self) -> list[str]:
        """The choices recorded during the run, as sentences ("mirroring was left disabled (B34)")."""
        out = []
        for key, value in sorted(self.facts.items()):
            if key.startswith("on_it."):
                continue
            meaning = _FACTS.get(key, {}).get(str(value))
            step = next((s.step_id for s in self.steps if s.choice == value), None)
            where = f" ({step})" if step else ""
            out.append(f"{meaning[0]}{where}" if meaning else f"{key}: {value}{where}")
        return out

    def follow_ups(self) -> list[str]:
        """What is left to do after the run."""
        out = []
        for key, value in sorted(self.facts.items()):
            meaning = _FACTS.get(key, {}).get(str(value))
            if meaning and meaning[1]:
                out.append(meaning[1])
        for s in self.steps:
            if s.outcome == "skipped":
                out.append(f"{s.step_id} was skipped ({s.reason or 'no reason recorded'}): check it was not needed")
            if s.outcome in ("failed", "unknown"):
                out.append(f"{s.step_id} ended {s.outcome}: {s.result or 'see the report'}")
        if self.run["state"] == "aborted":
            current = next((s.step_id for s in reversed(self.steps) if s.outcome not in ("", "not needed")), None)
            out.append(
                "the run was aborted"
                + (f" after {current}" if current else "")
                + ": the platform is part-way; compare it with `failover-bot plan` before going on by hand"
            )
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "run": self.run,
                "chain_intact": self.chain_intact,
                "chain_problems": self.chain_problems,
                "chain_keyed": self.chain_keyed,
                "end_digest": self.end_digest,
                "waited_on_people_s": round(self.waited_on_people_s, 3),
                "person_working_s": round(self.person_working_s, 3),
                "executing_s": round(self.executing_s, 3),
                "duration_s": self.duration_s,
                "master_promoted_s": self.master_promoted_s,
                "facts": self.facts,
                "decisions": self.decisions(),
                "follow_ups": self.follow_ups(),
                "overrides": [asdict(o) for o in self.overrides],
                "milestones": [{"label": label, "at_s": at} for label, at in self.milestones],
                "steps": [asdict(s) for s in self.steps],
                "events": self.events,
            },
            indent=2,
            default=str,
        )

    def timeline(self) -> dict[str, Any]:
        """What the timeline picture shows (bot.timeline draws it)."""
        ends = [end for s in self.steps for _, _, end in s.segments] + [at for _, at in self.milestones]
        if self.duration_s is not None:
            ends.append(self.duration_s)
        r = self.run
        return {
            "title": f"{r['id']}: {r['direction']} of {r['site']} — {r['state']}",
            "end": max(ends, default=1.0),
            "steps": [
                {
                    "id": s.step_id,
                    "title": s.title,
                    "segments": [{"kind": k, "start": a, "end": b} for k, a, b in s.segments],
                }
                for s in self.steps
            ],
            "milestones": [{"label": label, "at": at} for label, at in self.milestones],
        }

    def to_markdown(self, name_of: NameOf = _plain) -> str:
        """The full report; ``name_of`` turns Slack user IDs into names (IDs when it cannot)."""
        r = self.run

        def who(users: list[str]) -> str:
            return ", ".join(name_of(u) if u != "bot" else "the bot" for u in users) or "-"

        duration = self.duration_s
        promoted = self.master_promoted_s
        lines = [
            f"# {r['id']}: {r['direction']} of {r['site']} (partner {r['partner']})",
            "",
            f"- platform: {r['platform']}; scope: {r['scope']}"
            + (f"; StorageServers: {r['storage']}" if r["storage"] else "")
            + ("; rebuilt site" if r["rebuilt"] else ""),
            f"- started by {who([r['initiator']])} at {r['created_at']}; state: **{r['state']}**"
            + (f" at {r['finished_at']}" if r["finished_at"] else "")
            + (f" — {r['abort_reason']}" if r.get("abort_reason") else ""),
            f"- duration: {_dur(duration) if duration is not None else 'still running'}"
            + (f"; Master promoted after {_dur(promoted)}" if promoted is not None else ""),
            f"- time waited on people: {_dur(self.waited_on_people_s)} waiting for an approval; "
            f"{_dur(self.person_working_s)} people working after “I'm on it”; "
            f"{_dur(self.executing_s)} the bot executing",
            "- audit chain: "
            + ("intact" if self.chain_intact else "**BROKEN** — " + "; ".join(self.chain_problems))
            + ("" if self.chain_keyed else " (chain not keyed: anyone who can write the database could re-seal it)"),
            *(
                [f"- chain head when the run ended: {self.end_digest} (compare with the thread)"]
                if self.end_digest
                else []
            ),
        ]
        split = [o for o in self.overrides if o.split_brain]
        for o in split:
            lines += [
                "",
                f"> **⚠️ SPLIT-BRAIN GUARD OVERRIDDEN at {o.step_id}** by {who(o.users)}: "
                + " / ".join(_one_line(x) for x in o.reasons),
            ]
        lines += ["", "## Decisions and recorded facts", ""]
        lines += [f"- {d}" for d in self.decisions()] or ["- none recorded"]
        lines += ["", "## Overrides", ""]
        lines += [
            f"- {o.step_id}: {'Mark done' if o.kind == 'mark_done' else 'Skip'} by {who(o.users)}"
            + (" (**split-brain guard**)" if o.split_brain else "")
            + ": "
            + " / ".join(_one_line(x) for x in o.reasons)
            for o in self.overrides
        ] or ["- none"]
        lines += ["", "## Follow-ups", ""]
        lines += [f"- {f}" for f in self.follow_ups()] or ["- none"]
        lines += ["", "## Steps", ""]
        for s in self.steps:
            lines += [f"### {s.step_id} · {s.title or '(not in the runbook)'} — {s.outcome or 'not reached'}", ""]
            approved = "nobody needed (read-only)" if s.approved_by == ["bot"] else who(s.approved_by)
            lines.append(f"- approved by: {approved}; performed by: {who(s.performed_by)}"
                         + (f" on {', '.join(s.hosts)}" if s.hosts else ""))  # fmt: skip
            if s.on_it_by:
                lines.append(f"- “I'm on it”: {who(s.on_it_by)}")
            lines.append(f"- start: {s.started_at or '-'}; end: {s.ended_at or '-'}"
                         + (f"; attempts: {s.attempts}" if s.attempts > 1 else ""))  # fmt: skip
            lines.append(
                f"- waiting for approval: {_dur(s.waited_on_people_s)}; person working: {_dur(s.person_working_s)};"
                f" bot executing: {_dur(s.executing_s)}"
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
        for e in self.events:
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


def _execution(event: str, detail: dict[str, Any], name_of: NameOf = _plain) -> str | None:
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


def _detail(detail: dict[str, Any], event: str = "", limit: int = 160, name_of: NameOf = _plain) -> str:
    text = _execution(event, detail, name_of)
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
        created = as_utc(run.created_at)
        run_dict: dict[str, Any] = {
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
            "created_at": created.isoformat(timespec="seconds"),
            "finished_at": as_utc(run.finished_at).isoformat(timespec="seconds") if run.finished_at else None,
            "abort_reason": run.abort_reason,
        }
        try:
            facts = dict(json.loads(run.facts or "{}"))
        except ValueError:
            facts = {}
    specs = _specs(run_dict["direction"])
    steps = _timings(events, created, specs)
    return Report(
        run=run_dict,
        events=[_event_dict(e) for e in events],
        steps=steps,
        chain_intact=check.intact,
        chain_problems=list(check.problems),
        # only the decisions the runbook records (its `records:` keys); the run's other facts are the bot's
        # working values (ServerGuids read at B3, ...) and stay out of reports
        facts={k: audit.scrub(v) for k, v in facts.items() if k in {sp.records for sp in specs.values() if sp.records}},
        overrides=_overrides(events, specs),
        milestones=_milestones(run_dict["direction"], steps, specs),
        chain_keyed=check.keyed,
        end_digest=next((f"#{e.seq} {e.hash[:16]}" for e in events if e.event in ("run.completed", "run.aborted")), ""),
    )


def _specs(direction: str) -> dict[str, Any]:
    from bot.runs.runbook import RunbookError, load_runbook

    try:
        return {spec.id: spec for spec in load_runbook(direction)}  # type: ignore[arg-type]
    except (RunbookError, ValueError):
        return {}


def _event_dict(e: AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": as_utc(e.at).isoformat(timespec="milliseconds"),
        "actor": e.actor,
        "event": e.event,
        "step_id": e.step_id,
        "target": e.target,
        "detail": _loads(e.detail),
    }


def _loads(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {"unreadable": raw}
    return value if isinstance(value, dict) else {"value": value}


class _Clock:
    """Open intervals of one step, closed into segments (seconds since the run started)."""

    def __init__(self, t: StepTiming, start: datetime) -> None:
        self.t = t
        self.start = start
        self.open: dict[str, datetime] = {}

    def begin(self, kind: str, at: datetime) -> None:
        self.open.setdefault(kind, at)

    def end(self, kind: str, at: datetime) -> None:
        since = self.open.pop(kind, None)
        if since is None:
            return
        seconds = max((at - since).total_seconds(), 0.0)
        if kind == "waiting":
            self.t.waited_on_people_s += seconds
        elif kind == "working":
            self.t.person_working_s += seconds
        else:
            self.t.executing_s += seconds
        self.t.segments.append((kind, (since - self.start).total_seconds(), (at - self.start).total_seconds()))


def _timings(events: list[AuditEvent], run_start: datetime, specs: dict[str, Any]) -> list[StepTiming]:
    timings: dict[str, StepTiming] = {}
    clocks: dict[str, _Clock] = {}
    for e in events:
        if not e.step_id:
            continue
        sid = e.step_id
        spec = specs.get(sid)
        t = timings.setdefault(sid, StepTiming(sid, title=spec.title if spec else ""))
        clock = clocks.setdefault(sid, _Clock(t, run_start))
        at = as_utc(e.at)
        stamp = at.isoformat(timespec="seconds")
        detail = _loads(e.detail)
        if e.event == "execution.started":
            if detail.get("host") and detail["host"] not in t.hosts:
                t.hosts.append(str(detail["host"]))
            continue
        if e.event in ("reminder", "escalation"):
            t.reminders += e.event == "reminder"
            t.escalations += e.event == "escalation"
            continue
        if e.event == "approval" and e.actor not in t.approved_by:
            t.approved_by.append(e.actor)
        if e.target:  # a fan-out target: its execution counts in the step's bar from its claim to its end
            if e.event == "step.claim":
                clock.begin("executing", at)
            continue
        if e.event == "step.post":
            t.started_at = t.started_at or stamp
        if e.event == "step.retry":
            t.attempts += 1
        if e.event == _ON_IT:
            clock.end("waiting", at)
            clock.begin("working", at)
            if e.actor not in t.on_it_by:
                t.on_it_by.append(e.actor)
        if e.event in _WAIT_ENDS:
            clock.end("waiting", at)
        if e.event in _WORK_ENDS:
            clock.end("working", at)
        if e.event in _WAIT_STARTS:
            clock.begin("waiting", at)
        if e.event == "step.claim":
            clock.begin("executing", at)
        if e.event in _RUN_ENDS:
            clock.end("executing", at)
        if e.event == "step.auto_approve":
            t.approved_by = ["bot"]
        if e.event == "step.succeed" or e.event == "step.probe_in_place":
            t.performed_by = ["bot"]
            result = detail.get("result")
            t.result = str(result.get("summary", "")) if isinstance(result, dict) else str(detail.get("summary", ""))
        if e.event == "step.fail":
            t.performed_by = ["bot"]
            t.result = str(detail.get("error") or detail.get("reason") or "")
        if e.event in ("step.done", "step.skip") and e.actor not in t.performed_by:
            t.performed_by = [e.actor]
        if e.event == "step.done" and detail.get("choice"):
            t.choice = str(detail["choice"])
        if e.event == "mark_done.vote":
            t.performed_by = [u for u in t.performed_by if u != "bot"]
            if e.actor not in t.performed_by:
                t.performed_by.append(e.actor)
        if e.event in ("step.skip", "step.not_needed", "step.mark_done") and detail.get("reason"):
            t.reason = str(detail["reason"])
        outcome = _FINISHED.get(e.event)
        if outcome:
            t.outcome = outcome
            if e.event != "step.fail":
                t.ended_at = stamp
                for kind in ("waiting", "working"):
                    clock.end(kind, at)
            else:
                t.ended_at = stamp
    return list(timings.values())


def _overrides(events: list[AuditEvent], specs: dict[str, Any]) -> list[Override]:
    """Mark done and Skip, with every voter's reason; a split-brain guard pushed past is flagged."""
    out: list[Override] = []
    votes: dict[str, list[tuple[str, str]]] = {}
    failed_split: set[str] = set()
    for e in events:
        detail = _loads(e.detail)
        sid = e.step_id or ""
        if e.event == "step.fail" and "split-brain" in json.dumps(detail).lower():
            failed_split.add(sid)
        if e.event == "mark_done.vote":
            votes.setdefault(sid, []).append((e.actor, str(detail.get("reason", ""))))
        if e.event == "step.mark_done" and not e.target:
            cast = votes.pop(sid, []) or [(e.actor, str(detail.get("reason", "")))]
            spec = specs.get(sid)
            guard = bool(spec is not None and spec.params.get("split_brain_guard"))
            out.append(
                Override(
                    sid,
                    "mark_done",
                    [u for u, _ in cast],
                    [r for _, r in cast],
                    split_brain=sid in failed_split or (guard and sid in failed_split),
                )
            )
        if e.event == "step.skip" and not e.target:
            out.append(Override(sid, "skip", [e.actor], [str(detail.get("reason", ""))]))
    return out


def _milestones(direction: str, steps: list[StepTiming], specs: dict[str, Any]) -> list[tuple[str, float]]:
    """Master promoted: the end of the first AccountServer start after IsSlave was set False on the same
    server (F3 at a failover, B19 at a failback); StorageServers re-pointed: the end of that Console step."""
    done = {s.step_id: s for s in steps if s.outcome not in ("", "failed", "unknown", "skipped", "not needed")}
    out: list[tuple[str, float]] = []
    demoted_target: set[str] = set()
    for spec in specs.values():
        if spec.action == "settings.set_is_slave" and spec.params.get("value") is False:
            demoted_target.add(spec.target)
        elif (
            spec.action == "service.start"
            and spec.params.get("service") == "account_server"
            and spec.target in demoted_target
        ):
            if spec.id in done and done[spec.id].segments:
                out.append(("Master promoted", _end_of(done[spec.id])))
            break
    repointed = _REPOINTED.get(direction)
    if repointed in done:
        out.append(("StorageServers re-pointed", _end_of(done[repointed])))
    return out


def _end_of(t: StepTiming) -> float:
    return max(end for _, _, end in t.segments)
