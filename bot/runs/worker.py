"""Executes approved steps off the request thread and moves each run forward to its next step."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from actions import settings_xml
from actions.base import Outcome, StepContext
from actions.guid import check_guid_unchanged, guid_at_rest, guid_fact
from actions.reads import read_settings
from actions.registry import action_for
from actions.storage_platform_db import StoragePlatformDb
from bot.config import Host
from bot.errors import ExecutionError, StateConflict, UsageError
from bot.runs import policy
from bot.runs.machine import FINISHED_STEP_STATES, RunState, StepState
from bot.runs.rules import bot_executes
from bot.runs.runbook import ResolvedStep, Target
from bot.runs.service import WHOLE, RunService, RunView, StepView
from bot.store import audit

log = logging.getLogger(__name__)

Notify = Callable[[str, str], None]  # (run_id, what happened) -> the presenter updates Slack
PROGRESS_INTERVAL_S = 0.5  # a fan-out step's card shows finished targets at most this often


def output_digest(value: Any) -> str:
    """SHA-256 of what an execution returned, secrets masked first (the digest never hides a secret)."""
    return hashlib.sha256(audit.canonical({"output": audit.scrub(value)}).encode("utf-8")).hexdigest()


class RecordingExecutor:
    """The executor as the worker uses it: while a step executes, each remote operation it performs is noted
    (host, operation, exit status, digest of the output) for the step's ``execution.finished`` audit event.
    Previews and probes run outside ``recording()`` and are not noted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._local = threading.local()

    def run(self, host: Host, op: str, data: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        noted: list[dict[str, Any]] | None = getattr(self._local, "noted", None)
        started = time.monotonic()
        try:
            result: dict[str, Any] = self.inner.run(host, op, data, timeout_s=timeout_s)
        except ExecutionError as exc:
            if noted is not None:
                noted.append(
                    {
                        "host": host.name,
                        "op": op,
                        "ok": False,
                        "exit_status": None,
                        "error": str(exc),
                        "error_kind": type(exc).__name__,
                        "output_sha256": output_digest(str(exc)),
                        "duration_s": round(time.monotonic() - started, 3),
                    }
                )
            raise
        if noted is not None:
            noted.append(
                {
                    "host": host.name,
                    "op": op,
                    "ok": True,
                    "exit_status": 0,  # the executor returns only results of scripts that exited 0
                    "output_sha256": output_digest(result),
                    "duration_s": round(time.monotonic() - started, 3),
                }
            )
        return result

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        """Note the remote operations this thread performs until the block ends."""
        noted: list[dict[str, Any]] = []
        self._local.noted = noted
        try:
            yield noted
        finally:
            self._local.noted = None

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Worker:
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
                execution=_finished(False, failure, noted, duration),
                on=whole.host,
            )
            return
        assert outcome is not None
        self._record(run_id, outcome)
        result = {"summary": outcome.summary, **outcome.result}
        self.service.finish(
            run_id,
            step.id,
            ok=True,
            result=result,
            duration_s=duration,
            execution=_finished(True, result, noted, duration),
            on=whole.host,
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
                execution=_finished(False, message, [], duration),
                on=on,
                in_doubt=step.risk != "read",
            )
        except StateConflict:
            log.info("%s %s%s was settled meanwhile (reference %s)", run_id, step.id, target, ref)
        except Exception:  # the database itself is failing: the start-up recovery settles it later
            log.exception("%s %s: could not record the unexpected error %s", run_id, step.id, ref)
        return message

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
                    execution=_finished(False, exc, noted, duration),
                )
                return f"{target.key}: {exc}"
        self._record(run_id, outcome)
        result = {"summary": outcome.summary, **outcome.result}
        duration = time.monotonic() - started
        self.service.finish(
            run_id,
            step.id,
            ok=True,
            target=target.key,
            duration_s=duration,
            result=result,
            execution=_finished(True, result, noted, duration),
        )
        return None  # progress is shown by _await_targets

    def _record(self, run_id: str, outcome: Outcome) -> None:
        for key, value in outcome.facts.items():
            if key.startswith(guid_fact("")):  # a ServerGuid is a one-time password: never kept whole
                value = guid_at_rest(str(value))
            self.service.record_fact(run_id, key, value)

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
                    audit.record(
                        self.service.store,
                        run_id,
                        "bot",
                        "probe.failed",
                        step_id=step_id,
                        target=key or None,
                        detail={"error": why},
                    )
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


def _finished(ok: bool, output: Any, noted: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """The ``execution.finished`` audit detail: status, error, digest of the output and the remote operations."""
    detail: dict[str, Any] = {
        "ok": ok,
        "exit_status": 0 if ok else 1,  # of the step: 0 done, 1 failed (each operation has its own below)
        "output_sha256": output_digest(output if ok else str(output)),
        "duration_s": round(duration_s, 3),
        "operations": list(noted),
    }
    if not ok:
        detail["error"] = str(output)
        detail["error_kind"] = type(output).__name__
    return detail
