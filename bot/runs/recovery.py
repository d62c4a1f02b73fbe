"""After a restart: steps found running become unknown; a probe's answer or people settle them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from bot.errors import StateConflict
from bot.runs.machine import (
    RunState,
    StepEvent,
    StepState,
)
from bot.runs.snapshot import WHOLE
from bot.runs.transitions import Transitions
from bot.store import audit, locks
from bot.store.models import Run, StepRun

log = logging.getLogger(__name__)


class Recovery(Transitions):
    """The service side of crash recovery: the execution lock, mark_crashed and what the probes found."""

    def probe_resolved(self, run_id: str, step_id: str, target: str = WHOLE, *, evidence: str = "") -> None:
        """After a restart: the step's read-only probe found its effect in place; it is done, not run again."""
        summary = (
            "The bot restarted while this step was running. Its read-only check found the effect in place"
            + (f" ({evidence})" if evidence else "")
            + ", so it is marked done without running it again."
        )
        self.transition(
            run_id,
            step_id,
            StepEvent.PROBE_IN_PLACE,
            "bot",
            target=target,
            detail={"reason": "after a restart, the probe found the effect in place", "evidence": evidence},
            values={"result": json.dumps({"summary": summary}), "error": None},
        )

    def needs_people(self, run_id: str, step_id: str, target: str, why: str) -> None:
        """After a restart: the probe could not show the effect in place; people decide (Retry / Mark done)."""
        audit.record(
            self.store,
            run_id,
            "bot",
            "recovery.ask_people",
            step_id=step_id,
            target=target or None,
            detail={"why": why},
        )

    def probe_failed(self, run_id: str, step_id: str, target: str, why: str) -> None:
        """After a restart: the step's read-only probe itself failed (people decide; nothing is re-run)."""
        audit.record(
            self.store, run_id, "bot", "probe.failed", step_id=step_id, target=target or None, detail={"error": why}
        )

    @contextmanager
    def executing(self, run_id: str, step_id: str) -> Iterator[bool]:
        """Held by the process that executes ``step_id``: False when another live process holds it (locks.py)."""
        with locks.execution_lock(self.store, run_id, step_id) as mine:
            yield mine

    def mark_crashed(self) -> list[tuple[str, str, str]]:
        """At start-up: every step found running becomes unknown. Returns (run, step, target) triples."""
        found: list[tuple[str, str, str]] = []
        with self.store.session() as s:
            rows = list(
                s.scalars(
                    sa.select(StepRun)
                    .join(Run, Run.id == StepRun.run_id)
                    .where(Run.state == RunState.ACTIVE, StepRun.state == StepState.RUNNING)
                )
            )
        by_step: dict[tuple[str, str], list[StepRun]] = {}
        for r in rows:
            by_step.setdefault((r.run_id, r.step_id), []).append(r)
        for (run_id, step_id), group in by_step.items():
            with self.executing(run_id, step_id) as nobody_else:
                if not nobody_else:
                    log.info("%s %s is running in another live process; left alone", run_id, step_id)
                    continue
                for r in sorted(group, key=lambda r: r.target != WHOLE):
                    try:
                        self.transition(
                            r.run_id,
                            r.step_id,
                            StepEvent.CRASH,
                            "bot",
                            target=r.target,
                            detail={"reason": "the bot restarted while this was running"},
                        )
                        found.append((r.run_id, r.step_id, r.target))
                    except StateConflict:
                        continue
        return found
