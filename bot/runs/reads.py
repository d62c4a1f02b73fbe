"""Reading runs: the run's plan, its rows and the snapshot (RunView) that leaves the engine."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bot.config import Config
from bot.errors import StateConflict, UsageError
from bot.runs import policy
from bot.runs.machine import (
    RunState,
)
from bot.runs.runbook import Plan, ResolvedStep, RunOptions, options_from_stored, resolve
from bot.runs.snapshot import WHOLE, RunView, StepView
from bot.store.db import Store, utcnow
from bot.store.models import ActiveRun, Approval, AuditEvent, Run, StepRun

log = logging.getLogger(__name__)


def options_of(run: Run) -> RunOptions:
    return options_from_stored(run.scope, run.storage, run.rebuilt)


class RunReads:
    """What the run service reads; holds the store, the configuration and the resolved plans."""

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
        self._views: dict[str, tuple[int, RunView]] = {}  # run -> (its version, its snapshot at that version)
        self._views_lock = threading.Lock()
        self.view_builds = 0  # snapshots built from the rows (the rest came from the cache): for benches

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

    @contextmanager
    def _run_session(self, run_id: str) -> Iterator[Session]:
        """A write transaction on one run; on PostgreSQL it bumps the run's version first.

        The database bumps the version on every change (triggers, migration 0006). On PostgreSQL bumping it
        first here means every writer of a run takes the run's row lock before any other, always in one
        order (no deadlock between, say, a target's claim and another target's result). SQLite serialises
        writers anyway (BEGIN IMMEDIATE), so there the statement would only lengthen each write.
        """
        with self.store.session() as s:
            if self.store.dialect == "postgresql":
                s.execute(sa.update(Run).where(Run.id == run_id).values(version=Run.version + 1))
            yield s

    def view(self, run_id: str) -> RunView:
        """The run as of now, built once per version: while the run's version is unchanged the same snapshot
        is handed out again (the version lives in the database, so a change by any process or replica shows).
        """
        with self.store.read_session() as s:
            version = s.scalar(sa.select(Run.version).where(Run.id == run_id))
            if version is None:
                raise UsageError(f"no run {run_id!r}")
            cached = self._views.get(run_id)
            if cached is not None and cached[0] == version:
                return cached[1]
            # Read after the version: the rows are at least as new as it, so a snapshot never carries an
            # older version's rows under a newer number (at worst newer rows under an older one, never served).
            run = s.get(Run, run_id)
            if run is None:
                raise UsageError(f"no run {run_id!r}")
            rows = list(s.scalars(sa.select(StepRun).where(StepRun.run_id == run_id)))
            approvals = list(s.scalars(sa.select(Approval).where(Approval.run_id == run_id)))
        built = self._build_view(run, rows, approvals)
        with self._views_lock:
            self.view_builds += 1
            held = self._views.get(run_id)
            if held is None or held[0] < version:
                self._views[run_id] = (version, built)
        return built

    def _build_view(self, run: Run, rows: list[StepRun], approvals: list[Approval]) -> RunView:
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
