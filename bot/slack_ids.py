"""Every Slack action_id, block_id and view callback_id the bot uses, and the opaque ids carried in values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from bot.errors import UsageError


class ActionId(StrEnum):
    """The base of an action_id. Several buttons of one kind in one block get ``<base>:<suffix>``
    (Slack requires action_ids to be unique within a block): ``step_done:reenabled``, ``step_retry:ss-a1``."""

    APPROVE = "step_approve"
    DONE = "step_done"
    RETRY = "step_retry"
    MARK_DONE = "step_mark_done"
    SKIP = "step_skip"
    ABORT = "run_abort"
    REVEAL_OTP = "step_reveal_otp"
    ON_IT = "step_on_it"  # "I'm on it": a person holds a Console step
    WITHDRAW = "step_withdraw"  # take one's approval back before the step runs
    MORE = "step_more"  # the overflow menu: Mark done / Skip / Abort, each opening a modal

    def with_suffix(self, suffix: str) -> str:
        return f"{self}:{suffix}" if suffix else str(self)


def action_of(action_id: str) -> ActionId:
    """The kind of a (possibly suffixed) action_id; UsageError for one the bot never rendered."""
    try:
        return ActionId(action_id.split(":", 1)[0])
    except ValueError:
        raise UsageError("This button is not one of the bot's (or it is too old to understand).") from None


# Every action_id the bot renders matches this: bolt routes them all to one listener.
ACTION_PATTERN = r"^(" + "|".join(a.value for a in ActionId) + r")(:.*)?$"


class BlockId(StrEnum):
    ACTIONS = "step_actions"
    TARGET_ACTIONS = "target_actions"
    RUN_ACTIONS = "run_actions"
    DELETE_KEEP = "delete_keep"
    REASON = "reason"  # in modals only; no input on a card
    CHOICE = "choice"
    GROUPS = "groups"
    NONE_DISABLED = "none_disabled"


class InputId(StrEnum):
    REASON = "reason_input"
    CHOICE = "choice_input"
    GROUPS = "groups_input"
    NONE_DISABLED = "none_disabled_input"


class CallbackId(StrEnum):
    """The ``callback_id`` of each modal: what submitting it does."""

    MARK_DONE = "modal_mark_done"
    SKIP = "modal_skip"
    ABORT = "modal_abort"
    DONE = "modal_done"  # a Done that asks for details (B25's Groups, B4's "edited by hand?")
    APPROVE = "modal_approve"  # approving a deletion: the whole DELETE/KEEP list, never clipped


@dataclass(frozen=True)
class ButtonRef:
    """The context of a click: which run, step, approval round and (optionally) target or choice.

    ``round`` and ``fingerprint`` are those of the message the button was on: a vote is counted only
    while the step still has both (the run service compares them under the step's row lock).
    """

    run_id: str
    step_id: str = ""
    round: int = 0
    extra: str = ""  # a fan-out target (Retry), a choice (Done), an OTP host (Reveal) or an overflow option
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


@dataclass(frozen=True)
class ModalRef:
    """What a modal was opened for, carried in its ``private_metadata``: the vote is bound to it."""

    run_id: str
    step_id: str
    round: int
    fingerprint: str
    choice: str = ""

    def encode(self) -> str:
        return json.dumps(
            {"run": self.run_id, "step": self.step_id, "round": self.round, "fp": self.fingerprint, "c": self.choice},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, value: str | None) -> ModalRef:
        try:
            data = json.loads(value or "")
            return cls(str(data["run"]), str(data["step"]), int(data["round"]), str(data["fp"]), str(data.get("c", "")))
        except (ValueError, KeyError, TypeError):
            raise UsageError("This form is not one of the bot's (or it is too old to understand).") from None
