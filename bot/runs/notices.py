"""Reminders, escalations and nudges as the audit log records them: written and counted here, never by the scheduler."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from bot.runs.reads import RunReads
from bot.store import audit
from bot.store.models import AuditEvent


class Notices(RunReads):
    """The scheduler sends; the service records what was sent (its audit event) and says what was sent before."""

    def record_notice(self, run_id: str, step_id: str, what: str, detail: dict[str, Any]) -> None:
        """Record one reminder, escalation or nudge sent about ``step_id`` (``what`` is its audit event)."""
        audit.record(self.store, run_id, "bot", what, step_id=step_id, detail=detail)

    def notices_sent(self, run_id: str, step_id: str, kinds: list[str]) -> list[dict[str, Any]]:
        """The details of every notice of ``kinds`` sent about ``step_id``, oldest first (survives restarts)."""
        with self.store.read_session() as s:
            details = s.scalars(
                sa.select(AuditEvent.detail)
                .where(AuditEvent.run_id == run_id, AuditEvent.step_id == step_id, AuditEvent.event.in_(kinds))
                .order_by(AuditEvent.seq)
            ).all()
        return [dict(json.loads(raw or "{}")) for raw in details]
