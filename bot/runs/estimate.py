"""How long is left of a run: steps that still need a person, and the bot's own time from earlier runs' audit logs."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import sqlalchemy as sa

from bot.runs.machine import FINISHED_STEP_STATES, RunState
from bot.runs.rules import bot_executes
from bot.runs.service import RunView
from bot.store.db import Store, as_utc
from bot.store.models import AuditEvent, Run


@dataclass(frozen=True)
class Left:
    """What remains of an active run."""

    people_steps: int  # remaining steps that need a person (approval, Done or a check)
    bot_steps: int  # remaining steps the bot executes
    bot_seconds: float | None  # expected execution time of those; None without history
    history_runs: int  # earlier completed runs of the same direction and scope the estimate comes from

    def text(self) -> str:
        people = f"{self.people_steps} step{'s' if self.people_steps != 1 else ''} need a person"
        if self.bot_seconds is None:
            return f"{people}; the bot's time: no history yet"
        runs = f"{self.history_runs} earlier run{'s' if self.history_runs != 1 else ''}"
        return f"{people}; the bot's own work about {_seconds(self.bot_seconds)} (from {runs})"


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min"


class Estimator:
    """Average execution time of each step in earlier completed runs of the same direction and scope.

    From the audit log (``execution.started`` to the last ``execution.finished`` of a step in a run);
    cached per active run (one run is active at a time, so no other run completes meanwhile).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        # (direction, scope, the active run) -> history: while that run is active no other run can complete
        self._cache: dict[tuple[str, str, str], tuple[dict[str, float], int]] = {}
        self._lock = threading.Lock()

    def left(self, view: RunView) -> Left | None:
        run = view.run
        if run.state != RunState.ACTIVE:
            return None
        remaining = [sv for sv in view.steps if sv.state not in FINISHED_STEP_STATES]
        people = sum(1 for sv in remaining if sv.needed > 0)
        bot = [sv for sv in remaining if bot_executes(sv.step)]
        averages, runs = self.history(run.direction, run.scope, exclude=run.id)
        if not runs:
            return Left(people, len(bot), None, 0)
        return Left(people, len(bot), sum(averages.get(sv.step.id, 0.0) for sv in bot), runs)

    def history(self, direction: str, scope: str, *, exclude: str = "") -> tuple[dict[str, float], int]:
        """Step id -> mean execution seconds over earlier completed runs; and how many runs that is."""
        key = (direction, scope, exclude)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        with self.store.read_session() as s:
            ids = [
                r
                for r in s.scalars(
                    sa.select(Run.id).where(
                        Run.direction == direction, Run.scope == scope, Run.state == RunState.COMPLETED
                    )
                ).all()
                if r != exclude
            ]
            rows = (
                s.execute(
                    sa.select(AuditEvent.run_id, AuditEvent.step_id, AuditEvent.event, AuditEvent.at).where(
                        AuditEvent.run_id.in_(ids),
                        AuditEvent.event.in_(("execution.started", "execution.finished")),
                    )
                ).all()
                if ids
                else []
            )
        spans: dict[tuple[str, str], list[float]] = {}
        for run_id, step_id, _event, at in rows:
            if step_id is None:
                continue
            t = as_utc(at).timestamp()
            span = spans.setdefault((run_id, step_id), [t, t])
            span[0], span[1] = min(span[0], t), max(span[1], t)
        per_step: dict[str, list[float]] = {}
        for (_run, step_id), (first, last) in spans.items():
            per_step.setdefault(step_id, []).append(last - first)
        result = ({k: sum(v) / len(v) for k, v in per_step.items()}, len(ids))
        with self._lock:
            self._cache[key] = result
        return result
