"""The scheduler's jobs by id: what each job is, which process's Reminders runs it, and the job functions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from apscheduler.job import Job

if TYPE_CHECKING:
    from bot.scheduling.reminders import Reminders

log = logging.getLogger(__name__)


class Nag(StrEnum):
    """What a scheduled job sends; also the audit event it records and the first part of the job id."""

    REMINDER = "reminder"
    ESCALATION = "escalation"
    NUDGE = "nudge"


def job_id(kind: str, run_id: str, step_id: str, attempt: int) -> str:
    """Deterministic job ids, e.g. ``remind:FO-1:F2:0``; a re-schedule replaces, never duplicates."""
    return f"{kind}:{run_id}:{step_id}:{attempt}"


def run_of(job: Job) -> str:
    return str(job.id).split(":")[1]


_registry: dict[str, Reminders] = {}  # database -> the Reminders of this process that leads its jobs
_registry_lock = threading.Lock()
_bound = threading.local()  # the scheduler's pool threads (and tick) know their own Reminders


def _bind(reminders: Reminders | None) -> None:
    _bound.reminders = reminders


def live_reminders() -> Reminders | None:
    """The Reminders whose scheduler runs this job: the thread's own, else this process's only leader."""
    own: Reminders | None = getattr(_bound, "reminders", None)
    if own is not None:
        return own
    with _registry_lock:
        leaders = list(_registry.values())
    return leaders[0] if len(leaders) == 1 else None


def remind_approvers(run_id: str, step_id: str, attempt: int) -> str | None:
    """Scheduled job: remind the approvers of a step still waiting; escalate to the channel once after enough."""
    return _fire("remind", run_id, step_id, attempt)


def nudge_wait_step(run_id: str, step_id: str, attempt: int) -> str | None:
    """Scheduled job: ask whether what a wait step waits for has happened yet."""
    return _fire("nudge", run_id, step_id, attempt)


def _fire(kind: str, run_id: str, step_id: str, attempt: int) -> str | None:
    reminders = live_reminders()
    if reminders is None:
        log.warning("no reminders scheduler is live here; skipped %s", job_id(kind, run_id, step_id, attempt))
        return None
    return reminders.fire(kind, run_id, step_id, attempt)


JOBS: dict[str, Callable[[str, str, int], str | None]] = {"remind": remind_approvers, "nudge": nudge_wait_step}
