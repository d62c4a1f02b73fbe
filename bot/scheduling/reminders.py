"""Reminders, escalations and wait-step nudges for steps that wait on people, scheduled with APScheduler 3.x."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import SQLAlchemyError

from bot.blocks.cards import duration, waiting_on
from bot.errors import UsageError
from bot.presenter import Presenter
from bot.runs.machine import RunState, StepState
from bot.runs.rules import mentions, waits_on_people
from bot.runs.service import RunService
from bot.runs.snapshot import RunView, StepView
from bot.scheduling.jobs import JOBS, Nag, _bind, _bound, _registry, _registry_lock, job_id, run_of
from bot.store import deliveries
from bot.store.db import as_utc, utcnow
from bot.store.locks import lease_for

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- what a step waits on


def waiting_since(sv: StepView) -> datetime:
    """When the step started waiting: its post, or its last change (approved, failed, found unknown, asked again)."""
    if sv.state == StepState.AWAITING_APPROVAL and sv.row.attempt == 0 and sv.row.posted_at is not None:
        return as_utc(sv.row.posted_at)
    return as_utc(sv.row.updated_at)


def waited_for(title: str) -> str:
    """``Wait for mirroring to complete`` -> ``mirroring to complete``."""
    text = title.strip().rstrip(".")
    if text.lower().startswith("wait for "):
        return text[len("wait for ") :]
    return f"“{text}”"


def reminder_text(number: int, sv: StepView, waited: timedelta, people: list[str]) -> str:
    who = " ".join(people) or "(no approvers are configured)"
    return (
        f"⏰ Reminder {number}: step *{sv.step.id}* ({sv.step.title}) has waited {duration(waited.total_seconds())} "
        f"for {waiting_on(sv)}. {who}"
    )


def escalation_text(view: RunView, sv: StepView, waited: timedelta, reminders: int, people: list[str]) -> str:
    who = " ".join(people) or "(no approvers are configured)"
    return (
        f"📣 *{view.run.id} needs attention*: step *{sv.step.id}* ({sv.step.title}) has waited "
        f"{duration(waited.total_seconds())} for {waiting_on(sv)}; {reminders} reminders in the thread went "
        f"unanswered. {who}"
    )


def nudge_text(sv: StepView, waited: timedelta) -> str:
    return (
        f"⏳ Step *{sv.step.id}*: still waiting for {waited_for(sv.step.title)}? Press *Done* on the step when it "
        f"has. Waiting {duration(waited.total_seconds())} so far."
    )


# ---------------------------------------------------------------------------- the scheduler


class Reminders:
    """Reminds, escalates and nudges about steps that wait on people. Every replica schedules; one sends.

    Jobs live in memory only: nothing pickled is ever read back from the database (a row written
    there must never become code run by the bot). The replica holding the lease runs them and
    rebuilds them from run state when it takes the lead and at every lease check; each job's next
    time comes from the step's waiting time and the audit log's last reminder, so a new leader
    neither repeats a reminder nor forgets one. ``clock`` gives "now" for texts and ``tick``; with
    ``autorun=False`` nothing fires by itself and tests drive time with ``tick(now)``.
    """

    def __init__(
        self,
        service: RunService,
        presenter: Presenter,
        *,
        clock: Callable[[], datetime] = utcnow,
        lease_interval_s: float = 5.0,
        autorun: bool = True,
    ) -> None:
        self.service = service
        self.store = service.store
        self.presenter = presenter
        self.settings = service.config.slack
        self.clock = clock
        self.lease_interval_s = lease_interval_s
        self.autorun = autorun
        self.jobstore = MemoryJobStore()
        self.scheduler = BackgroundScheduler(
            jobstores={"default": self.jobstore},
            executors={"default": ThreadPoolExecutor(2, pool_kwargs={"initializer": _bind, "initargs": (self,)})},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        self.lease = lease_for(self.store)
        self._leading = False
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_leader(self) -> bool:
        """True while this replica holds the lease and its scheduler sends reminders."""
        return self._leading

    def start(self) -> Reminders:
        """Open the job store, try to lead, and keep trying (or keep the lease) on a small thread."""
        self.scheduler.start(paused=True)
        self._try_lead()
        self._thread = threading.Thread(target=self._keep_lease, name="reminders-lease", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(10.0, self.lease_interval_s * 2))
        with self._state:
            self._step_down()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.lease.release()

    def _try_lead(self) -> None:
        if not self.lease.acquire():
            return
        with self._state:
            if self._stop.is_set():
                return
            self._leading = True
            with _registry_lock:
                _registry[str(self.store.engine.url)] = self
            if self.autorun:
                self.scheduler.resume()
        log.info("this replica now sends the reminders")
        self.sweep()

    def _step_down(self) -> None:
        if not self._leading:
            return
        self._leading = False
        with _registry_lock:
            key = str(self.store.engine.url)
            if _registry.get(key) is self:
                del _registry[key]
        if self.scheduler.running:
            self.scheduler.pause()

    def _keep_lease(self) -> None:
        while not self._stop.wait(self.lease_interval_s):
            try:
                if not self._leading:
                    self._try_lead()
                elif not self.lease.held():
                    with self._state:
                        self._step_down()
                    log.warning("lost the scheduler lock; another replica may send the reminders now")
                else:
                    self.sweep()
                    self.forget_old_deliveries()
                    self.scheduler.wakeup()  # jobs other replicas added may be due earlier than we knew
            except SQLAlchemyError as exc:
                log.warning("reminders: database unavailable (%s); trying again", exc)
            except Exception:  # the lease thread must outlive any one bad run, or leadership is never checked
                log.exception("reminders: keeping the scheduler lock failed; trying again")

    # ------------------------------------------------------------------ scheduling

    def refresh(self, run_id: str) -> None:
        """(Re)schedule the reminders of ``run_id``'s current step; remove every other job of the run."""
        if not self.scheduler.running:
            return
        try:
            self._refresh(run_id)
        except SQLAlchemyError as exc:
            log.warning("could not reschedule the reminders of %s: %s", run_id, exc)

    def _refresh(self, run_id: str) -> None:
        try:
            view: RunView | None = self.service.view(run_id)
        except UsageError:
            view = None  # no such run (any more)
        wanted = self._wanted(view) if view is not None else None
        for job in self.scheduler.get_jobs():
            if run_of(job) == run_id and (wanted is None or job.id != wanted[0]):
                self._remove(job.id)
        if wanted is None or self.scheduler.get_job(wanted[0]) is not None:
            return  # nothing to wait for, or already scheduled: keep its next run time
        jid, kind, sv, every = wanted
        first = self._next_due(run_id, sv, every)
        self.scheduler.add_job(
            JOBS[kind],
            IntervalTrigger(seconds=every.total_seconds(), start_date=first, timezone=UTC),
            args=(run_id, sv.step.id, sv.row.attempt),
            id=jid,
            name=f"{kind} {run_id} {sv.step.id}",
            replace_existing=True,
            next_run_time=first,
        )

    def _wanted(self, view: RunView) -> tuple[str, str, StepView, timedelta] | None:
        sv = view.current
        if view.run.state != RunState.ACTIVE or sv is None or not waits_on_people(sv):
            return None
        if sv.step.is_wait:  # a long wait (kind wait, or a step marked waits): nudges, no escalation
            kind, every = "nudge", timedelta(minutes=self.settings.wait_nudge_minutes)
        else:
            kind, every = "remind", timedelta(minutes=self.settings.remind_after_minutes)
        return job_id(kind, view.run.id, sv.step.id, sv.row.attempt), kind, sv, every

    def _next_due(self, run_id: str, sv: StepView, every: timedelta) -> datetime:
        """The job's next time: on the step's grid (waiting since + n x every), after its last reminder or nudge.

        The audit log says how long the step had waited when each was sent, so a new leader (or a
        restarted bot) neither repeats one nor skips one.
        """
        sent = self.service.notices_sent(run_id, sv.step.id, [str(n) for n in Nag])
        waited = [float(d.get("waited_s", 0)) for d in sent if d.get("attempt") == sv.row.attempt]
        first = waiting_since(sv) + every
        if not waited:
            return first
        last = waiting_since(sv) + timedelta(seconds=max(waited))
        return first + every * (max(0, (last - first) // every) + 1)

    def _remove(self, jid: str) -> None:
        try:
            self.scheduler.remove_job(jid)
        except JobLookupError:
            pass  # another replica removed it first

    def sweep(self) -> None:
        """Drop jobs of runs that are finished or gone; make sure the active run's current step has its job."""
        run_ids = {run_of(job) for job in self.scheduler.get_jobs()}
        active = self.service.active_run()
        if active is not None:
            run_ids.add(active.id)
        for run_id in sorted(run_ids):
            self.refresh(run_id)

    def forget_old_deliveries(self, now: datetime | None = None) -> int:
        """Retention of ``processed_deliveries`` (bot/store/deliveries.py)."""
        return deliveries.forget_old(self.store, now)

    def tick(self, now: datetime | None = None) -> list[str]:
        """Run every job due at ``now`` (default: the clock) once, as the scheduler would; what was sent."""
        if not self._leading:
            return []  # the leader runs the jobs; touching their times here would shift its schedule
        now = now or self.clock()
        sent: list[str] = []
        for job in self.scheduler.get_jobs():
            due = job.next_run_time
            if due is None or due > now:
                continue
            upcoming = due
            while upcoming is not None and upcoming <= now:  # missed runs coalesce into one
                upcoming = job.trigger.get_next_fire_time(upcoming, now)
            try:
                self.scheduler.modify_job(job.id, next_run_time=upcoming)
            except JobLookupError:
                continue  # removed meanwhile: its step moved on
            previous = getattr(_bound, "reminders", None)
            _bind(self)
            try:
                what = job.func(*job.args)
            finally:
                _bind(previous)
            if what:
                sent.append(what)
        return sent

    # ------------------------------------------------------------------ sending

    def fire(self, kind: str, run_id: str, step_id: str, attempt: int) -> str | None:
        """Send what a job stands for, if its step still waits on people; the audit event name, or None."""
        try:
            view = self.service.view(run_id)
        except UsageError:
            self.refresh(run_id)
            return None
        sv = view.current
        if (
            view.run.state != RunState.ACTIVE
            or sv is None
            or sv.step.id != step_id
            or sv.row.attempt != attempt
            or not waits_on_people(sv)
        ):
            log.info("%s: the step has moved on; nothing to send", job_id(kind, run_id, step_id, attempt))
            self.refresh(run_id)
            return None
        if not view.run.channel or not view.run.thread_ts:
            return None  # no thread yet to remind in
        if not self._leading or not self.lease.held():
            with self._state:
                self._step_down()
            log.warning("not the scheduler leader; %s is left to the leader", job_id(kind, run_id, step_id, attempt))
            return None
        waited = self.clock() - waiting_since(sv)
        people = mentions(self.settings, view, sv, groups=False)
        if kind == "nudge":
            number = self.sent(run_id, step_id, attempt, Nag.NUDGE) + 1
            return self._send(view, sv, Nag.NUDGE, nudge_text(sv, waited), number, waited, [], broadcast=False)
        reminded = self.sent(run_id, step_id, attempt, Nag.REMINDER)
        if reminded >= self.settings.escalate_after_reminders and not self.sent(
            run_id, step_id, attempt, Nag.ESCALATION
        ):
            everyone = mentions(self.settings, view, sv)  # the groups too, at escalation only
            text = escalation_text(view, sv, waited, reminded, everyone)
            return self._send(view, sv, Nag.ESCALATION, text, 1, waited, everyone, broadcast=True)
        text = reminder_text(reminded + 1, sv, waited, people)
        return self._send(view, sv, Nag.REMINDER, text, reminded + 1, waited, people, broadcast=False)

    def _send(
        self,
        view: RunView,
        sv: StepView,
        what: Nag,
        text: str,
        number: int,
        waited: timedelta,
        people: list[str],
        *,
        broadcast: bool,
    ) -> str | None:
        try:
            self.presenter.post(view.run.channel, text, thread_ts=view.run.thread_ts, broadcast=broadcast)
        except SlackApiError as exc:
            log.warning("Slack refused the %s for %s %s: %s", what, view.run.id, sv.step.id, exc.response.get("error"))
            return None
        self.service.record_notice(
            view.run.id,
            sv.step.id,
            str(what),
            {
                "attempt": sv.row.attempt,
                "number": number,
                "waited_s": round(waited.total_seconds()),
                "state": sv.state,
                "mentions": people,
            },
        )
        return str(what)

    def sent(self, run_id: str, step_id: str, attempt: int, what: Nag) -> int:
        """How many of ``what`` were sent for this attempt of the step, from the audit log (survives restarts)."""
        return sum(1 for d in self.service.notices_sent(run_id, step_id, [str(what)]) if d.get("attempt") == attempt)
