"""The plain snapshot of a run that leaves the engine (RunView, StepView): data only, no database or Slack code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.errors import StateConflict
from bot.runs.machine import FINISHED_STEP_STATES
from bot.runs.runbook import Plan, ResolvedStep

if TYPE_CHECKING:  # the rows' shapes only; nothing of the database is imported at run time
    from bot.store.models import Run, StepRun


WHOLE = ""  # target key of a step's own row (fan-out targets have their host name)


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
    skip_votes: list[str] = field(default_factory=list)
    approval_note: str = ""  # a destructive step under weaker approval rules says so on its card


@dataclass
class RunView:
    """A run with its plan and every step's stored state, as read in one transaction."""

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
