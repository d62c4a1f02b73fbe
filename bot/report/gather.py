"""Gathering a run's report from its audit log alone: the run, its events, each step's timings, overrides and
milestones (bot.report.model holds the result; bot.render.report writes it out)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.errors import UsageError
from bot.report.model import Override, Report, StepTiming
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
