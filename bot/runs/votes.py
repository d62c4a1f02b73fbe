"""People's votes on a step: approve, withdraw, hold, Done, Mark done and Skip, counted once per person and round."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.errors import PermissionDenied, StateConflict, UsageError
from bot.runs import policy
from bot.runs.bookkeeping import Bookkeeping
from bot.runs.machine import (
    FINISHED_STEP_STATES,
    StepEvent,
    StepState,
)
from bot.runs.runbook import ResolvedStep
from bot.runs.transitions import Transitions
from bot.store import audit
from bot.store.db import changed_rows
from bot.store.models import Approval, StepRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApprovalOutcome:
    step_id: str
    have: int
    needed: int
    approved: bool  # this approval completed the step's approvals
    already: bool = False  # the person had already approved: counted once


class Votes(Transitions, Bookkeeping):
    """Records votes on the locked step row; the vote that completes a count moves the step in the same transaction."""

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
        with self._run_session(run_id) as s:
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
        with self._run_session(run_id) as s:
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
        with self._run_session(run_id) as s:
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
        with self._run_session(run_id) as s:
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
