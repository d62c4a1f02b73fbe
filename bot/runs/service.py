"""The run service: the only code that changes run state, always by compare-and-set in the database."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from bot.runs.runbook import (
    PastFailover,
    Plan,
    ResolvedStep,
    RunOptions,
    explain_options,
    options_from_stored,
    plan_for_command,
    resolve,
    stored_storage,
)
from bot.runs.snapshot import RunView, StepView
from bot.store import audit
from bot.store.db import Store, as_utc, changed_rows, utcnow
from bot.store.models import ActiveRun, Approval, AuditEvent, Run, StepRun

log = logging.getLogger(__name__)

PREFIX = {"failover": "FO", "failback": "FB"}
WHOLE = ""  # target key of a step's own row (fan-out targets have their host name)
POSTING = "posting:"  # message_ts while one process posts the step's message (followed by the claim time)
MESSAGE_CLAIM_LEASE_S = 10.0  # a claim to post that old was left by a process that died
REVEALS_PER_PERSON = 6  # one-time password reveals a person may ask for ...
REVEAL_WINDOW_S = 15 * 60  # ... in this many seconds
REFUSALS_PER_PERSON = 10  # refusals audited per person and chain ...
REFUSAL_WINDOW_S = 60  # ... in this many seconds (the rest are logged, not audited)


@dataclass(frozen=True)
class ApprovalOutcome:
    step_id: str
    have: int
    needed: int
    approved: bool  # this approval completed the step's approvals
    already: bool = False  # the person had already approved: counted once


def options_of(run: Run) -> RunOptions:
    return options_from_stored(run.scope, run.storage, run.rebuilt)


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
        with self.store.read_session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise UsageError(f"no run {run_id!r}")
            return run

    def active_run(self) -> Run | None:
        with self.store.read_session() as s:
            active = s.get(ActiveRun, self.config.platform)
            return s.get(Run, active.run_id) if active else None

    def last_run(self) -> Run | None:
        with self.store.read_session() as s:
            return s.scalars(
                sa.select(Run).where(Run.platform == self.config.platform).order_by(Run.created_at.desc()).limit(1)
            ).first()

    def view(self, run_id: str) -> RunView:
        with self.store.read_session() as s:
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
            sk = [a for a in approvals if a.step_id == step.id and a.kind == "skip" and a.round == rnd]
            views.append(
                StepView(
                    step=step,
                    state=whole.state,
                    targets=dict(sorted(group.items(), key=lambda kv: kv[1].position)),
                    row=whole,
                    approvers=[a.user_id for a in sorted(ok, key=lambda a: a.id)],
                    mark_done_votes=[a.user_id for a in sorted(md, key=lambda a: a.id)],
                    needed=self.needed(step),
                    skip_votes=[a.user_id for a in sorted(sk, key=lambda a: a.id)],
                    approval_note=(
                        policy.weaker_delete_approval(self.config.slack) if step.risk == "destructive" else ""
                    ),
                )
            )
        return RunView(run=run, plan=plan, steps=views)

    def end_digest(self, run_id: str) -> str:
        """The audit chain's link that ended the run (completed or aborted) as "#seq digest", or ""."""
        with self.store.read_session() as s:
            ended = s.scalars(
                sa.select(AuditEvent)
                .where(AuditEvent.run_id == run_id, AuditEvent.event.in_(["run.completed", "run.aborted"]))
                .order_by(AuditEvent.seq)
                .limit(1)
            ).first()
        return f"#{ended.seq} {ended.hash[:16]}" if ended else ""

    def facts(self, run_id: str) -> dict[str, Any]:
        return dict(json.loads(self.get_run(run_id).facts or "{}"))

    def needed(self, step: ResolvedStep) -> int:
        return policy.approvals_needed(step.kind, step.risk, self.config.slack, step.action)

    # ------------------------------------------------------------------ opening runs

    def last_completed_failover(self, site: str) -> Run | None:
        with self.store.read_session() as s:
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

    def explain_options(self, direction: str, site: str, args: Sequence[str]) -> tuple[RunOptions, str]:
        """The run's options and, for a failback, where its scope and StorageServers came from."""
        return explain_options(direction, site, args, self.failovers_of)  # type: ignore[arg-type]

    def failovers_of(self, site: str) -> list[PastFailover]:
        """Every failover of ``site`` on this platform, oldest first (a failback's defaults come from them)."""
        with self.store.read_session() as s:
            runs = s.scalars(
                sa.select(Run)
                .where(Run.platform == self.config.platform, Run.direction == "failover", Run.site == site)
                .order_by(Run.created_at)
            )
            return [PastFailover(r.id, r.state, r.scope, r.storage, as_utc(r.created_at)) for r in runs]

    def open_run(self, direction: str, site: str, args: Sequence[str], user: str, channel: str = "") -> Run:
        """Start a failover or failback; StateConflict when the platform already has an active run."""
        if direction not in PREFIX:
            raise UsageError(f"unknown direction {direction!r}")
        plan = plan_for_command(self.config, direction, site, args, self.failovers_of)  # type: ignore[arg-type]
        options = plan.options
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
                        storage=stored_storage(options),
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
        """Only one process posts a step's message: whoever moves message_ts from empty to 'posting:<time>'.

        The time makes the claim a lease: a process that died between claiming and storing the
        message's ts leaves a claim that ``release_stale_message_claims`` hands back later.
        """
        with self.store.session() as s:
            return (
                changed_rows(
                    s,
                    sa.update(StepRun)
                    .where(
                        StepRun.run_id == run_id,
                        StepRun.step_id == step_id,
                        StepRun.target == WHOLE,
                        StepRun.message_ts.is_(None),
                    )
                    .values(message_ts=f"{POSTING}{time.time():.3f}"),
                )
                == 1
            )

    def release_stale_message_claims(self, run_id: str, *, lease_s: float = MESSAGE_CLAIM_LEASE_S) -> float | None:
        """Hand back claims to post a step message that are older than ``lease_s`` (their poster died).

        Returns how many seconds until the youngest remaining claim goes stale, or None when none remain.
        """
        now = time.time()
        with self.store.session() as s:
            rows = list(
                s.scalars(
                    sa.select(StepRun).where(
                        StepRun.run_id == run_id, StepRun.target == WHOLE, StepRun.message_ts.like(f"{POSTING}%")
                    )
                )
            )
        remaining: list[float] = []
        for row in rows:
            claimed = _claim_time(row.message_ts or "")
            if now - claimed < lease_s:
                remaining.append(claimed + lease_s - now)
                continue
            with self.store.session() as s:
                released = changed_rows(
                    s,
                    sa.update(StepRun)
                    .where(StepRun.id == row.id, StepRun.message_ts == row.message_ts)
                    .values(message_ts=None),
                )
                if released == 1:
                    audit.append(
                        s,
                        run_id,
                        "bot",
                        "message.reclaimed",
                        step_id=row.step_id,
                        detail={"reason": "the process posting this step's message stopped before it was stored"},
                    )
        return min(remaining) if remaining else None

    def release_message_claim(self, run_id: str, step_id: str) -> None:
        """Slack refused the step's message: hand the claim back so that a later pass may post it again."""
        with self.store.session() as s:
            s.execute(
                sa.update(StepRun)
                .where(
                    StepRun.run_id == run_id,
                    StepRun.step_id == step_id,
                    StepRun.target == WHOLE,
                    StepRun.message_ts.like(f"{POSTING}%"),
                )
                .values(message_ts=None)
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
                moved = changed_rows(
                    s,
                    sa.update(Run)
                    .where(Run.id == run_id, Run.facts == old)
                    .values(facts=json.dumps(facts, sort_keys=True)),
                )
            if moved == 1:
                return
        raise StateConflict("could not record a fact of the run (too many concurrent writers)")

    # ------------------------------------------------------------------ state changes

    def _step_row(
        self, s: Session, run_id: str, step_id: str, target: str = WHOLE, *, for_update: bool = False
    ) -> StepRun:
        query = sa.select(StepRun).where(StepRun.run_id == run_id, StepRun.step_id == step_id, StepRun.target == target)
        if for_update:  # PostgreSQL: votes on one step queue here (SQLite serialises writers anyway)
            query = query.with_for_update()
        row = s.scalars(query).first()
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
        moved = changed_rows(s, sa.update(StepRun).where(StepRun.id == row.id, StepRun.state == old).values(**changes))
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

    @staticmethod
    def _check_seen(row: StepRun, round: int, fingerprint: str) -> None:
        """A vote counts only for the message its voter saw: the same approval round and fingerprint.

        Checked on the locked step row, so a step voided (asked again) between the click and the
        vote cannot collect a vote cast on its old message.
        """
        if round != row.attempt or fingerprint != (row.fingerprint or ""):
            raise StateConflict(
                f"This message of step {row.step_id} is out of date (it was asked again, or what it does "
                "changed); nothing changed. Use the newest message."
            )

    def refuse(self, run_id: str | None, user: str, action: str, reason: str, step_id: str | None = None) -> bool:
        """Audit a refused request; False when it was not recorded.

        Anyone in the channel can be refused, so refusals are rate-limited per person and chain
        (``REFUSALS_PER_PERSON`` a minute): a flood of refused commands cannot grow the log without bound.
        """
        chain = run_id or "-"
        since = utcnow() - timedelta(seconds=REFUSAL_WINDOW_S)
        with self.store.read_session() as s:
            recent = s.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.run_id == chain,
                    AuditEvent.actor == user,
                    AuditEvent.event == "refused",
                    AuditEvent.at >= since,
                )
            )
        if (recent or 0) >= REFUSALS_PER_PERSON:
            log.info("not auditing another refusal of %s by %s (%d in the last minute)", action, user, recent)
            return False
        audit.record(self.store, chain, user, "refused", step_id=step_id, detail={"action": action, "reason": reason})
        return True

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

    _VOTE_EVENTS = {"approve": "approval", "mark_done": "mark_done.vote", "skip": "skip.vote"}
    _REPEATED_EVENTS = {"approve": "approval.repeated", "mark_done": "mark_done.repeated", "skip": "skip.repeated"}

    def _check_voter(self, step: ResolvedStep, user: str, initiator: str) -> None:
        """Who may vote on a step: an approver; on a destructive step, not the initiator unless configured.

        One rule for Approve, Mark done and Skip alike: a delete cannot be recorded by another button.
        """
        policy.check_approver(self.config.slack, user, self.group_members)
        if step.risk == "destructive":
            policy.check_destructive_approver(self.config.slack, user, initiator)

    def _count_vote(
        self, s: Session, row: StepRun, user: str, kind: str, *, detail: dict[str, Any], reason: str | None = None
    ) -> tuple[bool, int]:
        """One person's vote of ``kind`` on a locked step row: (counted now, distinct voters this round).

        A person counts once: a repeated vote is audited as such and not counted again.
        """
        this_round = (
            Approval.run_id == row.run_id,
            Approval.step_id == row.step_id,
            Approval.kind == kind,
            Approval.round == row.attempt,
        )
        existing = s.scalars(sa.select(Approval).where(*this_round, Approval.user_id == user)).first()
        vote = Approval(
            run_id=row.run_id,
            step_id=row.step_id,
            kind=kind,
            user_id=user,
            reason=reason,
            fingerprint=row.fingerprint or "",
            round=row.attempt,
            created_at=self.clock(),
        )
        counted = existing is None and self._insert_vote(s, vote)  # False: a concurrent click of theirs won
        if counted:
            audit.append(s, row.run_id, user, self._VOTE_EVENTS[kind], step_id=row.step_id, detail=detail)
        else:
            audit.append(
                s,
                row.run_id,
                user,
                self._REPEATED_EVENTS[kind],
                step_id=row.step_id,
                detail={**({"round": row.attempt} if kind == "approve" else detail), "counted": False},
            )
        have = s.scalar(sa.select(sa.func.count(sa.distinct(Approval.user_id))).where(*this_round)) or 0
        return counted, have

    def check_reveal(self, run_id: str, step_id: str, user: str) -> None:
        """May ``user`` be shown the one-time passwords of ``step_id`` now? (spec v3 §3)

        Only an approver, only for the current step of an active run, and at most
        ``REVEALS_PER_PERSON`` times in ``REVEAL_WINDOW_S`` per person (counted in the audit log,
        so across replicas and restarts).
        """
        policy.check_approver(self.config.slack, user, self.group_members)
        view = self._check_current(run_id, step_id)
        if not view.step(step_id).step.spec.otp:
            raise UsageError(f"Step {step_id} needs no one-time password.")
        since = self.clock() - timedelta(seconds=REVEAL_WINDOW_S)
        with self.store.read_session() as s:
            recent = s.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.event == "otp.revealed", AuditEvent.actor == user, AuditEvent.at >= since)
            )
        if (recent or 0) >= REVEALS_PER_PERSON:
            raise PermissionDenied(
                f"You have been shown {recent} one-time passwords in the last {REVEAL_WINDOW_S // 60} minutes; "
                "that is the limit. Ask another approver, or wait."
            )

    def audit_reveal(self, run_id: str, step_id: str, user: str, hosts: list[str]) -> None:
        """Record that ``user`` was shown the one-time passwords of ``hosts`` (never the values)."""
        audit.record(self.store, run_id, user, "otp.revealed", step_id=step_id, detail={"hosts": hosts})

    def approve(self, run_id: str, step_id: str, user: str, *, round: int, fingerprint: str) -> ApprovalOutcome:
        """Record ``user``'s approval of the current step; approve it when enough distinct people have.

        ``round`` and ``fingerprint`` are those of the message the person clicked (see ``_check_seen``).
        """
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        self._check_voter(sv.step, user, view.run.initiator)
        if sv.state != StepState.AWAITING_APPROVAL:
            raise StateConflict(f"Step {step_id} is {sv.state.replace('_', ' ')}; it does not need approval now.")
        needed = max(sv.needed, 1)
        approved = False
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            # The vote, its count and the step's approval are one transaction on the locked step row:
            # two approvers clicking at once cannot both count one, and a crash cannot keep a
            # complete set of approvals on a step that was never approved.
            row = self._step_row(s, run_id, step_id, for_update=True)
            if row.state != StepState.AWAITING_APPROVAL:
                raise StateConflict(f"Step {step_id} is {row.state.replace('_', ' ')}; it does not need approval now.")
            self._check_seen(row, round, fingerprint)
            counted, have = self._count_vote(
                s, row, user, "approve", detail={"fingerprint": row.fingerprint, "round": row.attempt}
            )
            if have >= needed and counted:
                self.transition(run_id, step_id, StepEvent.APPROVE, user, session=s, detail={"approvals": have})
                approved = True
        return ApprovalOutcome(step_id, have, needed, approved, already=not counted)

    def done(
        self,
        run_id: str,
        step_id: str,
        user: str,
        *,
        round: int,
        fingerprint: str,
        choice: str | None = None,
        recorded: Any = None,
    ) -> StepState:
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
            self._check_seen(self._step_row(s, run_id, step_id, for_update=True), round, fingerprint)
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
        elif sv.step.spec.records and recorded is not None:  # a list people entered (B25's Groups)
            self.record_fact(run_id, sv.step.spec.records, recorded)
            audit.record(
                self.store, run_id, user, "step.recorded", step_id=step_id, detail={sv.step.spec.records: recorded}
            )
        return new

    def mark_done_choices(self, step: ResolvedStep) -> dict[str, str]:
        """What Mark done on ``step`` asks (choice -> the outcome it records), e.g. B4: edited_by_hand / not_done."""
        return {str(k): str(v) for k, v in (step.params.get("mark_done_choices") or {}).items()}

    def vote_mark_done(
        self,
        run_id: str,
        step_id: str,
        user: str,
        reason: str,
        *,
        round: int,
        fingerprint: str,
        choice: str | None = None,
    ) -> ApprovalOutcome:
        """A required step done by other means: two approvers with a reason mark it done.

        On a destructive step it takes what its approval takes (``destructive_approvals`` distinct
        approvers, not the initiator unless configured), and never fewer than two people.

        A step with ``mark_done_choices`` (B4) also asks what was done: every vote of a round must give the same
        choice, and the completed Mark done records ``outcome:<step>`` in the same transaction, which decides
        the conditional step after it (B4b: needed when the row was not done, not when it was edited by hand).
        """
        if not reason.strip():
            raise UsageError("Mark done needs a reason (what was done instead, and by whom).")
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        self._check_voter(sv.step, user, view.run.initiator)
        choices = self.mark_done_choices(sv.step)
        if choices and choice not in choices:
            raise UsageError(
                f"Mark done on {step_id} needs a choice: {' or '.join(choices)} "
                f"(e.g. B4: was the row edited by hand, or not done, so that B4b adds it in the Console?)"
            )
        if not choices and choice is not None:
            raise UsageError(f"Mark done on {step_id} takes no choice.")
        needed = max(2, sv.needed if sv.step.risk == "destructive" else 2)
        return self._vote_to_finish(
            run_id,
            step_id,
            user,
            "mark_done",
            StepEvent.MARK_DONE,
            reason,
            needed,
            round,
            fingerprint,
            choice=choice,
            choices=choices,
        )

    def _mark_done_choices_so_far(self, s: Session, row: StepRun) -> dict[str, str]:
        """user -> choice of this round's counted Mark-done votes (from the audit chain)."""
        out: dict[str, str] = {}
        for event in audit.events_of(s, row.run_id):
            if event.event != "mark_done.vote" or event.step_id != row.step_id:
                continue
            detail = json.loads(event.detail or "{}")
            if detail.get("round") == row.attempt and detail.get("choice"):
                out.setdefault(event.actor, str(detail["choice"]))
        return out

    def _set_fact(self, s: Session, run_id: str, key: str, value: Any) -> None:
        """Record a fact of the run inside the caller's transaction (compare-and-set on the facts)."""
        run = s.get(Run, run_id)
        if run is None:
            raise StateConflict(f"There is no run {run_id}.")
        old = run.facts
        facts = json.loads(old or "{}")
        facts[key] = value
        moved = changed_rows(
            s, sa.update(Run).where(Run.id == run_id, Run.facts == old).values(facts=json.dumps(facts, sort_keys=True))
        )
        if moved != 1:
            raise StateConflict("The run changed meanwhile; nothing was counted. Try again.")

    def skip(
        self, run_id: str, step_id: str, user: str, reason: str, *, round: int, fingerprint: str
    ) -> ApprovalOutcome:
        """Skip an optional step with a reason: one approver, or what its approval takes if it is destructive."""
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        self._check_voter(sv.step, user, view.run.initiator)
        if not sv.step.optional:
            raise PermissionDenied(
                f"Step {step_id} is required and cannot be skipped. If it was done by other "
                f"means, two approvers can Mark done with a reason."
            )
        if not reason.strip():
            raise UsageError("Skip needs a reason.")
        needed = max(sv.needed, 1) if sv.step.risk == "destructive" else 1
        return self._vote_to_finish(run_id, step_id, user, "skip", StepEvent.SKIP, reason, needed, round, fingerprint)

    def withdraw(self, run_id: str, step_id: str, user: str, *, round: int, fingerprint: str) -> int:
        """Take back one's approval of a step that does not have all of them yet; returns the approvals left."""
        self._check_current(run_id, step_id)
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            row = self._step_row(s, run_id, step_id, for_update=True)
            self._check_seen(row, round, fingerprint)
            if row.state != StepState.AWAITING_APPROVAL:
                raise StateConflict(
                    f"Step {step_id} is {row.state.replace('_', ' ')}; an approval can be withdrawn only "
                    "until the step has all its approvals."
                )
            this_round = (
                Approval.run_id == run_id,
                Approval.step_id == step_id,
                Approval.kind == "approve",
                Approval.round == row.attempt,
            )
            gone = changed_rows(s, sa.delete(Approval).where(*this_round, Approval.user_id == user))
            if gone == 0:
                raise UsageError(f"You have not approved {step_id}; there is nothing to withdraw.")
            audit.append(s, run_id, user, "approval.withdrawn", step_id=step_id, detail={"round": row.attempt})
            return s.scalar(sa.select(sa.func.count(sa.distinct(Approval.user_id))).where(*this_round)) or 0

    def hold(self, run_id: str, step_id: str, user: str, *, round: int, fingerprint: str) -> None:
        """ "I'm on it": ``user`` is doing this Console step (shown on the card and in status; audited)."""
        view = self._check_current(run_id, step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        row = view.step(step_id).row
        self._check_seen(row, round, fingerprint)
        held = {"user": user, "round": row.attempt, "at": self.clock().isoformat()}
        self.record_fact(run_id, f"on_it.{step_id}", held)
        audit.record(self.store, run_id, user, "step.on_it", step_id=step_id, detail={"round": row.attempt})

    def _vote_to_finish(
        self,
        run_id: str,
        step_id: str,
        user: str,
        kind: str,
        event: StepEvent,
        reason: str,
        needed: int,
        round: int,
        fingerprint: str,
        *,
        choice: str | None = None,
        choices: dict[str, str] | None = None,
    ) -> ApprovalOutcome:
        """One vote to finish a step without running it (Mark done, Skip); the last one needed finishes it.

        With ``choices`` (Mark done on B4) every vote of the round must give the same ``choice``, and the last
        one records ``outcome:<step>`` in the same transaction as the step's finish."""
        done = False
        detail: dict[str, Any] = {"reason": reason, **({"choice": choice} if choice else {})}
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            row = self._step_row(s, run_id, step_id, for_update=True)  # one vote at a time per step
            if row.state in FINISHED_STEP_STATES:
                raise StateConflict(f"Step {step_id} is {row.state.replace('_', ' ')}; nothing to {event}.")
            self._check_seen(row, round, fingerprint)
            if choices:
                others = {c for u, c in self._mark_done_choices_so_far(s, row).items() if u != user}
                if others and others != {choice}:
                    raise StateConflict(
                        f"Another approver marked {step_id} done as {', '.join(sorted(others))}; both must give "
                        "the same answer. Nothing was counted."
                    )
                detail["round"] = row.attempt
            counted, have = self._count_vote(s, row, user, kind, reason=reason, detail=detail)
            if have >= needed and counted:
                if choices:
                    self._set_fact(s, run_id, f"outcome:{step_id}", choices[str(choice)])
                self.transition(
                    run_id,
                    step_id,
                    event,
                    user,
                    session=s,
                    detail={**detail, "votes": have},
                    values={"result": json.dumps({"by": user, "reason": reason})} if kind == "skip" else None,
                )
                done = True
        return ApprovalOutcome(step_id, have, needed, done, already=not counted)

    def retry(
        self, run_id: str, step_id: str, user: str, *, round: int, fingerprint: str, target: str | None = None
    ) -> None:
        """Retry a failed (or unknown) step, or one failed target of a fan-out step."""
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        if sv.step.risk == "destructive" and sv.state == StepState.UNKNOWN:
            raise StateConflict("A destructive step in doubt needs two people: use Mark done, or Abort.")
        with self.store.session() as s:
            self._check_run_active(s, run_id)
            self._check_seen(self._step_row(s, run_id, step_id, for_update=True), round, fingerprint)
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
        """Abort the run: for operators only, by button, modal or command alike."""
        policy.check_operator(self.config.slack, user)
        with self.store.session() as s:
            run = self._check_run_active(s, run_id)
            new = next_run_state(run.state, RunEvent.ABORT)
            moved = changed_rows(
                s,
                sa.update(Run)
                .where(Run.id == run_id, Run.state == run.state)
                .values(state=new, finished_at=self.clock(), abort_reason=reason),
            )
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
            moved = changed_rows(
                s,
                sa.update(Run)
                .where(Run.id == run_id, Run.state == RunState.ACTIVE)
                .values(state=RunState.COMPLETED, finished_at=self.clock()),
            )
            if moved == 1:
                s.execute(sa.delete(ActiveRun).where(ActiveRun.run_id == run_id))
                audit.append(s, run_id, "bot", "run.completed", detail={"steps": len(view.steps)})
        return moved == 1

    # ------------------------------------------------------------------ worker side

    def post(
        self, run_id: str, step_id: str, *, fingerprint: str, preview: str, targets: Iterable[str] = ()
    ) -> StepState:
        """The step becomes current: store what will be approved, and run read-only steps by themselves.

        The step, its fan-out targets and a read-only step's approval move in one transaction, so a
        crash never leaves a step posted with targets that were not.
        """
        step = self.plan_of(self.get_run(run_id)).step(step_id)
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
            for key in targets:
                self.transition(run_id, step_id, StepEvent.POST, "bot", target=key, session=s)
            if self.needed(step) == 0:
                new = self.transition(
                    run_id, step_id, StepEvent.AUTO_APPROVE, "bot", session=s, detail={"reason": "read-only"}
                )
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

    def claim(
        self,
        run_id: str,
        step_id: str,
        targets: Iterable[str] = (),
        *,
        intent: dict[str, Any] | None = None,
        on: str | None = None,
    ) -> bool:
        """Write-ahead: mark the step running before any remote call. False if another claim won.

        With ``intent`` the ``execution.started`` event (what is about to be done, on host ``on``) is
        written in the same transaction as the claim: a crash leaves both or neither.
        """
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
                if intent is not None:
                    audit.append(s, run_id, "bot", "execution.started", step_id=step_id, target=on, detail=intent)
        except StateConflict:
            return False
        return True

    def claim_target(
        self,
        run_id: str,
        step_id: str,
        target: str,
        *,
        intent: dict[str, Any] | None = None,
        approve: bool = False,
    ) -> bool:
        """Write-ahead for one target of a fan-out step (``execution.started`` in the same transaction).

        With ``approve`` the target is first approved (``auto_approve``; skipped when it already is,
        e.g. a retried target) in the same transaction: a claim that loses rolls its approval back.
        """
        try:
            with self.store.session() as s:
                if approve:
                    try:
                        self.transition(run_id, step_id, StepEvent.AUTO_APPROVE, "bot", target=target, session=s)
                    except StateConflict:
                        pass  # already approved (a retry); the claim below decides
                self.transition(
                    run_id, step_id, StepEvent.CLAIM, "bot", target=target, session=s, detail={"intent": "execute"}
                )
                if intent is not None:
                    audit.append(s, run_id, "bot", "execution.started", step_id=step_id, target=target, detail=intent)
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
        execution: dict[str, Any] | None = None,
        on: str | None = None,
        in_doubt: bool = False,
    ) -> None:
        """Record a step's (or target's) result; ``execution`` adds ``execution.finished`` in the same transaction.

        ``in_doubt``: it failed in a way that may have left a change behind; the step becomes unknown
        (people check, then Retry or Mark done) rather than failed.
        """
        event = StepEvent.SUCCEED if ok else (StepEvent.CRASH if in_doubt else StepEvent.FAIL)
        detail: dict[str, Any] = {"ok": ok}
        if error:
            detail["error"] = error
        if result:
            detail["result"] = result
        if duration_s is not None:
            detail["duration_s"] = round(duration_s, 3)
        with self.store.session() as s:
            if execution is not None:
                audit.append(
                    s,
                    run_id,
                    "bot",
                    "execution.finished",
                    step_id=step_id,
                    target=on or target or None,
                    detail=execution,
                )
            self.transition(
                run_id,
                step_id,
                event,
                "bot",
                target=target,
                session=s,
                detail=detail,
                values={
                    "result": json.dumps(audit.cap(audit.scrub(result or {})), sort_keys=True),
                    "error": audit.cap(audit.scrub(error)) if error else error,
                },
            )

    def probe_resolved(self, run_id: str, step_id: str, target: str = WHOLE, *, evidence: str = "") -> None:
        """After a restart: the step's read-only probe found its effect in place; it is done, not run again."""
        summary = (
            "The bot restarted while this step was running. Its read-only check found the effect in place"
            + (f" ({evidence})" if evidence else "")
            + ", so it is marked done without running it again."
        )
        self.transition(
            run_id,
            step_id,
            StepEvent.PROBE_IN_PLACE,
            "bot",
            target=target,
            detail={"reason": "after a restart, the probe found the effect in place", "evidence": evidence},
            values={"result": json.dumps({"summary": summary}), "error": None},
        )

    def needs_people(self, run_id: str, step_id: str, target: str, why: str) -> None:
        """After a restart: the probe could not show the effect in place; people decide (Retry / Mark done)."""
        audit.record(
            self.store,
            run_id,
            "bot",
            "recovery.ask_people",
            step_id=step_id,
            target=target or None,
            detail={"why": why},
        )

    @contextmanager
    def executing(self, run_id: str, step_id: str) -> Iterator[bool]:
        """Held by the process that executes ``step_id``: yields False when another live process holds it.

        On PostgreSQL this is a session advisory lock on a connection of its own; the database drops
        it when the process dies, so a replica's start-up recovery can tell a step that is running
        elsewhere from one whose process is gone. SQLite has one process: always True.
        """
        if self.store.dialect != "postgresql":
            yield True
            return
        key = execution_lock_key(run_id, step_id)
        conn = self.store.engine.connect()
        try:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        except BaseException:
            conn.invalidate()  # closing the session releases the lock whatever state it is in
            raise
        finally:
            conn.close()

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
        by_step: dict[tuple[str, str], list[StepRun]] = {}
        for r in rows:
            by_step.setdefault((r.run_id, r.step_id), []).append(r)
        for (run_id, step_id), group in by_step.items():
            with self.executing(run_id, step_id) as nobody_else:
                if not nobody_else:
                    log.info("%s %s is running in another live process; left alone", run_id, step_id)
                    continue
                for r in sorted(group, key=lambda r: r.target != WHOLE):
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


def _claim_time(message_ts: str) -> float:
    try:
        return float(message_ts[len(POSTING) :])
    except ValueError:
        return 0.0  # a claim from before claims carried their time: stale


def execution_lock_key(run_id: str, step_id: str) -> int:
    """The PostgreSQL advisory lock id held while a process executes ``step_id`` of ``run_id``."""
    digest = hashlib.sha256(f"failover-bot:execute:{run_id}:{step_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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
