"""Who may be shown what: one-time password reveals (rate-limited) and the audit of refused requests."""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from bot.errors import PermissionDenied, UsageError
from bot.runs import policy
from bot.runs.reads import RunReads
from bot.store import audit
from bot.store.db import utcnow
from bot.store.models import AuditEvent

log = logging.getLogger(__name__)

REVEALS_PER_PERSON = 6  # one-time password reveals a person may ask for ...
REVEAL_WINDOW_S = 15 * 60  # ... in this many seconds
REFUSALS_PER_PERSON = 10  # refusals audited per person and chain ...
REFUSAL_WINDOW_S = 60  # ... in this many seconds (the rest are logged, not audited)


class Access(RunReads):
    """Reveals and refusals, audited (refusals rate-limited per person so a flood cannot grow the log)."""

    def refuse(self, run_id: str | None, user: str, action: str, reason: str, step_id: str | None = None) -> bool:
        """Audit a refused request; False when it was not recorded.

        Anyone in the channel can be refused, so refusals are rate-limited per person and chain
        (``REFUSALS_PER_PERSON`` a minute): a flood of refused commands cannot grow the log without bound.
        """
        chain = run_id or "-"
        since = utcnow() - timedelta(seconds=REFUSAL_WINDOW_S)
        with self.store.read_session() as s:
            recent = s.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.run_id == chain,
                    AuditEvent.actor == user,
                    AuditEvent.event == "refused",
                    AuditEvent.at >= since,
                )
            )
        if (recent or 0) >= REFUSALS_PER_PERSON:
            log.info("not auditing another refusal of %s by %s (%d in the last minute)", action, user, recent)
            return False
        audit.record(self.store, chain, user, "refused", step_id=step_id, detail={"action": action, "reason": reason})
        return True

    def check_reveal(self, run_id: str, step_id: str, user: str) -> None:
        """May ``user`` be shown the one-time passwords of ``step_id`` now? (spec v3 §3)

        Only an approver, only for the current step of an active run, and at most
        ``REVEALS_PER_PERSON`` times in ``REVEAL_WINDOW_S`` per person (counted in the audit log,
        so across replicas and restarts).
        """
        policy.check_approver(self.config.slack, user, self.group_members)
        view = self._check_current(run_id, step_id)
        if not view.step(step_id).step.spec.otp:
            raise UsageError(f"Step {step_id} needs no one-time password.")
        since = self.clock() - timedelta(seconds=REVEAL_WINDOW_S)
        with self.store.read_session() as s:
            recent = s.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.event == "otp.revealed", AuditEvent.actor == user, AuditEvent.at >= since)
            )
        if (recent or 0) >= REVEALS_PER_PERSON:
            raise PermissionDenied(
                f"You have been shown {recent} one-time passwords in the last {REVEAL_WINDOW_S // 60} minutes; "
                "that is the limit. Ask another approver, or wait."
            )

    def audit_reveal(self, run_id: str, step_id: str, user: str, hosts: list[str]) -> None:
        """Record that ``user`` was shown the one-time passwords of ``hosts`` (never the values)."""
        audit.record(self.store, run_id, user, "otp.revealed", step_id=step_id, detail={"hosts": hosts})
