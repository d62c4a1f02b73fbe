"""Time as the bot stores it: always UTC, and naive values read back (SQLite) taken as UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored time as UTC (SQLite hands back naive datetimes; everything stored is UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
