"""Readiness rounds: probe every site read-only, store the results, announce changes; one loop on the leader."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from actions import remote
from actions.preflight import CheckResult, probe_database, probe_host
from actions.winrm import WinRMExecutor
from bot.readiness.evaluate import FAIL, PASS, SPLIT_BRAIN, Finding, Roles, judge, server_guid
from bot.readiness.messages import Problem, RoundReport, results_text, round_text, split_brain_text
from bot.runs.machine import RunState
from bot.runs.service import RunService
from bot.store.db import as_utc, changed_rows, utcnow
from bot.store.models import ReadinessProblem, ReadinessResult, ReadinessRound, Run

log = logging.getLogger(__name__)


class Poster(Protocol):
    """Whoever posts a message in Slack for the watch (the presenter, paced per channel)."""

    def post(self, channel: str, text: str, blocks: Any = None, thread_ts: str | None = None) -> str: ...


KEEP = timedelta(days=14)  # rounds (and their results) older than this are deleted after each round


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


class ReadinessWatch:
    """Runs readiness rounds (never two at once in a process) and, on the scheduler leader, every ``interval_s``.

    Probes use their own WinRM executor (own connections, own per-host locks: a run's step never waits
    behind a readiness probe) and read the bot's database through read-only sessions. The schedule is
    no job state: the next round is due ``interval_s`` after the newest stored round, whoever ran it.
    """

    def __init__(
        self,
        service: RunService,
        presenter: Poster | None,
        *,
        executor: remote.Executor | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = utcnow,
        poll_s: float = 1.0,
    ) -> None:
        self.service = service
        self.store = service.store
        self.config = service.config
        self.presenter = presenter
        self._own_executor = executor is None
        self.executor: remote.Executor = executor or WinRMExecutor()
        self.is_leader = is_leader
        self.clock = clock
        self.poll_s = poll_s
        self._running = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = clock()  # with no stored round yet, the first is due one interval after this

    # ------------------------------------------------------------------ the loop

    def start(self) -> ReadinessWatch:
        self._since = self.clock()
        if self.config.readiness.interval_s and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="readiness", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._running:
            if self._own_executor and isinstance(self.executor, WinRMExecutor):
                self.executor.close()

    def _loop(self) -> None:
        poll = min(self.poll_s, float(self.config.readiness.interval_s))
        while not self._stop.wait(poll):
            try:
                if self.is_leader() and self.due():
                    self.run_round()
            except SQLAlchemyError as exc:
                log.warning("readiness: database unavailable (%s); trying again", exc)
            except Exception:  # the loop must outlive one bad round, or readiness silently stops
                log.exception("readiness: a round failed; trying again at the next interval")

    def due(self, now: datetime | None = None) -> bool:
        """True when no round started within ``interval_s`` (any replica's round counts; before any, our start)."""
        interval = self.config.readiness.interval_s
        if not interval:
            return False
        with self.store.read_session() as s:
            last = s.scalar(sa.select(sa.func.max(ReadinessRound.started_at)))
        since = self._since if last is None else as_utc(last)
        return since + timedelta(seconds=interval) <= (now or self.clock())

    # ------------------------------------------------------------------ one round

    def run_round(self) -> RoundReport | None:
        """Probe, judge, store and announce once; None if a round is already running in this process."""
        if not self._running.acquire(blocking=False):
            return None
        try:
            return self._round()
        finally:
            self._running.release()

    def _round(self) -> RoundReport:
        started = self.clock()
        with self.store.session() as s:
            rnd = ReadinessRound(started_at=started, runner=runner_name(), problems=0)
            s.add(rnd)
            s.flush()
            round_id = rnd.id
        active = self.service.active_run()
        roles = self.expected_roles()
        findings = judge(
            self.config, self.probe(), roles, self.changing_hosts(active), self.identities(self.settled_at())
        )
        now = self.clock()
        with self.store.session() as s:
            s.add_all(
                ReadinessResult(
                    round_id=round_id, host=f.host, check=f.check, outcome=f.outcome, detail=f.detail, at=now
                )
                for f in findings
            )
            s.execute(
                sa.update(ReadinessRound)
                .where(ReadinessRound.id == round_id)
                .values(finished_at=now, problems=sum(1 for f in findings if f.failed))
            )
        self._prune(now - KEEP)
        report = RoundReport(round_id, started, now, runner_name(), findings)
        if self.presenter is not None and self.config.readiness_channel:
            report.announced = self._announce(findings, now, active)
        report.problems = self.open_problems()
        return report

    def _prune(self, before: datetime) -> None:
        """Forget rounds older than ``before``: results are for "what is it like now", the audit log is elsewhere."""
        with self.store.session() as s:
            old = sa.select(ReadinessRound.id).where(ReadinessRound.started_at < before).scalar_subquery()
            s.execute(sa.delete(ReadinessResult).where(ReadinessResult.round_id.in_(old)))
            s.execute(sa.delete(ReadinessRound).where(ReadinessRound.started_at < before))

    def probe(self) -> list[CheckResult]:
        """Every host of every site and each site's StoragePlatform database, read-only, in parallel."""
        hosts = self.config.hosts()
        with ThreadPoolExecutor(max_workers=min(128, len(hosts) + len(self.config.sites))) as pool:
            dbs = [pool.submit(probe_database, self.config, site) for site in self.config.sites]
            futures = [pool.submit(probe_host, self.config, self.executor, h) for h in hosts]
            results = [r for f in futures for r in f.result()]
            return results + [f.result() for f in dbs]

    def expected_roles(self) -> Roles:
        """The AccountServer roles the last completed run that moved them left; the configuration's before any."""
        with self.store.read_session() as s:
            run = s.scalars(
                sa.select(Run)
                .where(
                    Run.platform == self.config.platform,
                    Run.state == RunState.COMPLETED,
                    Run.scope.in_(("all", "account")),
                )
                .order_by(Run.finished_at.desc())
                .limit(1)
            ).first()
        if run is None:
            primary = self.config.sites[self.config.primary_site]
            partner = self.config.sites[primary.partner]
            return Roles(primary.account_server.name, partner.account_server.name, "the configuration (no run yet)")
        p, s_ = self.config.sites[run.site], self.config.sites[run.partner]
        because = f"the last completed run {run.id} ({run.direction} of {run.site})"
        if run.direction == "failover":
            return Roles(s_.account_server.name, None, because)
        return Roles(p.account_server.name, s_.account_server.name, because)

    def settled_at(self) -> datetime | None:
        """When the last completed run (of any scope) finished: hosts answer as it left them from then on."""
        with self.store.read_session() as s:
            last = s.scalar(
                sa.select(sa.func.max(Run.finished_at)).where(
                    Run.platform == self.config.platform, Run.state == RunState.COMPLETED
                )
            )
        return as_utc(last) if last is not None else None

    def identities(self, since: datetime | None) -> dict[str, str]:
        """Host -> the (masked) ServerGuid it first answered with at or after ``since``, from stored results."""
        with self.store.read_session() as s:
            first = (
                sa.select(sa.func.min(ReadinessResult.id))
                .where(ReadinessResult.check == "Settings.xml", ReadinessResult.outcome == PASS)
                .group_by(ReadinessResult.host)
            )
            if since is not None:
                first = first.where(ReadinessResult.at >= since)
            rows = s.execute(
                sa.select(ReadinessResult.host, ReadinessResult.detail).where(ReadinessResult.id.in_(first))
            ).all()
        out = {}
        for host, detail in rows:
            guid = server_guid(detail)
            if guid is not None:
                out[host] = guid
        return out

    def changing_hosts(self, active: Run | None) -> list[str]:
        """Hosts the active run changes (its host steps that are not read-only); none without a run."""
        if active is None:
            return []
        plan = self.service.plan_of(active)
        return sorted(
            {
                t.host
                for step in plan.steps
                if step.kind == "host" and step.risk != "read"
                for t in step.targets
                if t.host
            }
        )

    # ------------------------------------------------------------------ announcing changes, not states

    def _announce(self, findings: list[Finding], now: datetime, active: Run | None) -> list[str]:
        repeat = timedelta(hours=self.config.readiness.repeat_hours)
        new: list[tuple[Finding, datetime]] = []
        again: list[tuple[Finding, datetime]] = []
        for f in findings:
            if not f.failed:
                continue
            claimed = self._claim(f, now, repeat)
            if claimed is not None:
                (new if claimed[0] else again).append((f, claimed[1]))
        passing = {f.key: f for f in findings if f.outcome == PASS}
        recovered: list[tuple[Finding, Problem]] = []
        for key, problem in self._open().items():
            if key in passing:
                with self.store.session() as s:
                    if changed_rows(s, sa.delete(ReadinessProblem).where(ReadinessProblem.key == key)) == 1:
                        recovered.append((passing[key], problem))
        texts: list[str] = []
        channel = self.config.readiness_channel
        assert channel is not None and self.presenter is not None
        brain = [(f, since) for f, since in new + again if f.check == SPLIT_BRAIN]
        for f, since in brain:
            text = split_brain_text(f, since)
            if self._post(channel, text, [f.key]):
                texts.append(text)
            if active is not None and active.channel and active.thread_ts:
                try:
                    self.presenter.post(active.channel, text, thread_ts=active.thread_ts)
                except SlackApiError as exc:
                    log.warning("Slack refused the split-brain alert in %s: %s", active.id, exc.response.get("error"))
        others_new = [(f, since) for f, since in new if f.check != SPLIT_BRAIN]
        others_again = [(f, since) for f, since in again if f.check != SPLIT_BRAIN]
        if others_new or others_again or recovered:
            text = round_text(others_new, others_again, recovered, now, self.config.readiness.repeat_hours)
            if self._post(channel, text, [f.key for f, _ in others_new + others_again]):
                texts.append(text)
        return texts

    def _claim(self, f: Finding, now: datetime, repeat: timedelta) -> tuple[bool, datetime] | None:
        """(True, since) for a new problem, (False, since) when due again; None when announced recently."""
        try:
            with self.store.session() as s:
                s.add(
                    ReadinessProblem(
                        key=f.key, host=f.host, check=f.check, detail=f.detail, since=now, announced_at=now
                    )
                )
            return True, now
        except IntegrityError:  # already open (an earlier round, or another replica, inserted it)
            return self._claim_again(f, now, repeat)

    def _claim_again(self, f: Finding, now: datetime, repeat: timedelta) -> tuple[bool, datetime] | None:
        """(False, since) when an open problem is due to be announced again; None when announced recently."""
        with self.store.session() as s:
            row = s.get(ReadinessProblem, f.key)
            if row is None:
                return None  # recovered by another round meanwhile
            since, last = as_utc(row.since), row.announced_at
            if last is not None and as_utc(last) + repeat > now:
                return None
            moved = changed_rows(
                s,
                sa.update(ReadinessProblem)
                .where(ReadinessProblem.key == f.key, ReadinessProblem.announced_at == last)
                .values(announced_at=now, detail=f.detail),
            )
        return (False, since) if moved == 1 else None

    def _post(self, channel: str, text: str, keys: list[str]) -> bool:
        assert self.presenter is not None
        try:
            self.presenter.post(channel, text)
            return True
        except SlackApiError as exc:
            log.warning("Slack refused a readiness announcement: %s", exc.response.get("error"))
            with self.store.session() as s:  # not announced after all: the next round tries again
                s.execute(sa.update(ReadinessProblem).where(ReadinessProblem.key.in_(keys)).values(announced_at=None))
            return False

    # ------------------------------------------------------------------ reading

    def _open(self) -> dict[str, Problem]:
        with self.store.read_session() as s:
            rows = s.scalars(sa.select(ReadinessProblem).order_by(ReadinessProblem.since)).all()
        return {r.key: Problem(r.host, r.check, r.detail, as_utc(r.since)) for r in rows}

    def open_problems(self) -> list[Problem]:
        return list(self._open().values())

    def latest(self) -> RoundReport | None:
        """The newest finished round with its results, and the open problems."""
        with self.store.read_session() as s:
            rnd = s.scalars(
                sa.select(ReadinessRound)
                .where(ReadinessRound.finished_at.is_not(None))
                .order_by(ReadinessRound.id.desc())
                .limit(1)
            ).first()
            if rnd is None:
                return None
            rows = s.scalars(
                sa.select(ReadinessResult).where(ReadinessResult.round_id == rnd.id).order_by(ReadinessResult.id)
            ).all()
            findings = [Finding(r.host, r.check, r.outcome, r.detail) for r in rows]
            report = RoundReport(
                rnd.id,
                as_utc(rnd.started_at),
                as_utc(rnd.finished_at) if rnd.finished_at else None,
                rnd.runner,
                findings,
            )
        report.problems = self.open_problems()
        return report


__all__ = ["FAIL", "Problem", "ReadinessWatch", "RoundReport", "results_text"]
