"""A fan-out step's targets: each approved, claimed and run on its own thread, with paced progress notes."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from actions.base import Outcome, StepContext
from actions.registry import action_for
from bot.errors import ExecutionError
from bot.runs.machine import FINISHED_STEP_STATES, StepState
from bot.runs.recording import RecordingExecutor, finished_detail
from bot.runs.runbook import ResolvedStep, Target
from bot.runs.service import RunService
from bot.runs.snapshot import StepView

Notify = Callable[[str, str], None]  # (run_id, what happened) -> the presenter updates Slack
PROGRESS_INTERVAL_S = 0.5  # a fan-out step's card shows finished targets at most this often


class FanOut:
    """The worker's fan-out half (a mixin of Worker): targets in parallel, each its own claim and result."""

    service: RunService
    executor: RecordingExecutor
    notify: Notify
    _targets: ThreadPoolExecutor

    if TYPE_CHECKING:  # provided by Worker (bot/runs/worker.py)

        def _intent(self, sv: StepView, target: Target | None) -> dict[str, Any]: ...

        @staticmethod
        def _facts_at_rest(outcome: Outcome) -> dict[str, Any]: ...

        def _settle_unexpected(
            self, run_id: str, step: ResolvedStep, target: str, exc: Exception, started: float, *, on: str | None = None
        ) -> str: ...

    def _run_fanout(self, ctx: StepContext, run_id: str, sv: StepView, targets: list[Target], started: float) -> None:
        """Run a fan-out step's targets in parallel, then finish the step from what its targets ended as."""
        step = sv.step
        futures = {t.key: self._targets.submit(self._run_target, ctx, run_id, sv, t) for t in targets}
        self._await_targets(run_id, step.id, list(futures.values()))
        errors = [e for e in (f.result() for f in futures.values()) if e]
        fresh = self.service.view(run_id).step(step.id)
        bad = [k for k, r in fresh.targets.items() if r.state not in FINISHED_STEP_STATES]
        ok = not bad
        error = None if ok else "; ".join(errors) or f"targets not done: {', '.join(bad)}"
        self.service.finish(
            run_id,
            step.id,
            ok=ok,
            error=error,
            duration_s=time.monotonic() - started,
            result={"targets": {k: r.state for k, r in fresh.targets.items()}},
        )

    def _await_targets(self, run_id: str, step_id: str, futures: list[Future[str | None]]) -> None:
        """Wait for a fan-out step's targets; show their progress at most every PROGRESS_INTERVAL_S.

        One notification per interval from this (the step's) thread, not one per finished target from
        the target threads: each notification re-reads the run and re-renders its cards, and the
        target threads keep to their hosts.
        """
        pending: set[Future[str | None]] = set(futures)
        shown = 0
        while pending:
            _done, pending = wait(pending, timeout=PROGRESS_INTERVAL_S, return_when=FIRST_COMPLETED)
            finished = len(futures) - len(pending)
            if pending and finished > shown:
                self.notify(run_id, f"step {step_id}: {finished} of {len(futures)} targets finished")
                shown = finished
                wait(pending, timeout=PROGRESS_INTERVAL_S)  # pace: at most one progress note per interval

    def _targets_to_run(self, sv: StepView) -> list[Target]:
        if not sv.targets:
            return list(sv.step.targets)
        wanted = {k for k, r in sv.targets.items() if r.state in (StepState.APPROVED, StepState.AWAITING_APPROVAL)}
        return [t for t in sv.step.targets if t.key in wanted]

    def _run_target(self, ctx: StepContext, run_id: str, sv: StepView, target: Target) -> str | None:
        """One target of a fan-out step; returns its error (None when it succeeded or was not ours)."""
        started = time.monotonic()
        try:
            return self._run_target_claimed(ctx, run_id, sv, target, started)
        except Exception as exc:  # the target must not stay running: it ends failed or unknown
            return f"{target.key}: {self._settle_unexpected(run_id, sv.step, target.key, exc, started)}"

    def _run_target_claimed(
        self, ctx: StepContext, run_id: str, sv: StepView, target: Target, started: float
    ) -> str | None:
        step = sv.step
        # Approval (a retried target is already approved), claim and intent: one transaction.
        if not self.service.claim_target(run_id, step.id, target.key, intent=self._intent(sv, target), approve=True):
            return None
        with self.executor.recording() as noted:
            try:
                outcome = action_for(step.action).run(ctx, step, target)
            except ExecutionError as exc:
                duration = time.monotonic() - started
                self.service.finish(
                    run_id,
                    step.id,
                    ok=False,
                    error=str(exc),
                    target=target.key,
                    duration_s=duration,
                    execution=finished_detail(False, exc, noted, duration),
                )
                return f"{target.key}: {exc}"
        result = {"summary": outcome.summary, **outcome.result}
        duration = time.monotonic() - started
        self.service.finish(
            run_id,
            step.id,
            ok=True,
            target=target.key,
            duration_s=duration,
            result=result,
            execution=finished_detail(True, result, noted, duration),
            facts=self._facts_at_rest(outcome),
        )
        return None  # progress is shown by _await_targets
