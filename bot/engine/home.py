"""What a person's App Home shows, read through the engine: the sites' readiness, the active run, recent runs."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bot.blocks.home import ActiveBox, HostLine, RecentRun, SiteBox, home_view
from bot.blocks.kit import duration
from bot.blocks.who import direction_title, waiting_on
from bot.config import SlackSettings
from bot.runs import policy
from bot.runs.machine import RunState, StepState
from bot.runs.snapshot import RunView
from bot.store.db import as_utc, utcnow
from bot.store.models import Run

if TYPE_CHECKING:
    from bot.engine.core import RunEngine

_ROLE = re.compile(r"\brole (Master|Slave)\b")  # as the check's Settings.xml detail words it


def build_home(engine: RunEngine, user: str, now: datetime) -> dict[str, Any]:
    service = engine.service
    active_run = service.active_run()
    active, for_you = None, []
    if active_run is not None:
        view = service.view(active_run.id)
        cur = view.current
        if cur is not None:
            active = ActiveBox(
                title=direction_title(view),
                link=engine.permalink(active_run.channel, active_run.thread_ts),
                step=f"{cur.step.id} {cur.step.title}",
                waiting_on=waiting_on(cur),
                since=as_utc(cur.row.posted_at or cur.row.updated_at),
                left=engine.presenter.left(view) if engine.presenter is not None else None,
            )
            if waiting_on_you(engine.config.slack, view, user, service.group_members):
                for_you.append(f"{active_run.id} step {cur.step.id} ({cur.step.title}): {waiting_on(cur)}")
    return home_view(_sites(engine), active, _recent(engine), for_you, now=now)


def waiting_on_you(
    settings: SlackSettings, view: RunView, user: str, group_members: policy.GroupMembers | None
) -> bool:
    """True when the run's current step waits on an approval (or a Retry) that ``user`` may give and has not."""
    cur = view.current
    if cur is None or view.run.state != RunState.ACTIVE or not policy.is_approver(settings, user, group_members):
        return False
    if cur.state in (StepState.FAILED, StepState.UNKNOWN):
        return True
    if cur.state != StepState.AWAITING_APPROVAL or cur.needed <= len(cur.approvers) or user in cur.approvers:
        return False
    initiator_barred = user == view.run.initiator and not settings.initiator_may_approve_destructive
    return not (cur.step.risk == "destructive" and initiator_barred)


def _sites(engine: RunEngine) -> list[SiteBox]:
    report = engine.readiness.latest() if engine.readiness is not None else None
    findings = report.findings if report is not None else []
    problems = report.problems if report is not None else []
    config = engine.config
    mirrors = {h.mirror for h in config.hosts() if h.mirror}
    boxes = []
    for site in config.sites.values():
        lines = []
        for host in [site.account_server, *site.storage_servers]:
            mine = [f for f in findings if f.host == host.name]
            if host.role == "account_server":
                read = next((_ROLE.search(f.detail) for f in mine if f.check == "Settings.xml"), None)
                role = f"{read.group(1)} AccountServer" if read else "AccountServer (role not read)"
            else:
                role = "MirrorServer" if host.name in mirrors else "StorageServer"
            failing = [f"{f.check}: {f.detail}" for f in mine if f.outcome != "pass"]
            result = "; ".join(failing) if failing else ("all checks pass" if mine else "-")
            lines.append(HostLine(host.name, role, report.started_at if report and mine else None, result))
        names = {site.account_server.name, *(h.name for h in site.storage_servers), "database"}
        open_here = [
            f"{p.host} {p.check}: {p.detail} (since {p.since:%H:%M} UTC)"
            for p in problems
            if p.host in names and (p.host != "database" or f"({site.name})" in p.check)
        ]
        boxes.append(SiteBox(site.name, lines, open_here))
    return boxes


def _recent(engine: RunEngine) -> list[RecentRun]:
    with engine.store.read_session() as s:
        runs = s.scalars(
            sa.select(Run).where(Run.platform == engine.config.platform).order_by(Run.created_at.desc()).limit(5)
        ).all()
    out = []
    for r in runs:
        end = as_utc(r.finished_at) if r.finished_at else utcnow()
        took = duration((end - as_utc(r.created_at)).total_seconds())
        arrow = f"{r.site} → {r.partner}" if r.direction == "failover" else f"{r.partner} → {r.site}"
        state = {"active": "in progress"}.get(r.state, r.state)
        out.append(RecentRun(r.id, f"{r.direction} {arrow}", state, took if r.finished_at else f"{took} so far"))
    return out
