"""Reminders about steps that wait on people: the scheduler (reminders.py) and its jobs by id (jobs.py)."""

from __future__ import annotations

from bot.scheduling.jobs import JOBS, Nag, job_id, live_reminders, nudge_wait_step, remind_approvers, run_of
from bot.scheduling.reminders import (
    Reminders,
    escalation_text,
    nudge_text,
    reminder_text,
    waited_for,
    waiting_since,
)

__all__ = [
    "JOBS",
    "Nag",
    "Reminders",
    "escalation_text",
    "job_id",
    "live_reminders",
    "nudge_text",
    "nudge_wait_step",
    "remind_approvers",
    "reminder_text",
    "run_of",
    "waited_for",
    "waiting_since",
]
