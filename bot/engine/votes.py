"""Votes and clicks through the engine: the forms a click opens, the buttons, and the forms people submit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.blocks import modals
from bot.config import Config
from bot.errors import StateConflict, UsageError, UserError
from bot.runs import policy
from bot.runs.service import RunService
from bot.slack_ids import ActionId, BlockId, ButtonRef, CallbackId, ModalRef

if TYPE_CHECKING:
    from bot.runs.worker import Worker

# Clicks that always answer with a form (the last three only from messages posted before the ⋯ menu).
FORM_KINDS = frozenset({ActionId.MORE, ActionId.MARK_DONE, ActionId.SKIP, ActionId.ABORT})
OVERRIDES = {ActionId.MARK_DONE: "mark_done", ActionId.SKIP: "skip", ActionId.ABORT: "abort"}


class Votes:
    """The engine's votes: each is cast by the run service under the step's row lock, then published."""

    config: Config
    service: RunService
    worker: Worker | None

    def changed(self, run_id: str, what: str = "") -> None:
        raise NotImplementedError  # RunEngine publishes on the hub

    def refuse(self, run_id: str | None, user: str, action: str, reason: str, step_id: str | None = None) -> bool:
        raise NotImplementedError  # RunEngine audits through the service

    # ------------------------------------------------------------------ clicks

    def form(self, kind: ActionId, ref: ButtonRef, user: str) -> dict[str, Any]:
        """The modal a click asks for, built from the stored run; who may is checked before it opens."""
        what = OVERRIDES.get(kind) or (ref.extra if kind == ActionId.MORE else str(kind))
        settings = self.config.slack
        if what == "abort":
            policy.check_operator(settings, user)
        else:
            policy.check_approver(settings, user, self.service.group_members)
        view = self.service.view(ref.run_id)
        if view.run.state != "active":
            raise StateConflict(f"Run {ref.run_id} is {view.run.state}; its buttons no longer do anything.")
        sv = view.step(ref.step_id) if ref.step_id else view.current
        if sv is None:
            raise StateConflict(f"Run {ref.run_id} has no current step.")
        if what != "abort" and ref.round != sv.row.attempt:
            raise UsageError(
                f"This message of step {sv.step.id} is out of date (it was asked again); use the newest one."
            )
        if kind != ActionId.DONE and what != "abort" and sv.step.risk == "destructive":
            # Approve, Mark done and Skip on a deletion obey the delete rules (the service checks them again).
            policy.check_destructive_approver(settings, user, view.run.initiator)
        if what == "abort":
            return modals.abort_modal(view, view.current or sv)
        if what in ("mark_done", "skip"):
            return modals.override_modal(view, sv, what)
        if kind == ActionId.APPROVE:
            return modals.approve_delete_modal(view, sv)
        if kind == ActionId.DONE:
            return modals.done_modal(view, sv)
        raise UsageError("This menu option is not one of the bot's.")

    def click(self, kind: ActionId, ref: ButtonRef, user: str, action_id: str) -> str:
        """A button pressed in the thread; returns what to tell the person (empty: the thread says it)."""
        try:
            return self._click(kind, ref, user)
        except UserError as exc:
            self.refuse(ref.run_id, user, action_id, str(exc), step_id=ref.step_id or None)
            raise
        finally:
            self.changed(ref.run_id)

    def _click(self, kind: ActionId, ref: ButtonRef, user: str) -> str:
        svc = self.service  # round and fingerprint of the clicked message are compared under the step's row lock
        rnd, fp = ref.round, ref.fingerprint
        if kind == ActionId.APPROVE:
            out = svc.approve(ref.run_id, ref.step_id, user, round=rnd, fingerprint=fp)
            if out.already:
                return f"You already approved {ref.step_id}; a person counts once ({out.have} of {out.needed})."
            if not out.approved and out.have < out.needed:
                return f"Approval recorded ({out.have} of {out.needed}); waiting for another approver."
        elif kind == ActionId.DONE:
            svc.done(ref.run_id, ref.step_id, user, choice=ref.extra or None, round=rnd, fingerprint=fp)
        elif kind == ActionId.RETRY:
            svc.retry(ref.run_id, ref.step_id, user, target=ref.extra or None, round=rnd, fingerprint=fp)
        elif kind == ActionId.ON_IT:
            svc.hold(ref.run_id, ref.step_id, user, round=rnd, fingerprint=fp)
        elif kind == ActionId.WITHDRAW:
            left = svc.withdraw(ref.run_id, ref.step_id, user, round=rnd, fingerprint=fp)
            return f"Your approval of {ref.step_id} is withdrawn ({left} approval(s) left)."
        elif kind == ActionId.REVEAL_OTP:
            return self._reveal(ref, user)
        return ""

    def _reveal(self, ref: ButtonRef, user: str) -> str:
        """One-time passwords go only to the approver who asks, ephemerally; every reveal is audited."""
        assert self.worker is not None, "revealing one-time passwords needs the worker"
        self.service.check_reveal(ref.run_id, ref.step_id, user)
        otps = self.worker.one_time_passwords(ref.run_id, ref.step_id)
        self.service.audit_reveal(ref.run_id, ref.step_id, user, sorted(otps))
        lines = [f"• {host}: `{otp}`" for host, otp in otps.items()]
        return (
            f"One-time password(s) for {ref.step_id} — only you see this; do not paste it in the "
            "channel:\n" + "\n".join(lines)
        )

    # ------------------------------------------------------------------ submitted forms

    def records_list(self, ref: ModalRef) -> bool:
        """Whether the form's step asks for a list (the Groups already disabled) when it is done."""
        step = self.service.plan_of(self.service.get_run(ref.run_id)).step(ref.step_id)
        return bool(step.spec.records and not step.spec.choices)

    def submit(self, callback: CallbackId, ref: ModalRef, user: str, values: dict[str, Any], records: bool) -> str:
        """Cast the form's vote under the step's row lock; returns what to tell the person (empty: the thread says).

        The change is published by ``changed`` once Slack has its answer (a form is answered within 3 s).
        """
        svc = self.service
        reason = str(values.get(str(BlockId.REASON)) or "").strip()
        rnd, fp = ref.round, ref.fingerprint  # compared with the step's under its row lock
        if callback == CallbackId.MARK_DONE:
            choice = values.get(str(BlockId.CHOICE))  # B4: edited by hand, or not done (decides B4b)
            out = svc.vote_mark_done(ref.run_id, ref.step_id, user, reason, round=rnd, fingerprint=fp, choice=choice)
            if out.already:
                return f"You already marked {ref.step_id} done; a person counts once ({out.have} of {out.needed})."
            return (
                ""
                if out.approved
                else f"Mark done recorded ({out.have} of {out.needed}); another approver must confirm."
            )
        if callback == CallbackId.SKIP:
            skipped = svc.skip(ref.run_id, ref.step_id, user, reason, round=rnd, fingerprint=fp)
            if skipped.already:
                return (
                    f"You already voted to skip {ref.step_id}; a person counts once "
                    f"({skipped.have} of {skipped.needed})."
                )
            return (
                ""
                if skipped.approved
                else f"Skip recorded ({skipped.have} of {skipped.needed}); another approver must confirm."
            )
        if callback == CallbackId.ABORT:
            svc.abort(ref.run_id, user, reason)  # operators only (the service checks)
            return ""
        if callback == CallbackId.APPROVE:
            approval = svc.approve(ref.run_id, ref.step_id, user, round=rnd, fingerprint=fp)
            if approval.already:
                return (
                    f"You already approved {ref.step_id}; a person counts once ({approval.have} of {approval.needed})."
                )
            if not approval.approved:
                return f"Approval recorded ({approval.have} of {approval.needed}); waiting for another approver."
            return ""
        if callback == CallbackId.DONE:
            recorded = modals.parse_groups(values.get(str(BlockId.GROUPS))) if records else None
            svc.done(
                ref.run_id, ref.step_id, user, choice=ref.choice or None, recorded=recorded, round=rnd, fingerprint=fp
            )
            return ""
        raise UserError("This form is not one of the bot's.")
