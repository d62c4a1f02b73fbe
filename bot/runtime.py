"""The bot's runtime: wires the store, service, worker, presenter, reminders and the bolt App into one Runtime.

A process has one of three roles: ``single`` (everything in one process: tests, the demo), ``web``
(verifies, records and acknowledges Slack's requests; its changes leave through the hub to the worker
process) or ``worker`` (executes runs, posts and updates the thread, reminds, watches readiness).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from slack_bolt import App
from slack_sdk import WebClient

from actions.winrm import WinRMExecutor
from bot import config as cfg
from bot.app import build_app, web_client
from bot.config import Config
from bot.engine import RunEngine
from bot.engine.fanout import from_worker, kicks
from bot.errors import ConfigError, ExecutionError
from bot.hub import KICK, ChangeHub
from bot.listeners.common import BotContext, GroupDirectory
from bot.presenter import Presenter, StatusRefresher
from bot.readiness.watch import ReadinessWatch
from bot.reporting import ReportPoster
from bot.runs.service import RunService
from bot.runs.worker import Worker
from bot.scheduling import Reminders
from bot.store.db import Store

log = logging.getLogger(__name__)

Role = Literal["single", "web", "worker"]
ROLES: tuple[Role, ...] = ("single", "web", "worker")


class ForwardingWorker(Worker):
    """The web process's Worker: it never executes; a kick is published on the hub, which carries it to the
    worker process. It still reads from hosts for people who asked (one-time passwords), like ``check``.
    """

    def __init__(self, service: RunService, executor: WinRMExecutor, hub: ChangeHub) -> None:
        super().__init__(service, executor, notify=hub.publish)
        self._hub = hub

    def kick(self, run_id: str) -> None:  # type: ignore[override]
        self._hub.publish(run_id, KICK)

    def recover(self) -> list[str]:
        raise RuntimeError("the web process does not recover runs: the worker process does")


@dataclass
class Runtime:
    """Everything one bot process runs on."""

    config: Config
    store: Store
    client: WebClient
    engine: RunEngine
    context: BotContext
    app: App | None  # None in the worker process: it answers no Slack request
    executor: WinRMExecutor
    reminders: Reminders
    readiness: ReadinessWatch
    reports: ReportPoster
    refresher: StatusRefresher
    signing_secret: str = ""  # empty in Socket Mode, where Slack does not sign deliveries
    hub: ChangeHub | None = None
    role: Role = "single"

    def close(self) -> None:
        self.context.close()  # finish what people already clicked; drop pending reads
        self.refresher.close()
        self.readiness.close()
        self.reminders.close()
        if self.engine.worker is not None:
            self.engine.worker.close()
        self.reports.close()  # after the worker: a run it just finished still gets its report
        self.executor.close()
        if self.engine.read_executor is not None:
            self.engine.read_executor.close()
        self.store.dispose()


def build_runtime(
    config: Config,
    *,
    store: Store | None = None,
    token: str | None = None,
    signing_secret: str | None = None,
    api_url: str | None = None,
    post_interval_s: float | None = None,
    socket_mode: bool = False,
    role: Role = "single",
) -> Runtime:
    """Wire the bot's parts for a process of ``role``. Secrets and the Slack URL default to the environment.

    In the web role the hub has no local subscriber (``serve`` adds the link to the worker process); in
    the worker role no bolt App is built and the signing secret is not needed.
    """
    token = token if token is not None else cfg.secret("SLACK_BOT_TOKEN")
    signing_secret = signing_secret if signing_secret is not None else cfg.secret("SLACK_SIGNING_SECRET")
    api_url = api_url if api_url is not None else cfg.env("SLACK_API_URL")
    if not signing_secret and not socket_mode and role != "worker":  # before anything is opened: a clear error, exit 2
        raise ConfigError(config.path, "environment", "SLACK_SIGNING_SECRET is not set (needed to serve HTTP)")
    config.check_slack_api_url(api_url)  # plain http to a non-loopback Slack: ConfigError unless allowed
    own_store = store is None
    store = store or Store(cfg.db_url())
    store.audit_keys.use(*config.audit_keys())  # the audit chain's MAC keys come from the environment
    problem = config.audit_key_problem()
    if problem:
        log.warning("the audit log is not keyed: %s; anyone who can write the database can rewrite it", problem)
    client = web_client(token, api_url)
    groups = GroupDirectory(client, config.slack.group_cache_s)
    service = RunService(store, config, group_members=groups.members)
    executor = WinRMExecutor()
    interval = config.slack.post_interval_s if post_interval_s is None else post_interval_s
    presenter = Presenter(service, client, post_interval_s=interval)
    reminders = Reminders(service, presenter)
    # Its own executor: readiness probes never queue behind (or hold up) a run's step on a host.
    readiness = ReadinessWatch(service, presenter, is_leader=lambda: reminders.is_leader)
    reports = ReportPoster(service, client)

    # The one fan-out of a change: the thread, the reminders, the report, and the worker (but for its own news).
    hub = ChangeHub()
    if role != "web":  # the web process shows, reminds, reports and executes nothing itself: the worker process does
        hub.subscribe(presenter.sync)
        hub.subscribe(lambda run_id, what: reminders.refresh(run_id))  # remind about the step now waiting
        hub.subscribe(lambda run_id, what: reports.after_change(run_id))  # a run that just ended gets its report
    worker: Worker = (
        ForwardingWorker(service, executor, hub)
        if role == "web"
        else Worker(service, executor, notify=from_worker(hub.publish))
    )
    if role != "web":
        hub.subscribe(kicks(worker))  # last: the thread shows the change before the worker acts on it
    engine = RunEngine(
        config=config,
        store=store,
        service=service,
        publish=hub.publish,
        worker=worker,
        presenter=presenter,
        client=client,
        readiness=readiness,
        reports=reports,
        read_executor=WinRMExecutor(),  # /failover check's own connections: never a step's host lock
    )
    ctx = BotContext(engine=engine, client=client)
    try:
        app = (
            None
            if role == "worker"
            else build_app(ctx, token=token, signing_secret=signing_secret, socket_mode=socket_mode)
        )
    except (ConfigError, ExecutionError):
        readiness.close()
        executor.close()
        if own_store:
            store.dispose()
        raise
    return Runtime(
        config=config,
        store=store,
        client=client,
        engine=engine,
        context=ctx,
        app=app,
        executor=executor,
        reminders=reminders,
        readiness=readiness,
        reports=reports,
        signing_secret=signing_secret,
        refresher=StatusRefresher(presenter, leads=lambda: reminders.is_leader),
        hub=hub,
        role=role,
    )


def start_up(runtime: Runtime) -> None:
    """Reconcile runs left unfinished by a previous process, bring their threads up to date, start reminders."""
    for line in runtime.engine.start_up():  # recovery, then the active run's change on the hub
        log.info("recovery: %s", line)
    runtime.reminders.start()  # sends only on the replica holding the scheduler lock
    runtime.readiness.start()  # rounds run only on that replica too
    runtime.refresher.start()  # the active run's status card stays true (paced, one update a minute)
