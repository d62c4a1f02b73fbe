"""Every Slack action_id and block_id the bot uses, and the opaque ids carried in button values."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.errors import UsageError


class ActionId(StrEnum):
    APPROVE = "step_approve"
    DONE = "step_done"
    RETRY = "step_retry"
    MARK_DONE = "step_mark_done"
    SKIP = "step_skip"
    ABORT = "run_abort"
    REVEAL_OTP = "step_reveal_otp"
    REASON_INPUT = "reason_input"


class BlockId(StrEnum):
    REASON = "reason"
    ACTIONS = "step_actions"
    TARGET_ACTIONS = "target_actions"


@dataclass(frozen=True)
class ButtonRef:
    """The context of a click: which run, step, approval round and (optionally) target or choice.

    ``round`` and ``fingerprint`` are those of the message the button was on: a vote is counted only
    while the step still has both (the run service compares them under the step's row lock).
    """

    run_id: str
    step_id: str = ""
    round: int = 0
    extra: str = ""  # a fan-out target (Retry), a choice (Done) or an OTP host (Reveal)
    fingerprint: str = ""  # what the step's message showed (empty before the step is posted)

    def encode(self) -> str:
        return "|".join([self.run_id, self.step_id, str(self.round), self.extra, self.fingerprint])

    @classmethod
    def decode(cls, value: str | None) -> ButtonRef:
        parts = (value or "").split("|")
        if len(parts) == 4:  # a message posted before buttons carried the fingerprint
            parts.append("")
        if len(parts) != 5 or not parts[0]:
            raise UsageError("This button is not one of the bot's (or it is too old to understand).")
        try:
            rnd = int(parts[2])
        except ValueError:
            raise UsageError("This button is malformed.") from None
        return cls(parts[0], parts[1], rnd, parts[3], parts[4])
