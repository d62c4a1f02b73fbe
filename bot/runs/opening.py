"""Opening a run: its options (failback defaults from the last completed failover), its number and its rows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bot.errors import StateConflict, UsageError
from bot.runs.machine import (
    RunState,
    StepState,
)
from bot.runs.reads import RunReads
from bot.runs.runbook import PastFailover, RunOptions, explain_options, plan_for_command, stored_storage
from bot.runs.snapshot import WHOLE
from bot.store import audit
from bot.store.db import as_utc
from bot.store.models import ActiveRun, Run, StepRun

log = logging.getLogger(__name__)

PREFIX = {"failover": "FO", "failback": "FB"}


class Opening(RunReads):
    """Opens runs: one active run per platform, numbered per direction."""

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
