"""Steps a person performs (manual, wait, confirm): the bot shows the instructions and never runs them."""

from __future__ import annotations

from actions.base import Outcome, Step, StepContext, Target
from actions.errors import RemoteOperationFailed


class PersonAction:
    """Manual, wait and confirm steps: a person acts; the bot only shows the instructions."""

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        return ""

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        raise RemoteOperationFailed(f"step {step.id} is performed by a person, not by the bot")

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return None
