"""The run service: the only code that changes run state, always by compare-and-set in the database."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.config import Config
from bot.errors import PermissionDenied, StateConflict, UsageError
from bot.runs import policy
from bot.runs.machine import (
    FINISHED_STEP_STATES,
    RunEvent,
    RunState,
    StepEvent,
    StepState,
    TransitionError,
    next_run_state,
    next_step_state,
)
from bot.runs.runbook import Plan, ResolvedStep, RunOptions, parse_options, resolve
from bot.store import audit
from bot.store.db import Store, utcnow
from bot.store.models import ActiveRun, Approval, Run, StepRun

log = logging.getLogger(__name__)

PREFIX = {"failover": "FO", "failback": "FB"}
WHOLE = ""  # target key of a step's own row (fan-out targets have their host name)


@dataclass(frozen=True)
class ApprovalOutcome:
    step_id: str
    have: int
    needed: int
    approved: bool  # this approval completed the step's approvals
    already: bool = False  # the person had already approved: counted once


@dataclass
class StepView:
    """A step as the presentation layer needs it: plan data plus its stored state."""

    step: ResolvedStep
    state: str
    targets: dict[str, StepRun]  # fan-out: host name -> its row
    row: StepRun
    approvers: list[str] = field(default_factory=list)
    mark_done_votes: list[str] = field(default_factory=list)
    needed: int = 0


@dataclass
class RunView:
    run: Run
    plan: Plan
    steps: list[StepView]

    @property
    def current(self) -> StepView | None:
        for sv in self.steps:
            if sv.state not in FINISHED_STEP_STATES:
                return sv
        return None

    @property
    def done_count(self) -> int:
        return sum(1 for sv in self.steps if sv.state in FINISHED_STEP_STATES)

    def step(self, step_id: str) -> StepView:
        for sv in self.steps:
            if sv.step.id == step_id:
                return sv
        raise StateConflict(f"run {self.run.id} has no step {step_id}")


def options_of(run: Run) -> RunOptions:
    storage = tuple(s for s in run.storage.split(",") if s)
    return RunOptions(scope=run.scope, storage=storage, rebuilt=run.rebuilt)  # type: ignore[arg-type]


class RunService:
    """Opens runs, records approvals and moves steps through the state machine.

    Every state change is ``UPDATE ... WHERE state = :expected``; the loser of a race gets
    StateConflict and changes nothing. Listeners call this; the worker calls ``claim``/``finish``.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        group_members: policy.GroupMembers | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self.group_members = group_members
        self.clock = clock
        self._plans: dict[str, Plan] = {}

    # ------------------------------------------------------------------ reading

    def plan_of(self, run: Run) -> Plan:
        plan = self._plans.get(run.id)
        if plan is None:
            plan = resolve(self.config, run.direction, run.site, options_of(run))  # type: ignore[arg-type]
            self._plans[run.id] = plan
        return plan

    def get_run(self, run_id: str) -> Run:
        with self.store.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise UsageError(f"no run {run_id!r}")
            return run

    def active_run(self) -> Run | None:
        with self.store.session() as s:
            active = s.get(ActiveRun, self.config.platform)
            return s.get(Run, active.run_id) if active else None

    def last_run(self) -> Run | None:
        with self.store.session() as s:
            return s.scalars(
                sa.select(Run).where(Run.platform == self.config.platform).order_by(Run.created_at.desc()).limit(1)
            ).first()

    def view(self, run_id: str) -> RunView:
        with self.store.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise UsageError(f"no run {run_id!r}")
            rows = list(s.scalars(sa.select(StepRun).where(StepRun.run_id == run_id)))
            approvals = list(s.scalars(sa.select(Approval).where(Approval.run_id == run_id)))
        plan = self.plan_of(run)
        by_step: dict[str, dict[str, StepRun]] = {}
        for r in rows:
            by_step.setdefault(r.step_id, {})[r.target] = r
        views = []
        for step in plan.steps:
            group = by_step.get(step.id, {})
            whole = group.pop(WHOLE)
            rnd = whole.attempt
            ok = [a for a in approvals if a.step_id == step.id and a.kind == "approve" and a.round == rnd]
            md = [a for a in approvals if a.step_id == step.id and a.kind == "mark_done" and a.round == rnd]
            views.append(
                StepView(
                    step=step,
                    state=whole.state,
                    targets=dict(sorted(group.items(), key=lambda kv: kv[1].position)),
                    row=whole,
                    approvers=[a.user_id for a in sorted(ok, key=lambda a: a.id)],
                    mark_done_votes=[a.user_id for a in sorted(md, key=lambda a: a.id)],
                    needed=self.needed(step),
                )
            )
        return RunView(run=run, plan=plan, steps=views)

    def facts(self, run_id: str) -> dict[str, Any]:
        return dict(json.loads(self.get_run(run_id).facts or "{}"))

    def needed(self, step: ResolvedStep) -> int:
        return policy.approvals_needed(step.kind, step.risk, self.config.slack, step.action)

    # ------------------------------------------------------------------ opening runs

    def default_failback_options(self, site: str) -> RunOptions | None:
        """Scope and StorageServers of the last completed failover of ``site``."""
        with self.store.session() as s:
            run = s.scalars(
                sa.select(Run)
                .where(
                    Run.platform == self.config.platform,
                    Run.direction == "failover",
                    Run.site == site,
                    Run.state == RunState.COMPLETED,
                )
                .order_by(Run.finished_at.desc())
                .limit(1)
            ).first()
        return options_of(run) if run else None

    def last_completed_failover(self, site: str) -> Run | None:
        with self.store.session() as s:
            return s.scalars(
                sa.select(Run)
                .where(
                    Run.platform == self.config.platform,
                    Run.direction == "failover",
                    Run.site == site,
                    Run.state == RunState.COMPLETED,
                )
                .order_by(Run.finished_at.desc())
                .limit(1)
            ).first()

    def resolve_options(self, direction: str, site: str, args: Sequence[str]) -> RunOptions:
        options = parse_options(direction, list(args))  # type: ignore[arg-type]
        if direction == "failback" and not any(a.startswith(("scope=", "storage=")) for a in args):
            previous = self.default_failback_options(site)
            if previous is not None:
                options = RunOptions(scope=previous.scope, storage=previous.storage, rebuilt=options.rebuilt)
        return options

    def open_run(self, direction: str, site: str, args: Sequence[str], user: str, channel: str = "") -> Run:
        """Start a failover or failback; StateConflict when the platform already has an active run."""
        if direction not in PREFIX:
            raise UsageError(f"unknown direction {direction!r}")
        self.config.site(site)
        options = self.resolve_options(direction, site, args)
        plan = resolve(self.config, direction, site, options)  # type: ignore[arg-type]
        now = self.clock()
        for _attempt in range(10):
            try:
                with self.store.session() as s:
                    active = s.get(ActiveRun, self.config.platform)
                    if active is not None:
                        raise StateConflict(
                            f"run {active.run_id} is still active on {self.config.platform}; "
                            f"finish it or `/failover abort` it first"
                        )
                    number = (s.scalar(sa.select(sa.func.max(Run.number)).where(Run.direction == direction)) or 0) + 1
                    run = Run(
                        id=f"{PREFIX[direction]}-{number}",
                        number=number,
                        platform=self.config.platform,
                        direction=direction,
                        site=site,
                        partner=plan.partner,
                        scope=options.scope,
                        storage=",".join(options.storage),
                        rebuilt=options.rebuilt,
                        state=RunState.ACTIVE,
                        initiator=user,
                        channel=channel,
                        facts="{}",
                        created_at=now,
                    )
                    s.add(run)
                    s.flush()
                    s.add(ActiveRun(platform=self.config.platform, run_id=run.id))
                    for step in plan.steps:
                        s.add(_row(run.id, step.id, WHOLE, step.index, now))
                        if step.fanout and step.kind == "host":
                            for i, t in enumerate(step.targets):
                                s.add(_row(run.id, step.id, t.key, step.index * 1000 + i, now))
                    audit.append(
                        s,
                        run.id,
                        user,
                        "run.started",
                        detail={
                            "direction": direction,
                            "site": site,
                            "partner": plan.partner,
                            "scope": options.scope,
                            "storage": list(options.storage),
                            "rebuilt": options.rebuilt,
                            "channel": channel,
                            "steps": [st.id for st in plan.steps],
                        },
                    )
                self._plans[run.id] = plan
                return run
            except IntegrityError:
                continue  # another process took the number or the platform lock; look again
        raise StateConflict("could not open a run (another run was being opened at the same time)")

    def set_thread(self, run_id: str, channel: str, thread_ts: str) -> None:
        with self.store.session() as s:
            s.execute(
                sa.update(Run)
                .where(Run.id == run_id, Run.thread_ts.is_(None))
                .values(channel=channel, thread_ts=thread_ts)
            )

    def claim_message(self, run_id: str, step_id: str) -> bool:
        """Only one process posts a step's message: whoever moves message_ts from empty to 'posting'."""
        with self.store.session() as s:
            return (
                s.execute(
                    sa.update(StepRun)
                    .where(
                        StepRun.run_id == run_id,
                        StepRun.step_id == step_id,
                        StepRun.target == WHOLE,
                        StepRun.message_ts.is_(None),
                    )
                    .values(message_ts="posting")
                ).rowcount
                == 1
            )

    def set_message_ts(self, run_id: str, step_id: str, ts: str) -> None:
        with self.store.session() as s:
            s.execute(
                sa.update(StepRun)
                .where(StepRun.run_id == run_id, StepRun.step_id == step_id, StepRun.target == WHOLE)
                .values(message_ts=ts)
            )

    def record_fact(self, run_id: str, key: str, value: Any) -> None:
        for _ in range(20):
            with self.store.session() as s:
                run = s.get(Run, run_id)
                if run is None:
                    return
                old = run.facts
                facts = json.loads(old or "{}")
                facts[key] = value
                moved = s.execute(
                    sa.update(Run)
                    .where(Run.id == run_id, Run.facts == old)
                    .values(facts=json.dumps(facts, sort_keys=True))
                ).rowcount
            if moved == 1:
                return
        raise StateConflict("could not record a fact of the run (too many concurrent writers)")

    # ------------------------------------------------------------------ state changes

    def _step_row(self, s: Session, run_id: str, step_id: str, target: str = WHOLE) -> StepRun:
        row = s.scalars(
            sa.select(StepRun).where(StepRun.run_id == run_id, StepRun.step_id == step_id, StepRun.target == target)
        ).first()
        if row is None:
            raise StateConflict(f"run {run_id} has no step {step_id}" + (f" target {target}" if target else ""))
        return row

    def transition(
        self,
        run_id: str,
        step_id: str,
        event: StepEvent,
        actor: str,
        *,
        target: str = WHOLE,
        detail: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> StepState:
        """Apply ``event`` by compare-and-set; StateConflict when the step is not in a state that allows it."""
        if session is None:
            with self.store.session() as s:
                return self.transition(
                    run_id, step_id, event, actor, target=target, detail=detail, values=values, session=s
                )
        s = session
        row = self._step_row(s, run_id, step_id, target)
        old = row.state
        try:
            new = next_step_state(old, event)
        except TransitionError as exc:
            raise StateConflict(f"Step {step_id} is {row.state.replace('_', ' ')}: nothing to {event}.") from exc
        now = self.clock()
        changes: dict[str, Any] = {"state": new, "updated_at": now, **(values or {})}
        if new == StepState.RUNNING:
            changes["started_at"] = now
        if new in FINISHED_STEP_STATES or new == StepState.FAILED:
            changes["finished_at"] = now
        moved = s.execute(
            sa.update(StepRun).where(StepRun.id == row.id, StepRun.state == old).values(**changes)
        ).rowcount
        if moved != 1:
            raise StateConflict(f"Step {step_id} changed meanwhile; nothing done.")
        audit.append(
            s,
            run_id,
            actor,
            f"step.{event}",
            step_id=step_id,
            target=target or None,
            detail={"from": old, "to": str(new), **(detail or {})},
        )
        return new

    def _check_run_active(self, s: Session, run_id: str) -> Run:
        run = s.get(Run, run_id)
        if run is None:
            raise StateConflict(f"There is no run {run_id}.")
        if run.state != RunState.ACTIVE:
            raise StateConflict(f"Run {run_id} is {run.state}; its buttons no longer do anything.")
        return run

    def _check_current(self, run_id: str, step_id: str) -> RunView:
        view = self.view(run_id)
        if view.run.state != RunState.ACTIVE:
            raise StateConflict(f"Run {run_id} is {view.run.state}; its buttons no longer do anything.")
        current = view.current
        if current is None or current.step.id != step_id:
            sv = view.step(step_id)
            now = current.step.id if current else "none"
            raise StateConflict(
                f"Step {step_id} is {sv.state.replace('_', ' ')} and no longer current "
                f"(current step: {now}); nothing changed."
            )
        return view

    def refuse(self, run_id: str | None, user: str, action: str, reason: str, step_id: str | None = None) -> None:
        """Audit a refused request (every refusal is in the log)."""
        audit.record(
            self.store, run_id or "-", user, "refused", step_id=step_id, detail={"action": action, "reason": reason}
        )

    @staticmethod
    def _insert_vote(s: Session, vote: Approval) -> bool:
        """Insert one person's vote; False when the same person's vote is already there (counts once)."""
        try:
            with s.begin_nested():
                s.add(vote)
                s.flush()
        except IntegrityError:
            return False
        return True

    def audit_reveal(self, run_id: str, step_id: str, user: str, hosts: list[str]) -> None:
        """Record that ``user`` was shown the one-time passwords of ``hosts`` (never the values)."""
        audit.record(self.store, run_id, user, "otp.revealed", step_id=step_id, detail={"hosts": hosts})

    def approve(self, run_id: str, step_id: str, user: str, *, seen_fingerprint: str | None = None) -> ApprovalOutcome:
        """Record ``user``'s approval of the current step; approve it when enough distinct people have."""
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        if sv.step.risk == "destructive":
            policy.check_destructive_approver(self.config.slack, user, view.run.initiator)
        if sv.state != StepState.AWAITING_APPROVAL:
            raise StateConflict(f"Step {step_id} is {sv.state.replace('_', ' ')}; it does not need approval now.")
        if seen_fingerprint and sv.row.fingerprint and seen_fingerprint != sv.row.fingerprint:
            raise StateConflict(
                f"Step {step_id} changed since you saw it; look at the updated message and approve again."
            )
        needed = max(sv.needed, 1)
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            row = self._step_row(s, run_id, step_id)
            existing: object = s.scalars(
                sa.select(Approval).where(
                    Approval.run_id == run_id,
                    Approval.step_id == step_id,
                    Approval.kind == "approve",
                    Approval.round == row.attempt,
                    Approval.user_id == user,
                )
            ).first()
            if existing is None and not self._insert_vote(
                s,
                Approval(
                    run_id=run_id,
                    step_id=step_id,
                    kind="approve",
                    user_id=user,
                    fingerprint=row.fingerprint or "",
                    round=row.attempt,
                    created_at=self.clock(),
                ),
            ):
                existing = True  # the same person's concurrent click got there first
            if existing is None:
                audit.append(
                    s,
                    run_id,
                    user,
                    "approval",
                    step_id=step_id,
                    detail={"fingerprint": row.fingerprint, "round": row.attempt},
                )
            have = (
                s.scalar(
                    sa.select(sa.func.count(sa.distinct(Approval.user_id))).where(
                        Approval.run_id == run_id,
                        Approval.step_id == step_id,
                        Approval.kind == "approve",
                        Approval.round == row.attempt,
                    )
                )
                or 0
            )
        approved = False
        if have >= needed and existing is None:
            try:
                self.transition(run_id, step_id, StepEvent.APPROVE, user, detail={"approvals": have})
                approved = True
            except StateConflict:
                approved = False  # a concurrent approval completed it first
        return ApprovalOutcome(step_id, have, needed, approved, already=existing is not None)

    def done(self, run_id: str, step_id: str, user: str, *, choice: str | None = None) -> StepState:
        """A person performed a manual, wait or check step (destructive ones need their approvals first)."""
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        if sv.step.kind in ("host", "sql"):
            raise StateConflict(f"Step {step_id} is run by the bot; use Approve.")
        if sv.step.risk == "destructive" and sv.state != StepState.APPROVED:
            raise StateConflict(
                f"Step {step_id} deletes something: it needs {sv.needed} approvals before it is "
                f"performed ({len(sv.approvers)} of {sv.needed} so far)."
            )
        choices = sv.step.spec.choices or ()
        if choices and choice not in choices:
            raise UsageError(f"Step {step_id} needs a choice: {', '.join(choices)}")
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            new = self.transition(
                run_id,
                step_id,
                StepEvent.DONE,
                user,
                session=s,
                detail={"choice": choice} if choice else None,
                values={"result": json.dumps({"by": user, "choice": choice})},
            )
        if sv.step.spec.records and choice is not None:
            self.record_fact(run_id, sv.step.spec.records, choice)
        return new

    def vote_mark_done(self, run_id: str, step_id: str, user: str, reason: str) -> ApprovalOutcome:
        """A required step done by other means: two approvers with a reason mark it done."""
        if not reason.strip():
            raise UsageError("Mark done needs a reason (what was done instead, and by whom).")
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        needed = max(2, self.config.slack.destructive_approvals if sv.step.risk == "destructive" else 2)
        with self.store.session() as s:
            row = self._step_row(s, run_id, step_id)
            existing: object = s.scalars(
                sa.select(Approval).where(
                    Approval.run_id == run_id,
                    Approval.step_id == step_id,
                    Approval.kind == "mark_done",
                    Approval.round == row.attempt,
                    Approval.user_id == user,
                )
            ).first()
            if existing is None and not self._insert_vote(
                s,
                Approval(
                    run_id=run_id,
                    step_id=step_id,
                    kind="mark_done",
                    user_id=user,
                    reason=reason,
                    fingerprint=row.fingerprint or "",
                    round=row.attempt,
                    created_at=self.clock(),
                ),
            ):
                existing = True
            if existing is None:
                audit.append(s, run_id, user, "mark_done.vote", step_id=step_id, detail={"reason": reason})
            have = (
                s.scalar(
                    sa.select(sa.func.count(sa.distinct(Approval.user_id))).where(
                        Approval.run_id == run_id,
                        Approval.step_id == step_id,
                        Approval.kind == "mark_done",
                        Approval.round == row.attempt,
                    )
                )
                or 0
            )
        done = False
        if have >= needed and existing is None:
            try:
                self.transition(run_id, step_id, StepEvent.MARK_DONE, user, detail={"reason": reason})
                done = True
            except StateConflict:
                done = False
        return ApprovalOutcome(step_id, have, needed, done, already=existing is not None)

    def skip(self, run_id: str, step_id: str, user: str, reason: str) -> StepState:
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        if not sv.step.optional:
            raise PermissionDenied(
                f"Step {step_id} is required and cannot be skipped. If it was done by other "
                f"means, two approvers can Mark done with a reason."
            )
        if not reason.strip():
            raise UsageError("Skip needs a reason.")
        return self.transition(
            run_id,
            step_id,
            StepEvent.SKIP,
            user,
            detail={"reason": reason},
            values={"result": json.dumps({"by": user, "reason": reason})},
        )

    def retry(self, run_id: str, step_id: str, user: str, *, target: str | None = None) -> None:
        """Retry a failed (or unknown) step, or one failed target of a fan-out step."""
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        if sv.step.risk == "destructive" and sv.state == StepState.UNKNOWN:
            raise StateConflict("A destructive step in doubt needs two people: use Mark done, or Abort.")
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            for key, trow in sv.targets.items():
                if (target is None or key == target) and trow.state in (StepState.FAILED, StepState.UNKNOWN):
                    self.transition(run_id, step_id, StepEvent.RETRY, user, target=key, session=s)
            self.transition(
                run_id,
                step_id,
                StepEvent.RETRY,
                user,
                session=s,
                values={"error": None},
                detail={"target": target} if target else None,
            )

    def abort(self, run_id: str, user: str, reason: str) -> Run:
        with self.store.session() as s:
            run = self._check_run_active(s, run_id)
            new = next_run_state(run.state, RunEvent.ABORT)
            moved = s.execute(
                sa.update(Run)
                .where(Run.id == run_id, Run.state == run.state)
                .values(state=new, finished_at=self.clock(), abort_reason=reason)
            ).rowcount
            if moved != 1:
                raise StateConflict(f"Run {run_id} changed meanwhile; nothing done.")
            s.execute(sa.delete(ActiveRun).where(ActiveRun.run_id == run_id))
            audit.append(s, run_id, user, "run.aborted", detail={"reason": reason})
        return self.get_run(run_id)

    def complete_if_done(self, run_id: str) -> bool:
        view = self.view(run_id)
        if view.run.state != RunState.ACTIVE or view.current is not None:
            return False
        with self.store.session() as s:
            moved = s.execute(
                sa.update(Run)
                .where(Run.id == run_id, Run.state == RunState.ACTIVE)
                .values(state=RunState.COMPLETED, finished_at=self.clock())
            ).rowcount
            if moved == 1:
                s.execute(sa.delete(ActiveRun).where(ActiveRun.run_id == run_id))
                audit.append(s, run_id, "bot", "run.completed", detail={"steps": len(view.steps)})
        return moved == 1

    # ------------------------------------------------------------------ worker side

    def post(self, run_id: str, step_id: str, *, fingerprint: str, preview: str) -> StepState:
        """The step becomes current: store what will be approved, and run read-only steps by themselves."""
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            new = self.transition(
                run_id,
                step_id,
                StepEvent.POST,
                "bot",
                session=s,
                values={"fingerprint": fingerprint, "preview": preview, "posted_at": self.clock()},
                detail={"fingerprint": fingerprint},
            )
        step = self.plan_of(self.get_run(run_id)).step(step_id)
        if self.needed(step) == 0:
            new = self.transition(run_id, step_id, StepEvent.AUTO_APPROVE, "bot", detail={"reason": "read-only"})
        return new

    def not_needed(self, run_id: str, step_id: str, reason: str) -> None:
        self.transition(run_id, step_id, StepEvent.NOT_NEEDED, "bot", detail={"reason": reason})

    def void(self, run_id: str, step_id: str, *, fingerprint: str, preview: str, why: str) -> None:
        """What was approved changed: approvals are void, the step asks again."""
        with self.store.session() as s:
            row = self._step_row(s, run_id, step_id)
            self.transition(
                run_id,
                step_id,
                StepEvent.VOID,
                "bot",
                session=s,
                values={"fingerprint": fingerprint, "preview": preview, "attempt": row.attempt + 1},
                detail={"why": why, "new_fingerprint": fingerprint},
            )

    def claim(self, run_id: str, step_id: str, targets: Iterable[str] = ()) -> bool:
        """Write-ahead: mark the step (and its targets) running before any remote call. False if lost."""
        try:
            with self.store.session() as s:
                self._check_run_active(s, run_id)
                self.transition(
                    run_id,
                    step_id,
                    StepEvent.CLAIM,
                    "bot",
                    session=s,
                    detail={"intent": "execute", "targets": list(targets)},
                )
        except StateConflict:
            return False
        return True

    def claim_target(self, run_id: str, step_id: str, target: str) -> bool:
        try:
            self.transition(run_id, step_id, StepEvent.CLAIM, "bot", target=target, detail={"intent": "execute"})
        except StateConflict:
            return False
        return True

    def finish(
        self,
        run_id: str,
        step_id: str,
        *,
        ok: bool,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        target: str = WHOLE,
        duration_s: float | None = None,
    ) -> None:
        event = StepEvent.SUCCEED if ok else StepEvent.FAIL
        detail: dict[str, Any] = {"ok": ok}
        if error:
            detail["error"] = error
        if result:
            detail["result"] = result
        if duration_s is not None:
            detail["duration_s"] = round(duration_s, 3)
        self.transition(
            run_id,
            step_id,
            event,
            "bot",
            target=target,
            detail=detail,
            values={"result": json.dumps(audit.scrub(result or {}), sort_keys=True), "error": error},
        )

    def probe_resolved(self, run_id: str, step_id: str, target: str = WHOLE) -> None:
        self.transition(
            run_id,
            step_id,
            StepEvent.PROBE_IN_PLACE,
            "bot",
            target=target,
            detail={"reason": "after a restart, the probe found the effect in place"},
        )

    def mark_crashed(self) -> list[tuple[str, str, str]]:
        """At start-up: every step found running becomes unknown. Returns (run, step, target) triples."""
        found: list[tuple[str, str, str]] = []
        with self.store.session() as s:
            rows = list(
                s.scalars(
                    sa.select(StepRun)
                    .join(Run, Run.id == StepRun.run_id)
                    .where(Run.state == RunState.ACTIVE, StepRun.state == StepState.RUNNING)
                )
            )
        for r in rows:
            try:
                self.transition(
                    r.run_id,
                    r.step_id,
                    StepEvent.CRASH,
                    "bot",
                    target=r.target,
                    detail={"reason": "the bot restarted while this was running"},
                )
                found.append((r.run_id, r.step_id, r.target))
            except StateConflict:
                continue
        return found


def _row(run_id: str, step_id: str, target: str, position: int, now: datetime) -> StepRun:
    return StepRun(
        run_id=run_id,
        step_id=step_id,
        target=target,
        position=position,
        state=StepState.PENDING,
        attempt=0,
        updated_at=now,
    )
