"""Builds the bolt App and the bot's runtime (store, service, worker, presenter); never at import time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from actions.winrm import WinRMExecutor
from bot import config as cfg
from bot.config import Config
from bot.errors import ConfigError, ExecutionError
from bot.hub import ChangeHub
from bot.listeners import actions, commands, home, views
from bot.listeners.common import BotContext, GroupDirectory
from bot.presenter import Presenter, StatusRefresher
from bot.readiness.watch import ReadinessWatch
from bot.reporting import ReportPoster
from bot.runs.service import RunService
from bot.runs.worker import Worker
from bot.scheduling import Reminders
from bot.store.db import Store

log = logging.getLogger(__name__)


def web_client(token: str, base_url: str | None = None) -> WebClient:
    """A Web API client that honours Retry-After on HTTP 429."""
    kwargs: dict[str, Any] = {"token": token, "retry_handlers": [RateLimitErrorRetryHandler(max_retry_count=3)]}
    if base_url:
        kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
    return WebClient(**kwargs)


@dataclass
class Runtime:
    """Everything one bot process runs on."""

    config: Config
    store: Store
    client: WebClient
    context: BotContext
    app: App
    executor: WinRMExecutor
    reminders: Reminders
    readiness: ReadinessWatch
    reports: ReportPoster
    refresher: StatusRefresher
    signing_secret: str = ""  # empty in Socket Mode, where Slack does not sign deliveries

    def close(self) -> None:
        self.context.reads.shutdown(wait=False, cancel_futures=True)  # read-only: not worth waiting for
        self.context.work.shutdown(wait=True)  # finish what people already clicked
        self.refresher.close()
        self.readiness.close()
        self.reminders.close()
        self.context.worker.close()
        self.reports.close()  # after the worker: a run it just finished still gets its report
        self.executor.close()
        if self.context.read_executor is not None:
            self.context.read_executor.close()
        self.store.dispose()


def build_app(ctx: BotContext, *, token: str, signing_secret: str, socket_mode: bool = False) -> App:
    """The bolt App. Over HTTP every request must carry a valid signature (no secret: ConfigError);
    in Socket Mode deliveries arrive over the app-token's websocket and carry none. The bot token is
    checked with Slack (auth.test) before the bot serves anything.
    """
    if not signing_secret and not socket_mode:
        raise ConfigError(ctx.config.path, "environment", "SLACK_SIGNING_SECRET is not set (needed to serve HTTP)")
    if not token:
        raise ConfigError(ctx.config.path, "environment", "SLACK_BOT_TOKEN is not set")
    # Listeners only acknowledge and queue their work (BotContext.background), so they may run on the
    # request thread itself: the response leaves as soon as the listener returns, without the polling
    # wait bolt's default mode spends on every request (about 10 ms each).
    try:
        app = App(
            signing_secret=signing_secret or None,
            client=ctx.client,
            request_verification_enabled=not socket_mode,
            process_before_response=True,
        )
    except BoltError as exc:  # auth.test refused the token
        raise ConfigError(ctx.config.path, "environment", f"Slack did not accept SLACK_BOT_TOKEN: {exc}") from None
    except OSError as exc:  # Slack's API did not answer auth.test
        raise ExecutionError(f"cannot reach Slack's API to check SLACK_BOT_TOKEN: {exc}") from None

    commands.register(app, ctx)
    actions.register(app, ctx)
    home.register(app, ctx)
    views.register(app, ctx)

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("unhandled error for a %s request: %s", body.get("type") or body.get("command"), error)

    return app


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

    hub = ChangeHub()
    hub.subscribe(presenter.sync)
    hub.subscribe(lambda run_id, what: reminders.refresh(run_id))  # remind about the step now waiting
    hub.subscribe(lambda run_id, what: reports.after_change(run_id))  # a run that just ended gets its report

    worker = Worker(service, executor, notify=hub.publish)
    ctx = BotContext(
        config=config,
        store=store,
        service=service,
        worker=worker,
        presenter=presenter,
        client=client,
        groups=groups,
        on_change=hub.publish,
        readiness=readiness,
        reports=reports,
        read_executor=WinRMExecutor(),  # /failover check's own connections: never a step's host lock
    )
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
        context=ctx,
        app=app,
        executor=executor,
        reminders=reminders,
        readiness=readiness,
        reports=reports,
        signing_secret=signing_secret,
        refresher=StatusRefresher(presenter, leads=lambda: reminders.is_leader),
    )
