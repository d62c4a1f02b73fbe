"""Retention of the Slack deliveries already handled (the idempotency keys of retried requests and double clicks)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from bot.store.db import Store, changed_rows, utcnow
from bot.store.models import ProcessedDelivery

DELIVERY_RETENTION = timedelta(days=1)  # how long a handled Slack delivery is remembered (retries come in minutes)


def forget_old(store: Store, now: datetime | None = None) -> int:
    """Delete the keys older than ``DELIVERY_RETENTION``: Slack retries within minutes, so a day is ample."""
    before = (now or utcnow()) - DELIVERY_RETENTION
    with store.session() as s:
        return changed_rows(s, sa.delete(ProcessedDelivery).where(ProcessedDelivery.created_at < before))
