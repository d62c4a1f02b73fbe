"""Executes approved steps off the request thread and moves each run forward to its next step."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from actions import settings_xml
from actions.base import Outcome, StepContext
from actions.guid import check_guid_unchanged, guid_at_rest, guid_fact
from actions.reads import read_settings
from actions.registry import action_for
from actions.storage_platform_db import StoragePlatformDb
from bot.errors import ExecutionError, StateConflict, UsageError
from bot.runs import policy
from bot.runs.fanout import FanOut, Notify
from bot.runs.machine import RunState, StepState
from bot.runs.recording import RecordingExecutor, finished_detail
from bot.runs.restart import Restart
from bot.runs.rules import bot_executes
from bot.runs.runbook import ResolvedStep, Target
from bot.runs.service import WHOLE, RunService, RunView, StepView

log = logging.getLogger(__name__)


class Worker(FanOut, Restart):
    """One background worker per process. ``kick(run_id)`` is cheap and idempotent."""

    def __init__(
        self,
        service: RunService,
        executor: Any,
        *,
        notify: Notify | None = None,
        database: Callable[[str], StoragePlatformDb] | None = None,
        max_parallel_targets: int = 64,
    ) -> None:
        self.service = service
        self.executor = executor if isinstance(executor, RecordingExecutor) else RecordingExecutor(executor)
        self.notify = notify or (lambda run_id, what: None)
        self.database = database or (lambda site: StoragePlatformDb.of_site(service.config.sites[site]))
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="run")
        self._targets = ThreadPoolExecutor(max_workers=max_parallel_targets, thread_name_prefix="target")
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._guard = threading.Lock()
        self._timers: list[threading.Timer] = []

    def close(self) -> None:
        with self._guard:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._targets.shutdown(wait=True)

    # ------------------------------------------------------------------ scheduling

    def kick(self, run_id: str) -> Future[None] | None:
        """Advance ``run_id`` in the background; a kick while it is advancing makes it look again."""
        with self._guard:
            if run_id in self._busy:
                self._again.add(run_id)
                return None
            self._busy.add(run_id)
        try:
            return self._pool.submit(self._advance_loop, run_id)
        except RuntimeError:  # shutting down
            with self._guard:
                self._busy.discard(run_id)
            return None

    def _advance_loop(self, run_id: str) -> None:
        while True:
            try:
                self.advance(run_id)
            except Exception:  # keep the worker alive; the error is logged with its run
                log.exception("advancing run %s failed", run_id)
            with self._guard:  # decide and release under one lock, so no kick is lost
                if run_id in self._again:
                    self._again.discard(run_id)
                    continue
                self._busy.discard(run_id)
                return

    # ------------------------------------------------------------------ the run loop

    def context(self, view: RunView) -> StepContext:
        return StepContext(
            config=self.service.config,
            executor=self.executor,
            site=view.run.site,
            partner=view.run.partner,
            facts=self._facts(view),
            database=self.database,
            scope=view.run.scope,
            pairs=view.plan.pairs,
        )

    def _facts(self, view: RunView) -> dict[str, Any]:
        facts = dict(json.loads(view.run.facts or "{}"))
        if view.run.direction == "failback":
            previous = self.service.last_completed_failover(view.run.site)
            if previous is not None:
                for k, v in json.loads(previous.facts or "{}").items():
                    facts.setdefault(f"failover:{k}", v)
        return facts

    def advance(self, run_id: str) -> None:
        """Post the next step, run what needs no person, and stop where people must act."""
        self._reclaim_messages(run_id)
        for _ in range(500):  # bounded: a run has far fewer steps
            view = self.service.view(run_id)
            if view.run.state != RunState.ACTIVE:
                return
            current = view.current
            if current is None:
                if self.service.complete_if_done(run_id):
                    self.notify(run_id, "completed")
                return
            if current.state == StepState.PENDING:
                self._post(view, current)
                continue
            if current.state == StepState.APPROVED and bot_executes(current.step):
                self.execute(view, current)
                continue
            return  # waiting on people (approval, Done, Retry, Mark done)

    def _condition_holds(self, view: RunView, sv: StepView) -> tuple[bool, str]:
        when = sv.step.spec.when
        if not when:
            return True, ""
        facts = self._facts(view)
        if "step" in when:
            got = facts.get(f"outcome:{when['step']}")
            wanted = when.get("outcome")
            return got == wanted, f"not needed: {when['step']} found {got or 'nothing to do'}"
        if "fact" in when:
            key = when["fact"]
            value = facts.get(key, facts.get(f"failover:{key}"))
            if "not_equals" in when:
                return value != when["not_equals"], f"not needed: the failover recorded {key} = {value}"
            want = when.get("equals", True)
            holds = value == want if not isinstance(want, bool) else bool(value) == want
            return holds, f"not needed: {key} was not recorded"
        return True, ""

    def _settled_before(self, view: RunView, sv: StepView) -> str | None:
        """F1–F3 when F0 found AS_S promoted before: why the step is already in place, or None (spec v3 §2)."""
        step = sv.step
        if not step.params.get("settled_if_promoted") or self._facts(view).get("promoted_before") != "yes":
            return None
        ctx = self.context(view)
        target = step.targets[0]
        try:
            if step.params.get("expect_slave"):  # "stop the Slave": there is no Slave to stop any more
                host = ctx.host(target.host or "")
                promoted = settings_xml.read_is_slave(read_settings(ctx, host).content) is not True
                return f"{host.name} is no longer a Slave (promoted before)" if promoted else None
            in_place = action_for(step.action).probe(ctx, step, target)
        except ExecutionError:
            return None
        return f"already in place on {target.label} (promoted before)" if in_place else None

    def _post(self, view: RunView, sv: StepView) -> None:
        holds, why = self._condition_holds(view, sv)
        if holds:
            settled = self._settled_before(view, sv)
            if settled:
                holds, why = False, f"not needed: {settled}"
        if not holds:
            try:
                self.service.not_needed(view.run.id, sv.step.id, why)
            except StateConflict:
                return
            self.notify(view.run.id, f"step {sv.step.id} not needed")
            return
        preview = self.preview(view, sv.step)
        fp = policy.fingerprint(sv.step.id, [t.key for t in sv.step.targets], sv.step.spec.params, preview)
        pending = [key for key, trow in sv.targets.items() if trow.state == StepState.PENDING]
        try:
            self.service.post(view.run.id, sv.step.id, fingerprint=fp, preview=preview, targets=pending)
        except StateConflict:
            return  # another worker or replica posted it
        self.notify(view.run.id, f"step {sv.step.id} posted")

    def preview(self, view: RunView, step: ResolvedStep) -> str:
        """What the step will do, concrete; read-only. A failure to read is shown, not raised."""
        action = action_for(step.action)
        ctx = self.context(view)
        parts = []
        for target in step.targets:
            try:
                text = action.preview(ctx, step, target)
            except ExecutionError as exc:
                text = f"{target.label}: cannot be previewed now: {exc}"
            except Exception as exc:  # shown, not raised: the step is still posted and people decide
                log.exception("%s %s: preview of %s failed", view.run.id, step.id, target.label)
                text = f"{target.label}: cannot be previewed now: unexpected {type(exc).__name__} (see the bot's log)"
            if text:
                parts.append(text)
        return "\n".join(parts)

    def execute(self, view: RunView, sv: StepView) -> None:
        """Run an approved step: fingerprint check, write-ahead claim, the action per target, the result."""
        run_id, step = view.run.id, sv.step
        if sv.needed > 0:
            preview = self.preview(view, step)
            fp = policy.fingerprint(step.id, [t.key for t in step.targets], step.spec.params, preview)
            if fp != sv.row.fingerprint:
                try:
                    self.service.void(
                        run_id,
                        step.id,
                        fingerprint=fp,
                        preview=preview,
                        why="what the step will do changed since it was approved",
                    )
                except StateConflict:
                    return
                self.notify(run_id, f"step {step.id} changed; approvals void")
                return
        with self.service.executing(run_id, step.id) as mine:
            if not mine:
                log.info("%s %s is being executed by another process; not here", run_id, step.id)
                return
            self._execute_claimed(view, sv)

    def _intent(self, sv: StepView, target: Target | None) -> dict[str, Any]:
        """What is about to be done, written ahead of the first remote call (``execution.started``)."""
        step = sv.step
        return {
            "action": step.action,
            "kind": step.kind,
            "risk": step.risk,
            "title": step.title,
            "host": target.host if target is not None else None,
            "attempt": sv.row.attempt,
            "approved_by": list(sv.approvers),
            "approved_fingerprint": sv.row.fingerprint,
            "preview": (sv.row.preview or "")[:2000],
        }

    def _execute_claimed(self, view: RunView, sv: StepView) -> None:
        run_id, step = view.run.id, sv.step
        targets = self._targets_to_run(sv)
        whole = None if sv.targets else step.targets[0]
        intent = self._intent(sv, whole) if whole is not None else None
        host = whole.host if whole is not None else None
        if not self.service.claim(run_id, step.id, [t.key for t in targets], intent=intent, on=host):
            log.info("%s %s was claimed by another worker; not run here", run_id, step.id)
            return
        self.notify(run_id, f"step {step.id} running")
        started = time.monotonic()
        try:
            self._run_claimed(view, sv, targets, whole, started)
        except Exception as exc:  # whatever it was, the step must not stay running: people decide
            self._settle_unexpected(run_id, step, WHOLE, exc, started, on=host)
            self.notify(run_id, f"step {step.id} failed")
            return
        self.notify(run_id, f"step {step.id} finished")

    def _run_claimed(
        self, view: RunView, sv: StepView, targets: list[Target], whole: Target | None, started: float
    ) -> None:
        run_id, step = view.run.id, sv.step
        ctx = self.context(view)
        if whole is None:
            self._run_fanout(ctx, run_id, sv, targets, started)
            return
        outcome: Outcome | None = None
        failure: ExecutionError | None = None
        with self.executor.recording() as noted:
            try:
                outcome = action_for(step.action).run(ctx, step, whole)
            except ExecutionError as exc:
                failure = exc
        duration = time.monotonic() - started
        if failure is not None:
            self.service.finish(
                run_id,
                step.id,
                ok=False,
                error=str(failure),
                duration_s=duration,
                execution=finished_detail(False, failure, noted, duration),
                on=whole.host,
            )
            return
        assert outcome is not None
        result = {"summary": outcome.summary, **outcome.result}
        self.service.finish(
            run_id,
            step.id,
            ok=True,
            result=result,
            duration_s=duration,
            execution=finished_detail(True, result, noted, duration),
            on=whole.host,
            facts=self._facts_at_rest(outcome),
        )

    def _settle_unexpected(
        self, run_id: str, step: ResolvedStep, target: str, exc: Exception, started: float, *, on: str | None = None
    ) -> str:
        """An error that is not an ExecutionError (a bug, a host answering nonsense, the database failing while
        the result was recorded): the step (or target) ends failed — unknown when it changes things, since a
        change may have happened — with a reference id that leads to the traceback in the log."""
        ref = uuid.uuid4().hex[:8]
        log.error(
            "%s %s%s: unexpected error, reference %s",
            run_id,
            step.id,
            f" {target}" if target else "",
            ref,
            exc_info=exc,
        )
        message = f"unexpected error on the bot's side ({type(exc).__name__}); reference {ref} in the bot's log"
        duration = time.monotonic() - started
        try:
            self.service.finish(
                run_id,
                step.id,
                ok=False,
                error=message,
                target=target,
                duration_s=duration,
                execution=finished_detail(False, message, [], duration),
                on=on,
                in_doubt=step.risk != "read",
            )
        except StateConflict:
            log.info("%s %s%s was settled meanwhile (reference %s)", run_id, step.id, target, ref)
        except Exception:  # the database itself is failing: the start-up recovery settles it later
            log.exception("%s %s: could not record the unexpected error %s", run_id, step.id, ref)
        return message

    @staticmethod
    def _facts_at_rest(outcome: Outcome) -> dict[str, Any]:
        """What a step found, as it is kept: a ServerGuid is a one-time password, never kept whole."""
        return {
            key: guid_at_rest(str(value)) if key.startswith(guid_fact("")) else value
            for key, value in outcome.facts.items()
        }

    def one_time_passwords(self, run_id: str, step_id: str) -> dict[str, str]:
        """Host name -> OTP (first eight characters of its ServerGuid) for a step that needs one."""
        view = self.service.view(run_id)
        step = view.step(step_id).step
        if not step.spec.otp:
            raise UsageError(f"Step {step_id} needs no one-time password.")
        ctx = self.context(view)
        hosts = [t.values["otp_host"] for t in step.targets if "otp_host" in t.values]
        out: dict[str, str] = {}
        for name in dict.fromkeys(hosts):  # read from the host now: only masked GUIDs and hashes are kept
            guid = settings_xml.read_server_guid(read_settings(ctx, ctx.host(name)).content)
            check_guid_unchanged(name, guid, ctx.facts.get(guid_fact(name)))
            out[name] = settings_xml.otp_from_guid(guid)
        return out

    # ------------------------------------------------------------------ after a crash
