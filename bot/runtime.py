"""The bot's runtime: wires the store, service, worker, presenter, reminders and the bolt App into one Runtime."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_bolt import App
from slack_sdk import WebClient

from actions.winrm import WinRMExecutor
from bot import config as cfg
from bot.app import build_app, web_client
from bot.config import Config
from bot.engine import RunEngine
from bot.engine.fanout import from_worker, kicks
from bot.errors import ConfigError, ExecutionError
from bot.hub import ChangeHub
from bot.listeners.common import BotContext, GroupDirectory
from bot.presenter import Presenter, StatusRefresher
from bot.readiness.watch import ReadinessWatch
from bot.reporting import ReportPoster
from bot.runs.service import RunService
from bot.runs.worker import Worker
from bot.scheduling import Reminders
from bot.store.db import Store

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything one bot process runs on."""

    config: Config
    store: Store
    client: WebClient
    engine: RunEngine
    context: BotContext
    app: App
    executor: WinRMExecutor
    reminders: Reminders
    readiness: ReadinessWatch
    reports: ReportPoster
    refresher: StatusRefresher
    signing_secret: str = ""  # empty in Socket Mode, where Slack does not sign deliveries

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
) -> Runtime:
    """Wire the bot's parts. Secrets and the Slack URL default to the environment."""
    token = token if token is not None else cfg.secret("SLACK_BOT_TOKEN")
    signing_secret = signing_secret if signing_secret is not None else cfg.secret("SLACK_SIGNING_SECRET")
    api_url = api_url if api_url is not None else cfg.env("SLACK_API_URL")
    if not signing_secret and not socket_mode:  # before anything is opened: a clear error, exit 2
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
    hub.subscribe(presenter.sync)
    hub.subscribe(lambda run_id, what: reminders.refresh(run_id))  # remind about the step now waiting
    hub.subscribe(lambda run_id, what: reports.after_change(run_id))  # a run that just ended gets its report
    worker = Worker(service, executor, notify=from_worker(hub.publish))
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
        app = build_app(ctx, token=token, signing_secret=signing_secret, socket_mode=socket_mode)
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
    )
