"""Writes that are not state transitions: the run's Slack thread, who posts each step's message, recorded facts."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import sqlalchemy as sa

from bot.errors import StateConflict
from bot.runs.reads import RunReads
from bot.runs.snapshot import WHOLE
from bot.store import audit
from bot.store.db import changed_rows
from bot.store.models import Run, StepRun

log = logging.getLogger(__name__)

POSTING = "posting:"  # message_ts while one process posts the step's message (followed by the claim time)
MESSAGE_CLAIM_LEASE_S = 10.0  # a claim to post that old was left by a process that died


class Bookkeeping(RunReads):
    """The run's thread, step message claims (leases) and facts, each by compare-and-set."""

    def set_thread(self, run_id: str, channel: str, thread_ts: str) -> None:
        with self._run_session(run_id) as s:
            s.execute(
                sa.update(Run)
                .where(Run.id == run_id, Run.thread_ts.is_(None))
                .values(channel=channel, thread_ts=thread_ts)
            )

    def claim_message(self, run_id: str, step_id: str) -> bool:
        """Only one process posts a step's message: whoever moves message_ts from empty to 'posting:<time>'.

        The time makes the claim a lease: a process that died between claiming and storing the
        message's ts leaves a claim that ``release_stale_message_claims`` hands back later.
        """
        with self._run_session(run_id) as s:
            return (
                changed_rows(
                    s,
                    sa.update(StepRun)
                    .where(
                        StepRun.run_id == run_id,
                        StepRun.step_id == step_id,
                        StepRun.target == WHOLE,
                        StepRun.message_ts.is_(None),
                    )
                    .values(message_ts=f"{POSTING}{time.time():.3f}"),
                )
                == 1
            )

    def release_stale_message_claims(self, run_id: str, *, lease_s: float = MESSAGE_CLAIM_LEASE_S) -> float | None:
        """Hand back claims to post a step message that are older than ``lease_s`` (their poster died).

        Returns how many seconds until the youngest remaining claim goes stale, or None when none remain.
        """
        now = time.time()
        with self._run_session(run_id) as s:
            rows = list(
                s.scalars(
                    sa.select(StepRun).where(
                        StepRun.run_id == run_id, StepRun.target == WHOLE, StepRun.message_ts.like(f"{POSTING}%")
                    )
                )
            )
        remaining: list[float] = []
        for row in rows:
            claimed = _claim_time(row.message_ts or "")
            if now - claimed < lease_s:
                remaining.append(claimed + lease_s - now)
                continue
            with self._run_session(run_id) as s:
                released = changed_rows(
                    s,
                    sa.update(StepRun)
                    .where(StepRun.id == row.id, StepRun.message_ts == row.message_ts)
                    .values(message_ts=None),
                )
                if released == 1:
                    audit.append(
                        s,
                        run_id,
                        "bot",
                        "message.reclaimed",
                        step_id=row.step_id,
                        detail={"reason": "the process posting this step's message stopped before it was stored"},
                    )
        return min(remaining) if remaining else None

    def release_message_claim(self, run_id: str, step_id: str) -> None:
        """Slack refused the step's message: hand the claim back so that a later pass may post it again."""
        with self._run_session(run_id) as s:
            s.execute(
                sa.update(StepRun)
                .where(
                    StepRun.run_id == run_id,
                    StepRun.step_id == step_id,
                    StepRun.target == WHOLE,
                    StepRun.message_ts.like(f"{POSTING}%"),
                )
                .values(message_ts=None)
            )

    def set_message_ts(self, run_id: str, step_id: str, ts: str) -> None:
        with self._run_session(run_id) as s:
            s.execute(
                sa.update(StepRun)
                .where(StepRun.run_id == run_id, StepRun.step_id == step_id, StepRun.target == WHOLE)
                .values(message_ts=ts)
            )

    def record_fact(self, run_id: str, key: str, value: Any) -> None:
        for _ in range(20):
            with self._run_session(run_id) as s:
                run = s.get(Run, run_id)
                if run is None:
                    return
                old = run.facts
                facts = json.loads(old or "{}")
                facts[key] = value
                moved = changed_rows(
                    s,
                    sa.update(Run)
                    .where(Run.id == run_id, Run.facts == old)
                    .values(facts=json.dumps(facts, sort_keys=True)),
                )
            if moved == 1:
                return
        raise StateConflict("could not record a fact of the run (too many concurrent writers)")


def _claim_time(message_ts: str) -> float:
    try:
        return float(message_ts[len(POSTING) :])
    except ValueError:
        return 0.0  # a claim from before claims carried their time: stale
