"""What the worker does at start-up: steps found running are probed and settled, or left to people; nothing re-runs."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from actions.base import StepContext
from actions.registry import action_for
from bot.errors import ExecutionError
from bot.runs.machine import FINISHED_STEP_STATES
from bot.runs.service import RunService
from bot.runs.snapshot import WHOLE, RunView

log = logging.getLogger(__name__)


class Restart:
    """The worker's recovery half (a mixin of Worker); what it finds is recorded by the service (recovery.py)."""

    service: RunService
    notify: Callable[[str, str], None]
    _guard: threading.Lock
    _timers: list[threading.Timer]

    if TYPE_CHECKING:  # provided by Worker (bot/runs/worker.py)

        def context(self, view: RunView) -> StepContext: ...

        def kick(self, run_id: str) -> Future[None] | None: ...

    def _reclaim_messages(self, run_id: str) -> None:
        """Step messages a dead process claimed but never posted are handed back (and posted by the next sync)."""
        wait = self.service.release_stale_message_claims(run_id)
        if wait is not None:
            timer = threading.Timer(wait + 0.2, self.kick, args=(run_id,))
            timer.daemon = True
            with self._guard:
                self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()

    def recover(self) -> list[str]:
        """Start-up: running steps become unknown; each probe decides or people are asked. Nothing re-runs."""
        active = self.service.active_run()
        if active is not None:
            self._reclaim_messages(active.id)
        crashed: dict[tuple[str, str], list[str]] = {}
        for run_id, step_id, target in self.service.mark_crashed():
            crashed.setdefault((run_id, step_id), []).append(target)
        messages: list[str] = []
        for (run_id, step_id), targets in crashed.items():
            view = self.service.view(run_id)
            sv = view.step(step_id)
            action = action_for(sv.step.action)
            ctx = self.context(view)
            keys = [t for t in targets if t != WHOLE] if sv.targets else [WHOLE]
            for key in keys:
                chosen = [t for t in sv.step.targets if key == WHOLE or t.key == key]
                why = ""
                try:
                    answers = [action.probe(ctx, sv.step, t) for t in chosen]
                except Exception as exc:  # any failure of the probe: people decide, never re-run blindly
                    answers = [None]
                    if isinstance(exc, ExecutionError):
                        why = f"its read-only check failed: {exc}"
                    else:
                        ref = uuid.uuid4().hex[:8]
                        log.error("%s %s: probe failed, reference %s", run_id, step_id, ref, exc_info=exc)
                        why = f"its read-only check failed: unexpected {type(exc).__name__}, reference {ref}"
                    self.service.probe_failed(run_id, step_id, key, why)
                labels = ", ".join(t.label for t in chosen)
                if answers and all(a is True for a in answers):
                    self.service.probe_resolved(run_id, step_id, key, evidence=f"{sv.step.action} checked on {labels}")
                    messages.append(f"{run_id} {step_id}{' ' + key if key else ''}: effect in place; marked done")
                else:
                    why = why or (
                        f"its read-only check found the effect not in place on {labels}"
                        if any(a is False for a in answers)
                        else "no read-only check can tell whether it happened"
                    )
                    self.service.needs_people(run_id, step_id, key, why)
                    messages.append(
                        f"{run_id} {step_id}{' ' + key if key else ''}: outcome unknown ({why}); people decide"
                    )
            if sv.targets:
                fresh = self.service.view(run_id).step(step_id)
                if all(r.state in FINISHED_STEP_STATES for r in fresh.targets.values()):
                    self.service.probe_resolved(run_id, step_id, WHOLE)
            self.notify(run_id, f"step {step_id} recovered after a restart")
        return messages
