"""Step and run transitions by compare-and-set, each with its audit event in the same transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.errors import StateConflict
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
from bot.runs.reads import RunReads
from bot.runs.snapshot import WHOLE
from bot.store import audit
from bot.store.db import changed_rows
from bot.store.models import ActiveRun, Run, StepRun

log = logging.getLogger(__name__)


class Transitions(RunReads):
    """Moves steps (post, claim, finish, void, retry) and runs (abort, complete) by machine.py's tables."""

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
            with self._run_session(run_id) as s:
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

    def retry(
        self, run_id: str, step_id: str, user: str, *, round: int, fingerprint: str, target: str | None = None
    ) -> None:
        """Retry a failed (or unknown) step, or one failed target of a fan-out step."""
        view = self._check_current(run_id, step_id)
        sv = view.step(step_id)
        policy.check_approver(self.config.slack, user, self.group_members)
        if sv.step.risk == "destructive" and sv.state == StepState.UNKNOWN:
            raise StateConflict("A destructive step in doubt needs two people: use Mark done, or Abort.")
        with self._run_session(run_id) as s:
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
        with self._run_session(run_id) as s:
            run = self._check_run_active(s, run_id)
            self._move_run(s, run, RunEvent.ABORT, user, values={"abort_reason": reason}, detail={"reason": reason})
        return self.get_run(run_id)

    def complete_if_done(self, run_id: str) -> bool:
        """Complete the run once every step is finished, by RUN_TRANSITIONS like any run change; False otherwise."""
        view = self.view(run_id)
        if view.run.state != RunState.ACTIVE or view.current is not None:
            return False
        with self._run_session(run_id) as s:
            run = s.get(Run, run_id)
            if run is None:
                return False
            try:
                self._move_run(s, run, RunEvent.COMPLETE, "bot", detail={"steps": len(view.steps)})
            except StateConflict:
                return False  # another process completed (or aborted) it first, or the table forbids it
        return True

    def _move_run(
        self,
        s: Session,
        run: Run,
        event: RunEvent,
        actor: str,
        *,
        detail: dict[str, Any],
        values: dict[str, Any] | None = None,
    ) -> RunState:
        """Apply a run event (machine.RUN_TRANSITIONS) by compare-and-set, with its ``run.<state>`` audit event."""
        try:
            new = next_run_state(run.state, event)
        except TransitionError as exc:
            raise StateConflict(f"Run {run.id} is {run.state}; nothing to {event}.") from exc
        moved = changed_rows(
            s,
            sa.update(Run)
            .where(Run.id == run.id, Run.state == run.state)
            .values(state=new, finished_at=self.clock(), **(values or {})),
        )
        if moved != 1:
            raise StateConflict(f"Run {run.id} changed meanwhile; nothing done.")
        s.execute(sa.delete(ActiveRun).where(ActiveRun.run_id == run.id))
        audit.append(s, run.id, actor, f"run.{new.value}", detail=detail)
        return new

    def post(
        self, run_id: str, step_id: str, *, fingerprint: str, preview: str, targets: Iterable[str] = ()
    ) -> StepState:
        """The step becomes current: store what will be approved, and run read-only steps by themselves.

        The step, its fan-out targets and a read-only step's approval move in one transaction, so a
        crash never leaves a step posted with targets that were not.
        """
        step = self.plan_of(self.get_run(run_id)).step(step_id)
        with self._run_session(run_id) as s:
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
        with self._run_session(run_id) as s:
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
            with self._run_session(run_id) as s:
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
            with self._run_session(run_id) as s:
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
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a step's (or target's) result; ``execution`` adds ``execution.finished`` in the same transaction.

        ``in_doubt``: it failed in a way that may have left a change behind; the step becomes unknown
        (people check, then Retry or Mark done) rather than failed. ``facts`` (what the step found, e.g.
        a masked ServerGuid) are recorded in the same transaction; should that transaction fail, they are
        still recorded on their own, so that people who then Mark the step done have them.
        """
        try:
            self._finish(run_id, step_id, ok, result, error, target, duration_s, execution, on, in_doubt, facts)
        except Exception:
            if facts:
                self._keep_facts(run_id, facts)
            raise

    def _keep_facts(self, run_id: str, facts: Mapping[str, Any]) -> None:
        try:
            with self._run_session(run_id) as s:
                self._set_facts(s, run_id, facts)
        except (StateConflict, SQLAlchemyError):
            log.exception("%s: could not record the facts %s either", run_id, sorted(facts))

    def _finish(
        self,
        run_id: str,
        step_id: str,
        ok: bool,
        result: dict[str, Any] | None,
        error: str | None,
        target: str,
        duration_s: float | None,
        execution: dict[str, Any] | None,
        on: str | None,
        in_doubt: bool,
        facts: Mapping[str, Any] | None,
    ) -> None:
        event = StepEvent.SUCCEED if ok else (StepEvent.CRASH if in_doubt else StepEvent.FAIL)
        detail: dict[str, Any] = {"ok": ok}
        if error:
            detail["error"] = error
        if result:
            detail["result"] = result
        if duration_s is not None:
            detail["duration_s"] = round(duration_s, 3)
        with self._run_session(run_id) as s:
            if facts:
                self._set_facts(s, run_id, facts)
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

    def _set_fact(self, s: Session, run_id: str, key: str, value: Any) -> None:
        """Record a fact of the run inside the caller's transaction (compare-and-set on the facts)."""
        self._set_facts(s, run_id, {key: value})

    def _set_facts(self, s: Session, run_id: str, new: Mapping[str, Any]) -> None:
        """Record facts of the run inside the caller's transaction (compare-and-set on the facts)."""
        run = s.get(Run, run_id)
        if run is None:
            raise StateConflict(f"There is no run {run_id}.")
        old = run.facts
        facts = json.loads(old or "{}")
        facts.update(new)
        moved = changed_rows(
            s, sa.update(Run).where(Run.id == run_id, Run.facts == old).values(facts=json.dumps(facts, sort_keys=True))
        )
        if moved != 1:
            raise StateConflict("The run changed meanwhile; nothing was counted. Try again.")
